"""age files (key blocks), sealed blobs and keyed ids: round trips and every
kind of tampering refused with a message naming what failed."""

from __future__ import annotations

import hashlib
import random

import pytest

from s3archive.crypto import age
from s3archive.crypto.blob import (
    DATA,
    RAW,
    TREE,
    ZSTD,
    BlobPlace,
    new_pack_key,
    open_key_block,
    open_sealed,
    seal,
)
from s3archive.crypto.dedup import (
    DedupSecret,
    dedup_secret_key,
    open_dedup_secret,
    plain_blob_id,
    recipients_fingerprint,
    seal_dedup_secret,
)
from s3archive.crypto.errors import (
    AgeFormatError,
    BlobAuthError,
    KeyFormatError,
    WrongKeyError,
)
from s3archive.crypto.keys import Identity
from s3archive.errors import IntegrityError

RNG = random.Random(11)
ALICE, BOB, EVE = (Identity(RNG.randbytes(32)) for _ in range(3))


@pytest.mark.parametrize("size", [0, 1, 32, age.STREAM_CHUNK - 1, age.STREAM_CHUNK,
                                  age.STREAM_CHUNK + 1, 3 * age.STREAM_CHUNK + 5])
def test_age_round_trip_to_two_recipients(size: int) -> None:
    plain = RNG.randbytes(size)
    data = age.encrypt(plain, [ALICE.recipient(), BOB.recipient()])
    assert age.decrypt(data, [ALICE], max_plaintext=size) == plain
    assert age.decrypt(data, [EVE, BOB], max_plaintext=size) == plain


def test_age_wrong_key_is_named() -> None:
    data = age.encrypt(b"k" * 32, [ALICE.recipient()])
    with pytest.raises(WrongKeyError, match=r"none of the 1 key\(s\) given opens it"):
        age.decrypt(data, [EVE], max_plaintext=32)


def test_age_header_and_payload_tampering_is_refused() -> None:
    data = age.encrypt(b"k" * 32, [ALICE.recipient(), BOB.recipient()])
    header = age.parse_header(data)
    # every byte of the payload (nonce, ciphertext, tag)
    for position in range(header.length, len(data)):
        bad = bytearray(data)
        bad[position] ^= 0x01
        with pytest.raises(AgeFormatError, match="age payload"):
            age.decrypt(bytes(bad), [ALICE], max_plaintext=32)
    # the second stanza (not the one ALICE opens) is covered by the MAC
    second = data.index(b"-> X25519", data.index(b"-> X25519") + 1)
    bad = bytearray(data)
    bad[second + 12] = ord("A") if bad[second + 12] != ord("A") else ord("B")
    with pytest.raises(AgeFormatError):
        age.decrypt(bytes(bad), [ALICE], max_plaintext=32)
    with pytest.raises(AgeFormatError, match="truncated"):
        age.decrypt(data[:header.length + 20], [ALICE], max_plaintext=32)
    with pytest.raises(AgeFormatError, match="larger than 16"):
        age.decrypt(data, [ALICE], max_plaintext=16)


@pytest.mark.parametrize("header, message", [
    (b"age-encryption.org/v2\n", "not an age v1 file"),
    (b"age-encryption.org/v1\n--- " + b"A" * 43 + b"\n", "no recipient stanza"),
    (b"age-encryption.org/v1\n-> X25519 abc=\n" + b"A" * 10 + b"\n--- x\n", "base64"),
    (b"age-encryption.org/v1\n-> \n\n--- x\n", "stanza argument"),
    (b"age-encryption.org/v1\n" + b"-> a\n\n" * 65, "more than 64 stanzas"),
    (b"age-encryption.org/v1\n-> a\n" + b"A" * 65 + b"\n", "longer than 64"),
    (b"age-encryption.org/v1\n-> a\n" + (b"A" * 64 + b"\n") * 1100, "longer than 65536"),
    (b"age-encryption.org/v1\n-> a\nAB\n--- " + b"A" * 43 + b"\n", "not canonical"),
], ids=["version", "no-stanza", "padding", "empty-arg", "stanzas", "long-line", "huge",
        "non-canonical"])
def test_malformed_headers_are_refused(header: bytes, message: str) -> None:
    with pytest.raises(AgeFormatError, match=message):
        age.decrypt(header + bytes(64), [ALICE], max_plaintext=32)


def test_x25519_stanza_checks() -> None:
    stanza = age.wrap_file_key(bytes(16), ALICE.recipient())
    assert age.unwrap_file_key(stanza, ALICE) == bytes(16)
    assert age.unwrap_file_key(stanza, EVE) is None
    assert age.unwrap_file_key(age.Stanza((b"scrypt", b"x", b"18"), b""), ALICE) is None
    with pytest.raises(AgeFormatError, match="32 bytes"):
        age.unwrap_file_key(age.Stanza(stanza.args, stanza.body[:-1]), ALICE)
    with pytest.raises(AgeFormatError, match="low-order"):
        age.unwrap_file_key(age.Stanza((b"X25519", age.b64encode(bytes(32))), stanza.body),
                            ALICE)


# --- blobs -------------------------------------------------------------------

KEY = RNG.randbytes(32)
PACK = RNG.randbytes(16)
BLOB_ID = RNG.randbytes(32)
PLACE = BlobPlace(PACK, 4096, DATA, ZSTD, BLOB_ID)


def test_blob_round_trip_and_overhead() -> None:
    stored = RNG.randbytes(1000)
    sealed = seal(KEY, PLACE, stored)
    assert len(sealed) == len(stored) + 16
    assert open_sealed(KEY, PLACE, sealed) == stored


