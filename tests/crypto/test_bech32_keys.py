"""Bech32 and the age X25519 key pair: vectors from BIP 173 and the age spec,
the identity-file reader, and the paper copy with its per-line check."""

from __future__ import annotations

import random

import pytest

from s3archive.crypto import bech32
from s3archive.crypto.errors import KeyFormatError
from s3archive.crypto.keys import (
    IDENTITY_PREFIX,
    Identity,
    Recipient,
    paper_check,
    paper_lines,
    parse_identity_file,
    read_paper,
)

# C2SP age, "The X25519 recipient type": an identity and its recipient.
SPEC_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"


@pytest.mark.parametrize("text", [
    "A12UEL5L", "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
])
def test_bip173_valid_strings_decode(text: str) -> None:
    hrp, _ = bech32.decode(text)
    assert hrp == text.lower()[:text.lower().rfind("1")]


@pytest.mark.parametrize("text", [
    "A1G7SGD8",  # checksum computed with upper-case hrp
    "10a06t8",  # empty hrp
    "1qzzfhee",  # empty hrp
    "a12UEL5L",  # mixed case
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxx",  # last character changed
    "x1b4n0q5v",  # 'b' not in the alphabet
    "li1dgmt3",  # checksum too short
])
def test_bip173_invalid_strings_are_refused(text: str) -> None:
    with pytest.raises(bech32.Bech32Error):
        bech32.decode(text)


def test_round_trip_of_random_data() -> None:
    rng = random.Random(7)
    for size in (0, 1, 31, 32, 33, 100):
        data = rng.randbytes(size)
        assert bech32.decode(bech32.encode("age", data)) == ("age", data)


def test_the_age_spec_vector() -> None:
    identity = Identity.parse(SPEC_IDENTITY)
    assert str(identity) == SPEC_IDENTITY
    assert str(identity.recipient()) == SPEC_RECIPIENT
    assert Recipient.parse(SPEC_RECIPIENT) == identity.recipient()
    assert Recipient.parse(SPEC_RECIPIENT.upper()) == identity.recipient()  # as age does


def test_identity_repr_never_shows_the_secret() -> None:
    identity = Identity.parse(SPEC_IDENTITY)
    assert SPEC_IDENTITY[16:40].lower() not in repr(identity).lower()
    assert SPEC_RECIPIENT in repr(identity)


@pytest.mark.parametrize("text, message", [
    ("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwq", "checksum"),
    ("ssh-ed25519 AAAAC3Nz", "not an age X25519 recipient"),
    (bech32.encode("age", bytes(20)), "not an age X25519"),  # 20 bytes, not 32
    (bech32.encode("age-secret-key-", bytes(32)), "not an age X25519"),  # a secret key
])
def test_bad_recipients_are_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message):
        Recipient.parse(text)


def test_identity_file_reader_names_file_and_line() -> None:
    text = f"# created: x\n# public key: {SPEC_RECIPIENT}\n\n{SPEC_IDENTITY}\n"
    assert parse_identity_file(text) == [Identity.parse(SPEC_IDENTITY)]
    broken = SPEC_IDENTITY[:-1] + ("A" if SPEC_IDENTITY[-1] != "A" else "C")
    with pytest.raises(KeyFormatError, match=r"k\.txt: line 2: secret key: checksum"):
        parse_identity_file(f"# c\n{broken}\n", "k.txt")
    with pytest.raises(KeyFormatError, match="line 1: not an age X25519 secret key"):
        parse_identity_file("AGE-PLUGIN-YUBIKEY-1QQQ\n", "k.txt")
    with pytest.raises(KeyFormatError, match="no secret key"):
        parse_identity_file("# only a comment\n", "k.txt")


def test_paper_lines_round_trip_and_check_digits() -> None:
    identity = Identity.parse(SPEC_IDENTITY)
    lines = paper_lines(identity)
    assert [line.split(":")[0] for line in lines] == ["1", "2", "3", "4"]
    assert "".join(line.split(":")[1][:-4].replace(" ", "") for line in lines) \
        == SPEC_IDENTITY[len(IDENTITY_PREFIX):]
    # the documented rule, by hand: line number + sum of position x value, mod 97
    chars = lines[0].split(":")[1][:-4].replace(" ", "").lower()
    by_hand = (1 + sum(i * bech32.CHARSET.index(c) for i, c in enumerate(chars, 1))) % 97
    assert lines[0].endswith(f"{by_hand:02d}")
    typed = "\n".join(lines).lower()  # operators may type lower case
    assert read_paper(typed) == (identity, [])


def test_every_single_typo_is_caught_on_its_line() -> None:
    identity = Identity.parse(SPEC_IDENTITY)
    lines = paper_lines(identity)
    for line_index, line in enumerate(lines):
        number, rest = line.split(":", 1)
        text, check = rest[:-4], rest[-2:]
        for position, char in enumerate(text):
            if char == " ":
                continue
            for other in bech32.CHARSET.upper():
                if other == char:
                    continue
                typed = list(lines)
                typed[line_index] = f"{number}:{text[:position]}{other}{text[position + 1:]}  {check}"
                found, problems = read_paper("\n".join(typed))
                assert found is None
                assert [p.line for p in problems] == [line_index + 1]


def test_swaps_and_missing_lines_are_named() -> None:
    identity = Identity.parse(SPEC_IDENTITY)
    lines = paper_lines(identity)
    rest = lines[1].split(":", 1)[1]
    chars = rest[:-4].replace(" ", "")
    swapped = chars[1] + chars[0] + chars[2:]
    if swapped != chars:  # adjacent transposition within a line
        assert paper_check(2, swapped) != paper_check(2, chars)
    # two lines' numbers exchanged: each line's check no longer fits its number
    exchanged = [lines[0], lines[2].replace("3:", "2:", 1), lines[1].replace("2:", "3:", 1),
                 lines[3]]
    found, problems = read_paper("\n".join(exchanged))
    assert found is None and {p.line for p in problems} == {2, 3}
    found, problems = read_paper("\n".join([lines[0], lines[2], lines[3]]))
    assert found is None and [(p.line, p.message) for p in problems] == [(2, "line missing")]
    found, problems = read_paper("\n".join(lines[:3]))  # the last line forgotten
    assert found is None and "whole key does not" in problems[0].message
    found, problems = read_paper("1: IIII OOOO  12")
    assert found is None and "alphabet" in problems[0].message
    found, problems = read_paper(f"Recipient: {SPEC_RECIPIENT}\n{lines[0]}\n2 PZ0P\n")
    assert found is None and [(p.line, p.message[:18]) for p in problems] == \
        [(3, "not a paper line (")]


def test_plain_key_line_is_accepted_by_check() -> None:
    identity = Identity.parse(SPEC_IDENTITY)
    assert read_paper(f"# a key file\n{SPEC_IDENTITY}\n") == (identity, [])
