"""Index objects of an encrypting host (docs/FORMAT.md 10.3): the binary form
written now, the JSON form written before still learned, and every malformed
object skipped, never trusted."""

from __future__ import annotations

import json
import logging
import os
import random
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from s3archive.archive import pack_index
from s3archive.archive.local_cache import LocalCache
from s3archive.archive.packer import ChunkLocation
from s3archive.crypto.dedup import DedupSecret, derive
from s3archive.store.base import ObjectLock
from support.memory_store import FakeClock, MemoryStore

RNG = random.Random(5)
HOST = "h"
PACK = "data/ab/" + "ab" * 32
SIZE = 10_000


def blobs(pack: str = PACK, count: int = 40) -> list[ChunkLocation]:
    return [ChunkLocation(RNG.randbytes(32).hex(), pack, 100 + 200 * i, 200, 150 + i,
                          "zstd" if i % 3 else "raw") for i in range(count)]


@pytest.fixture
def env(tmp_path: Path) -> tuple[MemoryStore, DedupSecret, LocalCache]:
    clock = FakeClock(datetime(2031, 1, 1, tzinfo=timezone.utc))
    cache = LocalCache(tmp_path / "cache.db")
    yield MemoryStore(clock), DedupSecret(RNG.randbytes(32)), cache
    cache.close()


@pytest.fixture
def warnings() -> list[str]:
    """What learn() warns (a handler of its own: the CLI's tests stop propagation)."""
    seen: list[str] = []
    logger = logging.getLogger(pack_index.__name__)
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield seen
    logger.removeHandler(handler)
    logger.setLevel(level)


def lock() -> ObjectLock:
    return ObjectLock("COMPLIANCE", datetime(2031, 2, 1, tzinfo=timezone.utc))


def sealed(secret: DedupSecret, payload: bytes) -> bytes:
    nonce = os.urandom(12)
    key = derive(secret.secret, pack_index.LABEL)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, payload, pack_index.LABEL)


def test_the_binary_index_object_round_trips_and_is_compact(env) -> None:
    store, secret, cache = env
    rows = blobs()
    writer = pack_index.PackIndexWriter(store, HOST, secret)
    version = writer.write(PACK, "v-1", SIZE, rows, lock())
    body = store.get(pack_index.index_key(HOST, PACK), version)
    assert len(body) == 12 + 8 + 2 + len(PACK) + 2 + 3 + 12 + 49 * len(rows) + 16
    assert pack_index.learn(store, HOST, secret, cache, locked=True) == 1
    assert cache.get_chunks([r.hash for r in rows]) == {r.hash: r for r in rows}
    assert cache.get_pack(PACK).version_id == "v-1"
    assert cache.get_meta(pack_index.cache_name(PACK)) == version


def test_an_index_object_of_the_earlier_json_form_is_still_learned(env) -> None:
    store, secret, cache = env
    rows = blobs()
    plain = json.dumps({"pack": PACK, "version_id": "v-1", "size": SIZE,
                        "blobs": [[r.hash, r.offset, r.stored, r.size, r.encoding]
                                  for r in rows]}, separators=(",", ":")).encode()
    store.put(pack_index.index_key(HOST, PACK),
              sealed(secret, zstandard.ZstdCompressor(level=3).compress(plain)), lock())
    assert pack_index.learn(store, HOST, secret, cache, locked=True) == 1
    assert cache.get_chunks([r.hash for r in rows]) == {r.hash: r for r in rows}


def _binary(rows: list[ChunkLocation], pack: str = PACK, size: int = SIZE,
            extra: bytes = b"", count: int | None = None) -> bytes:
    good = pack_index.encode(pack, "v-1", size, rows)
    if count is not None:  # announce another number of rows
        at = len(pack_index.MAGIC) + 2 + len(pack.encode()) + 2 + 3 + 8
        good = good[:at] + struct.pack(">I", count) + good[at + 4:]
    return good + extra


@pytest.mark.parametrize("payload,reason", [
    (lambda: _binary(blobs(), extra=b"x"), "rows announced"),
    (lambda: _binary(blobs(), count=41), "rows announced"),
    (lambda: _binary(blobs())[:30], "truncated"),
    (lambda: _binary(blobs(), size=500), "malformed blob row"),  # a blob past the pack's end
    (lambda: _binary(blobs("data/cd/" + "cd" * 32), pack="data/cd/" + "cd" * 32),
     "names another pack"),
    (lambda: _binary(blobs())[:-1] + b"q", "unknown encoding"),  # the last row's encoding
], ids=["trailing", "count", "truncated", "outside", "other-pack", "encoding"])
def test_a_malformed_index_object_is_skipped(env, warnings, payload, reason: str) -> None:
    store, secret, cache = env
    store.put(pack_index.index_key(HOST, PACK), sealed(secret, payload()), lock())
    assert pack_index.learn(store, HOST, secret, cache, locked=True) == 0
    assert len(warnings) == 1 and reason in warnings[0] and "is not reused" in warnings[0]
    assert cache.get_pack(PACK) is None


def test_an_index_object_of_another_secret_is_skipped(env, warnings) -> None:
    store, secret, cache = env
    pack_index.PackIndexWriter(store, HOST, DedupSecret(RNG.randbytes(32))).write(
        PACK, "v-1", SIZE, blobs(), lock())
    assert pack_index.learn(store, HOST, secret, cache, locked=True) == 0
    assert len(warnings) == 1 and "InvalidTag" in warnings[0]


def test_unlocked_index_objects_count_only_in_an_unlocked_bucket(env) -> None:
    store, secret, cache = env
    pack_index.PackIndexWriter(store, HOST, secret).write(PACK, "v-1", SIZE, blobs(), None)
    assert pack_index.learn(store, HOST, secret, cache, locked=True) == 0
    assert pack_index.learn(store, HOST, secret, cache, locked=False) == 1
    assert cache.get_pack(PACK).retain_until > datetime.now(timezone.utc) + timedelta(days=3650)
