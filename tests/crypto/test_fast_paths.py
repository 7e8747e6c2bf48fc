"""The writer's fast paths give exactly the documented constructions
(docs/FORMAT.md part 2, 5 and 10): keyed ids, sealed blobs and the local
cache's row names and sealed lines, computed the slow, obvious way beside them."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
import threading

import pytest

from s3archive.archive.encryption import FileCipher, RunEncryption
from s3archive.crypto.blob import (
    CHUNK_LIST,
    DATA,
    RAW,
    TREE,
    ZSTD,
    BlobPlace,
    open_sealed,
    seal,
)
from s3archive.crypto.dedup import DedupSecret, HmacSha256
from s3archive.crypto.keys import Identity

RNG = random.Random(23)


@pytest.mark.parametrize("key_size", [0, 16, 32, 64, 65, 200])
def test_hmac_sha256_is_rfc_2104_hmac(key_size: int) -> None:
    key = RNG.randbytes(key_size)
    mac = HmacSha256(key)
    for size in (0, 1, 55, 56, 63, 64, 65, 3000, 1 << 20):
        message = RNG.randbytes(size)
        assert mac.digest(message) == hmac.digest(key, message, "sha256")
        assert mac.digest(memoryview(message)) == hmac.digest(key, message, "sha256")
    assert key.hex() not in repr(mac) or not key


def test_hmac_sha256_is_safe_across_threads() -> None:
    key = RNG.randbytes(32)
    mac = HmacSha256(key)
    messages = [RNG.randbytes(RNG.randrange(0, 5000)) for _ in range(64)]
    wrong: list[bytes] = []

    def work() -> None:
        for _ in range(20):
            for message in messages:
                if mac.digest(message) != hmac.digest(key, message, "sha256"):
                    wrong.append(message)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong


def test_the_writers_ids_and_sealed_blobs_are_the_documented_ones() -> None:
    secret = DedupSecret(RNG.randbytes(32))
    writer = RunEncryption([Identity(RNG.randbytes(32)).recipient()], secret)
    plain = RNG.randbytes(5000)
    assert writer.data_id(plain) == secret.blob_id(DATA, plain).hex()
    assert writer.meta_id(plain) == secret.blob_id(TREE, plain).hex()
    assert writer.meta_id(plain) == secret.blob_id(CHUNK_LIST, plain).hex()
    pack_id, _, key = writer.new_pack()
    for in_place in (True, False):  # cryptography >= 45 writes the ciphertext in place
        body = bytearray(b"preamble")
        sealer = writer.blob_sealer(key, pack_id)
        for kind, encoding, stored in ((DATA, ZSTD, plain), (TREE, RAW, plain[:77])):
            blob_id = bytes.fromhex(writer.data_id(stored))
            place = BlobPlace(pack_id, len(body), kind, encoding, blob_id)
            with pytest.MonkeyPatch.context() as patch:
                if not in_place:
                    patch.setattr(sealer, "_into", False)
                length = sealer.append(body, kind, encoding, blob_id, memoryview(stored))
            sealed = bytes(body[place.offset:])
            assert length == len(sealed) == len(stored) + 16
            assert sealed == seal(key, place, stored)
            assert open_sealed(key, place, sealed) == stored


def test_the_cache_rows_are_named_and_sealed_as_documented() -> None:
    """FORMAT.md 10.2: name = HMAC(K_cache, "name" 0x00 path)[:16], its directory's
    HMAC(K_cache, "files-dir" 0x00 directory)[:16]; a line is sealed as nonce ‖ X[:16] ‖
    line XOR X[16:], X = SHAKE256(K_stream ‖ nonce ‖ ino size mtime_ns ctime_ns ‖
    path), 8 bytes each, big-endian, the times signed, K_stream = HMAC(K_cache,
    "line-stream"): a row written before opens after; another stat, another
    secret or a changed check opens nothing."""
    key = RNG.randbytes(32)
    cipher = FileCipher(key, "label")
    path = b"/srv/\xffpayroll/q3.txt"
    stat = (123456789, 4096, -5, 1_700_000_000_123_456_789)
    assert cipher.name(path) == hmac.digest(key, b"name\0" + path, "sha256")[:16]
    assert cipher.directory(b"/srv") == hmac.digest(key, b"files-dir\0/srv", "sha256")[:16]
    line = b'{"kind":"file","mode":420,"user":"r\xc3\xb6ot"}'
    nonce = RNG.randbytes(12)
    stream = hashlib.shake_256(hmac.digest(key, b"line-stream", "sha256") + nonce
                               + struct.pack(">QQqq", *stat) + path).digest(16 + len(line))
    written_before = nonce + stream[:16] + bytes(a ^ b for a, b in zip(line, stream[16:]))
    assert cipher.open(path, stat, written_before) == line
    sealed = cipher.seal(path, stat, line)
    assert cipher.open(path, stat, sealed) == line and line not in sealed
    assert len(sealed) == 12 + 16 + len(line) and sealed[:12] != written_before[:12]
    assert cipher.open(path, stat, cipher.seal(path, stat, b"")) == b""
    for other in range(4):  # any one number of the stat changed: opens for nobody
        changed = list(stat)
        changed[other] += 1
        assert cipher.open(path, tuple(changed), written_before) is None
    assert cipher.open(path + b"x", stat, written_before) is None
    assert FileCipher(RNG.randbytes(32), "label").open(path, stat, written_before) is None
    for position in range(12, 28):  # the check
        bad = bytearray(written_before)
        bad[position] ^= 1
        assert cipher.open(path, stat, bytes(bad)) is None
    assert cipher.open(path, stat, written_before[:27]) is None


def test_the_directory_rows_are_named_and_keyed_as_documented(tmp_path) -> None:
    """FORMAT.md 10.2: a dir_trees row is named HMAC(K_cache, "dir" 0x00 path)[:16],
    its digest kept as HMAC(K_cache, "dir-digest" 0x00 digest): rows written before
    are found after."""
    from s3archive.archive.dir_cache import DirCache
    from s3archive.archive.local_cache import LocalCache

    key = RNG.randbytes(32)
    cache = LocalCache(tmp_path / "c.sqlite")
    try:
        dirs = DirCache(cache, key, remember=True)
        path, digest = b"/srv/\xffpayroll", RNG.randbytes(32)
        assert dirs._name(path) == hmac.digest(key, b"dir\0" + path, "sha256")[:16]
        assert dirs._keyed(digest) == hmac.digest(key, b"dir-digest\0" + digest, "sha256")
        assert DirCache(cache, None, remember=True)._name(path) == path
    finally:
        cache.close()
