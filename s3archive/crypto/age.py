"""age v1 (C2SP age): X25519 recipient stanzas and complete age files.

A format-2 pack starts with a key block that is a complete binary age file
whose payload is the pack's 32-byte key (docs/FORMAT2.md 5.4), so the key
holder can open it with ``age -d -i KEYFILE`` as well as with this module.
Everything parsed here comes from the bucket: sizes are bounded, base64 must
be canonical, and any deviation from the grammar is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from s3archive.crypto import primitives
from s3archive.crypto.errors import AgeFormatError, WrongKeyError
from s3archive.crypto.keys import Identity, Recipient

VERSION_LINE = b"age-encryption.org/v1\n"
X25519_INFO = b"age-encryption.org/v1/X25519"
FILE_KEY_SIZE = 16
STREAM_CHUNK = 64 * 1024
TAG_SIZE = 16
MAX_HEADER = 64 * 1024  # bytes: far above 16 recipients (about 110 bytes each)
MAX_STANZAS = 64
_ARG = re.compile(rb"[\x21-\x7e]+")


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return primitives.HKDF(algorithm=primitives.hashes.SHA256(), length=length, salt=salt,
                           info=info).derive(ikm)


def b64encode(data: bytes) -> bytes:
    """age's base64: standard alphabet, no padding."""
    return base64.b64encode(data).rstrip(b"=")


