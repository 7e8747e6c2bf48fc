"""The restore key pair: an age X25519 identity and its recipient.

Text forms are age's own, so keys move freely between s3archive and
``age``/``age-keygen``: an identity is ``AGE-SECRET-KEY-1…`` (Bech32, upper
case, 32 random bytes) and its recipient ``age1…`` (Bech32 of the X25519
public key).  An identity file is age's: ``#`` comment lines, blank lines and
one identity per line.

The paper form (:func:`paper_lines`, :func:`read_paper`) is documented in
docs/FORMAT2.md section 5.2 and in the README's "Keys" section.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from s3archive.crypto import bech32, primitives
from s3archive.crypto.errors import KeyFormatError

IDENTITY_HRP = "age-secret-key-"
RECIPIENT_HRP = "age"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
MAX_IDENTITY_FILE = 64 * 1024  # bytes; an identity file is a few lines


@dataclass(frozen=True)
class Recipient:
    """A public key files are encrypted to (``age1…``)."""

    public: bytes  # 32 bytes, X25519 u-coordinate

    def __str__(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self.public)

    @classmethod
    def parse(cls, text: str) -> Recipient:
        text = text.strip()
        if not text.lower().startswith("age1"):
            raise KeyFormatError(f"{_shown(text)} is not an age X25519 recipient (age1…)")
        try:
            hrp, data = bech32.decode(text)
        except bech32.Bech32Error as err:
            raise KeyFormatError(f"recipient {_shown(text)}: {err}") from None
        if hrp != RECIPIENT_HRP or len(data) != 32:
            raise KeyFormatError(f"{_shown(text)} is not an age X25519 recipient (age1…)")
        return cls(data)


@dataclass(frozen=True)
class Identity:
    """A private restore key.  ``repr`` never shows the secret."""

    secret: bytes  # 32 bytes

    def __repr__(self) -> str:
        return f"Identity(recipient={self.recipient()})"

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    def __str__(self) -> str:
        return bech32.encode(IDENTITY_HRP, self.secret).upper()

    def recipient(self) -> Recipient:
        public = primitives.X25519PrivateKey.from_private_bytes(self.secret).public_key()
        return Recipient(public.public_bytes_raw())

    def exchange(self, peer_public: bytes) -> bytes:
        """X25519(identity, peer) (the caller refuses an all-zero result)."""
        private = primitives.X25519PrivateKey.from_private_bytes(self.secret)
        return private.exchange(primitives.X25519PublicKey.from_public_bytes(peer_public))

    @classmethod
    def parse(cls, text: str) -> Identity:
        text = text.strip()
        if not text.upper().startswith(IDENTITY_PREFIX):
            raise KeyFormatError("not an age X25519 secret key (AGE-SECRET-KEY-1…)")
        try:
            hrp, data = bech32.decode(text)
        except bech32.Bech32Error as err:
            raise KeyFormatError(f"secret key: {err}") from None
        if hrp != IDENTITY_HRP or len(data) != 32:
            raise KeyFormatError("not an age X25519 secret key (AGE-SECRET-KEY-1…)")
        return cls(data)

    def file_text(self, now: datetime | None = None) -> str:
        """The identity file, in the layout ``age-keygen`` writes."""
        created = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (f"# created: {created}\n# public key: {self.recipient()}\n{self}\n")


def parse_identity_file(text: str, name: str = "key file") -> list[Identity]:
    """Every identity of an age identity file; errors name the file and line.

    Other identity types (``AGE-PLUGIN-…``, post-quantum keys) are refused by
    name: s3archive reads X25519 identities only."""
    identities = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.upper().startswith(IDENTITY_PREFIX):
            raise KeyFormatError(f"{name}: line {number}: not an age X25519 secret key "
                                 "(expected AGE-SECRET-KEY-1…)")
        try:
            identities.append(Identity.parse(line))
        except KeyFormatError as err:
            raise KeyFormatError(f"{name}: line {number}: {err}") from None
    if not identities:
        raise KeyFormatError(f"{name}: no secret key in it (expected a line AGE-SECRET-KEY-1…)")
    return identities


def read_identity_file(path: str | os.PathLike[str]) -> list[Identity]:
    with open(path, "rb") as stream:
        raw = stream.read(MAX_IDENTITY_FILE + 1)
    if len(raw) > MAX_IDENTITY_FILE:
        raise KeyFormatError(f"{os.fspath(path)}: larger than {MAX_IDENTITY_FILE} bytes: "
                             "not a key file")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFormatError(f"{os.fspath(path)}: not a key file (not ASCII text)") from None
    return parse_identity_file(text, os.fspath(path))


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


# --- the paper form ---------------------------------------------------------

PAPER_GROUP = 4  # characters per group
PAPER_LINE = 16  # characters per line (4 groups)
PAPER_MODULUS = 97
_PAPER_ROW = re.compile(r"^\s*(\d{1,2})\s*[:.]\s*([0-9A-Za-z ]+?)\s+(\d{2})\s*$")


def paper_check(line_number: int, chars: str) -> int:
    """The two-digit check of one paper line, computable by hand:
    (line number + Σ position × value) mod 97, positions 1…16, values from
    the Bech32 alphabet (q=0 … l=31)."""
    total = line_number
    for position, char in enumerate(chars.lower(), 1):
        total += position * bech32.CHARSET.index(char)
    return total % PAPER_MODULUS


def paper_lines(identity: Identity) -> list[str]:
    """The numbered lines of the paper copy (the part after ``AGE-SECRET-KEY-1``)."""
    body = str(identity)[len(IDENTITY_PREFIX):]
    lines = []
    for number, start in enumerate(range(0, len(body), PAPER_LINE), 1):
        chars = body[start:start + PAPER_LINE]
        groups = " ".join(chars[i:i + PAPER_GROUP] for i in range(0, len(chars), PAPER_GROUP))
        lines.append(f"{number}: {groups:<19}  {paper_check(number, chars):02d}")
    return lines


def paper_sheet(identity: Identity) -> str:
    values = " ".join(f"{c.upper()}={i}" for i, c in enumerate(bech32.CHARSET))
    return "\n".join([
        "s3archive restore key: paper copy (age X25519 identity).  KEEP OFFLINE.",
        "Without this key no encrypted backup can be restored.",
        f"Recipient (public): {identity.recipient()}",
        "",
        f"The key is {IDENTITY_PREFIX} followed by the characters below.",
        *paper_lines(identity),
        "",
        "Check a line by hand: start with the line number; add position x value",
        "for each character (positions 1-16 from the left, spaces skipped); the",
        "total mod 97 is the two digits at the end.  Values:",
        values,
        "Check a typed copy: s3archive key check FILE (FILE holds the numbered lines).",
    ]) + "\n"


@dataclass(frozen=True)
class PaperProblem:
    line: int
    message: str


def read_paper(text: str) -> tuple[Identity | None, list[PaperProblem]]:
    """Parse typed-in paper lines (or a plain identity line).

    Lines that do not start with a digit are ignored, so the whole sheet may
    be pasted; a line that starts with one must be a paper line.  Returns the identity when everything checks, else ``None`` and one
    problem per bad line, so the operator knows which line to retype."""
    problems: list[PaperProblem] = []
    rows: dict[int, str] = {}
    plain: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or line.upper() == IDENTITY_PREFIX:
            continue
        if line.upper().startswith(IDENTITY_PREFIX):
            plain.append(line)
            continue
        if not line[0].isdigit():
            continue  # the sheet's other text, pasted along
        match = _PAPER_ROW.match(line)
        if match is None:
            problems.append(PaperProblem(number, "not a paper line "
                                         "(expected 'N: XXXX XXXX XXXX XXXX  CC')"))
            continue
        index, chars, check = int(match[1]), match[2].replace(" ", ""), int(match[3])
        bad = [c for c in chars if c.lower() not in bech32.CHARSET]
        if bad:
            problems.append(PaperProblem(index, f"character {bad[0]!r} is not in the "
                                         "key alphabet (no 1, B, I or O)"))
        elif len(chars) > PAPER_LINE:
            problems.append(PaperProblem(index, f"{len(chars)} characters, at most "
                                         f"{PAPER_LINE} per line"))
        elif index in rows:
            problems.append(PaperProblem(index, "line number given twice"))
        elif paper_check(index, chars) != check:
            problems.append(PaperProblem(index, "check digits do not match: a character "
                                         "of this line is wrong, or the digits"))
        rows[index] = chars
    if plain and not rows:
        if len(plain) > 1:
            return None, [PaperProblem(0, "more than one secret key")]
        try:
            return Identity.parse(plain[0]), problems
        except KeyFormatError as err:
            return None, [*problems, PaperProblem(0, str(err))]
    if problems:
        return None, problems
    if not rows:
        return None, [PaperProblem(0, "no paper lines found")]
    missing = [n for n in range(1, max(rows) + 1) if n not in rows]
    if missing:
        return None, [PaperProblem(n, "line missing") for n in missing]
    body = "".join(rows[n] for n in sorted(rows)).upper()
    try:
        return Identity.parse(IDENTITY_PREFIX + body), []
    except KeyFormatError as err:
        return None, [PaperProblem(0, f"the lines check, but the whole key does not: {err}"
                                   " (a line missing at the end, or two lines swapped?)")]