def test_every_flipped_byte_is_refused() -> None:
    sealed = seal(KEY, PLACE, b"stored bytes of a chunk")
    for position in range(len(sealed)):
        bad = bytearray(sealed)
        bad[position] ^= 0x80
        with pytest.raises(BlobAuthError, match="fails authentication"):
            open_sealed(KEY, PLACE, bytes(bad), "data/ab/ab12")


@pytest.mark.parametrize("moved", [
    BlobPlace(RNG.randbytes(16), 4096, DATA, ZSTD, BLOB_ID),  # another pack
    BlobPlace(PACK, 4097, DATA, ZSTD, BLOB_ID),  # another offset
    BlobPlace(PACK, 4096, DATA, ZSTD, RNG.randbytes(32)),  # another id
    BlobPlace(PACK, 4096, TREE, ZSTD, BLOB_ID),  # another kind
    BlobPlace(PACK, 4096, DATA, RAW, BLOB_ID),  # another encoding
], ids=["pack", "offset", "id", "kind", "encoding"])
def test_a_moved_blob_is_refused_and_named(moved: BlobPlace) -> None:
    sealed = seal(KEY, PLACE, b"stored bytes")
    with pytest.raises(BlobAuthError) as caught:
        open_sealed(KEY, moved, sealed, "data/cd/cd34")
    message = str(caught.value)
    assert moved.blob_id.hex() in message and "in pack data/cd/cd34" in message
    assert "moved" in message
    assert isinstance(caught.value, IntegrityError)


def test_wrong_pack_key_is_refused() -> None:
    sealed = seal(KEY, PLACE, b"stored bytes")
    with pytest.raises(BlobAuthError):
        open_sealed(RNG.randbytes(32), PLACE, sealed)


def test_pack_key_round_trip_and_errors_name_the_pack() -> None:
    pack = new_pack_key([ALICE.recipient(), BOB.recipient()])
    assert len(pack.pack_id) == 16 and len(pack.key) == 32
    assert pack.key.hex() not in repr(pack)
    assert open_key_block(pack.key_block, [BOB], "data/ab/ab12") == pack.key
    assert new_pack_key([ALICE.recipient()]).key != pack.key
    with pytest.raises(WrongKeyError, match="pack data/ab/ab12: none of the 1 key"):
        open_key_block(pack.key_block, [EVE], "data/ab/ab12")
    bad = bytearray(pack.key_block)
    bad[-3] ^= 1
    with pytest.raises(AgeFormatError, match="pack data/ab/ab12: key block: age payload"):
        open_key_block(bytes(bad), [ALICE], "data/ab/ab12")
    with pytest.raises(AgeFormatError, match="key block of 70000 bytes"):
        open_key_block(bytes(70000), [ALICE], "data/ab/ab12")
    wrong_size = age.encrypt(bytes(16), [ALICE.recipient()])
    with pytest.raises(AgeFormatError, match="larger than 32|holds 16 bytes"):
        open_key_block(wrong_size, [ALICE], "p")


def test_blob_place_validates() -> None:
    with pytest.raises(ValueError):
        BlobPlace(PACK[:15], 0, DATA, ZSTD, BLOB_ID)
    with pytest.raises(ValueError):
        BlobPlace(PACK, 0, b"X", ZSTD, BLOB_ID)
    with pytest.raises(ValueError):
        BlobPlace(PACK, -1, DATA, ZSTD, BLOB_ID)


# --- keyed ids and the dedup secret --------------------------------------------

def test_keyed_ids_depend_on_the_secret_and_the_kind() -> None:
    one, two = DedupSecret(RNG.randbytes(32)), DedupSecret(RNG.randbytes(32))
    plain = b"a file everyone has"
    assert one.blob_id(DATA, plain) == one.blob_id(DATA, plain)
    assert one.blob_id(DATA, plain) != two.blob_id(DATA, plain)
    assert one.blob_id(DATA, plain) != one.blob_id(TREE, plain)
    assert one.blob_id(DATA, plain) != plain_blob_id(DATA, plain)
    assert plain_blob_id(DATA, plain) == hashlib.sha256(plain).digest()
    assert one.dedup_id != two.dedup_id and len(one.dedup_id) == 16
    assert one.dedup_id not in one.secret.hex()


def test_dedup_secret_text_form_and_storage_for_recipients() -> None:
    secret = DedupSecret(RNG.randbytes(32))
    assert DedupSecret.parse(str(secret)) == secret
    assert str(secret).startswith("S3ARCHIVE-DEDUP-1")
    assert secret.secret.hex() not in repr(secret)
    with pytest.raises(KeyFormatError):
        DedupSecret.parse(str(ALICE))
    recipients = [ALICE.recipient(), BOB.recipient()]
    assert recipients_fingerprint(recipients) == recipients_fingerprint(recipients[::-1])
    key = dedup_secret_key(secret, recipients)
    assert key == f"keys/dedup/{secret.dedup_id}/{recipients_fingerprint(recipients)}.age"
    sealed = seal_dedup_secret(secret, recipients)
    assert open_dedup_secret(sealed, [BOB], secret.dedup_id) == secret
    with pytest.raises(AgeFormatError, match="not 0000"):
        open_dedup_secret(sealed, [BOB], "0000000000000000")
    with pytest.raises(WrongKeyError):
        open_dedup_secret(sealed, [EVE], secret.dedup_id)


def test_pack_index_is_bound_to_its_pack_and_secret() -> None:
    secret = DedupSecret(RNG.randbytes(32))
    index = RNG.randbytes(42 * 3)
    sealed = secret.seal_index(PACK, index)
    assert secret.open_index(PACK, sealed) == index
    with pytest.raises(IntegrityError, match="index of pack p fails"):
        secret.open_index(RNG.randbytes(16), sealed, "p")
    with pytest.raises(IntegrityError):
        DedupSecret(RNG.randbytes(32)).open_index(PACK, sealed)