def b64decode(text: bytes, what: str) -> bytes:
    """Strict, canonical, unpadded base64 (age requires canonical encodings)."""
    if b"=" in text or len(text) % 4 == 1:
        raise AgeFormatError(f"age header: {what} is not unpadded base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise AgeFormatError(f"age header: {what} is not base64") from None
    if b64encode(data) != text:
        raise AgeFormatError(f"age header: {what} is not canonical base64")
    return data


@dataclass(frozen=True)
class Stanza:
    args: tuple[bytes, ...]
    body: bytes

    def encode(self) -> bytes:
        lines = [b"-> " + b" ".join(self.args) + b"\n"]
        text = b64encode(self.body)
        for start in range(0, len(text), 64):
            lines.append(text[start:start + 64] + b"\n")
        if len(text) % 64 == 0:
            lines.append(b"\n")  # the body ends with a line shorter than 64 columns
        return b"".join(lines)


def wrap_file_key(file_key: bytes, recipient: Recipient) -> Stanza:
    """age's X25519 stanza: ephemeral share, HKDF(shared, share || recipient),
    ChaCha20-Poly1305 with a zero nonce."""
    ephemeral = primitives.X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(primitives.X25519PublicKey.from_public_bytes(recipient.public))
    if shared == bytes(32):
        raise WrongKeyError(f"recipient {recipient} is a low-order point: refused")
    wrap_key = hkdf_sha256(shared, share + recipient.public, X25519_INFO)
    body = primitives.ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
    return Stanza((b"X25519", b64encode(share)), body)


def unwrap_file_key(stanza: Stanza, identity: Identity) -> bytes | None:
    """The file key if ``stanza`` is an X25519 stanza addressed to ``identity``;
    ``None`` if it is for someone else.  A malformed X25519 stanza is refused."""
    if not stanza.args or stanza.args[0] != b"X25519":
        return None
    if len(stanza.args) != 2:
        raise AgeFormatError("age header: X25519 stanza without exactly one argument")
    share = b64decode(stanza.args[1], "X25519 ephemeral share")
    if len(share) != 32:
        raise AgeFormatError("age header: X25519 ephemeral share is not 32 bytes")
    if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
        raise AgeFormatError("age header: X25519 stanza body is not 32 bytes")
    try:
        shared = identity.exchange(share)  # refuses an all-zero shared secret
    except ValueError:
        shared = bytes(32)
    if shared == bytes(32):
        raise AgeFormatError("age header: X25519 share is a low-order point")
    wrap_key = hkdf_sha256(shared, share + identity.recipient().public, X25519_INFO)
    try:
        return primitives.ChaCha20Poly1305(wrap_key).decrypt(bytes(12), stanza.body, None)
    except primitives.InvalidTag:
        return None


def _header_mac(file_key: bytes, header_to_dashes: bytes) -> bytes:
    mac_key = hkdf_sha256(file_key, b"", b"header")
    return hmac.new(mac_key, header_to_dashes, hashlib.sha256).digest()


def encode_header(file_key: bytes, stanzas: list[Stanza]) -> bytes:
    head = VERSION_LINE + b"".join(s.encode() for s in stanzas) + b"---"
    return head + b" " + b64encode(_header_mac(file_key, head)) + b"\n"


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes  # the header up to and including "---"
    length: int  # bytes of the header, the payload starts here


def parse_header(data: bytes) -> Header:
    """Parse the age header at the start of ``data`` (bounded, strict)."""
    if not data.startswith(VERSION_LINE):
        raise AgeFormatError("not an age v1 file (no 'age-encryption.org/v1' line)")
    pos = len(VERSION_LINE)
    stanzas: list[Stanza] = []
    while True:
        end = data.find(b"\n", pos, MAX_HEADER)
        if end < 0:
            raise AgeFormatError(f"age header: longer than {MAX_HEADER} bytes or truncated")
        line = data[pos:end]
        if line.startswith(b"--- "):
            mac = b64decode(line[4:], "header MAC")
            if len(mac) != 32:
                raise AgeFormatError("age header: MAC is not 32 bytes")
            if not stanzas:
                raise AgeFormatError("age header: no recipient stanza")
            return Header(tuple(stanzas), mac, data[:pos + 3], end + 1)
        if not line.startswith(b"-> "):
            raise AgeFormatError("age header: expected a stanza ('-> ') or the MAC ('--- ')")
        if len(stanzas) >= MAX_STANZAS:
            raise AgeFormatError(f"age header: more than {MAX_STANZAS} stanzas")
        args = tuple(line[3:].split(b" "))
        if not all(_ARG.fullmatch(a) for a in args):
            raise AgeFormatError("age header: empty or invalid stanza argument")
        pos = end + 1
        body_text = b""
        while True:
            end = data.find(b"\n", pos, MAX_HEADER)
            if end < 0:
                raise AgeFormatError(f"age header: longer than {MAX_HEADER} bytes or truncated")
            body_line = data[pos:end]
            pos = end + 1
            if len(body_line) > 64:
                raise AgeFormatError("age header: stanza body line longer than 64 columns")
            body_text += body_line
            if len(body_line) < 64:
                break
        stanzas.append(Stanza(args, b64decode(body_text, "stanza body")))


def file_key_for(header: Header, identities: list[Identity]) -> bytes:
    """Unwrap the file key with the first identity that matches; check the MAC."""
    for stanza in header.stanzas:
        for identity in identities:
            file_key = unwrap_file_key(stanza, identity)
            if file_key is None:
                continue
            if not hmac.compare_digest(_header_mac(file_key, header.mac_input), header.mac):
                raise AgeFormatError("age header: MAC mismatch (the header was changed)")
            return file_key
    kinds = sorted({s.args[0].decode("ascii", "replace") for s in header.stanzas})
    raise WrongKeyError(f"none of the {len(identities)} key(s) given opens it "
                        f"({len(header.stanzas)} recipient stanza(s): {', '.join(kinds)})")


def _payload_key(file_key: bytes, nonce: bytes) -> bytes:
    return hkdf_sha256(file_key, nonce, b"payload")


def _stream_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypt(plaintext: bytes, recipients: list[Recipient]) -> bytes:
    """A complete binary age v1 file of ``plaintext`` for ``recipients``."""
    if not recipients:
        raise ValueError("at least one recipient is needed")
    file_key = os.urandom(FILE_KEY_SIZE)
    header = encode_header(file_key, [wrap_file_key(file_key, r) for r in recipients])
    nonce = os.urandom(16)
    aead = primitives.ChaCha20Poly1305(_payload_key(file_key, nonce))
    parts = [header, nonce]
    count = max(1, -(-len(plaintext) // STREAM_CHUNK))
    for index in range(count):
        chunk = plaintext[index * STREAM_CHUNK:(index + 1) * STREAM_CHUNK]
        parts.append(aead.encrypt(_stream_nonce(index, index == count - 1), chunk, None))
    return b"".join(parts)


def decrypt(data: bytes, identities: list[Identity], max_plaintext: int) -> bytes:
    """The plaintext of a complete age file; refuses more than ``max_plaintext`` bytes."""
    header = parse_header(data)
    file_key = file_key_for(header, identities)
    payload = memoryview(data)[header.length:]
    if len(payload) < 16 + TAG_SIZE:
        raise AgeFormatError("age payload: truncated")
    aead = primitives.ChaCha20Poly1305(_payload_key(file_key, bytes(payload[:16])))
    sealed = payload[16:]
    size = STREAM_CHUNK + TAG_SIZE
    count = -(-len(sealed) // size)
    if len(sealed) - (count - 1) * TAG_SIZE - TAG_SIZE > max_plaintext:
        raise AgeFormatError(f"age payload: larger than {max_plaintext} bytes")
    out = []
    for index in range(count):
        piece = bytes(sealed[index * size:(index + 1) * size])
        last = index == count - 1
        if last and len(piece) == TAG_SIZE and count > 1:
            raise AgeFormatError("age payload: empty final chunk")
        try:
            out.append(aead.decrypt(_stream_nonce(index, last), piece, None))
        except primitives.InvalidTag:
            raise AgeFormatError(f"age payload: chunk {index} fails authentication "
                                 "(changed or truncated)") from None
    return b"".join(out)
