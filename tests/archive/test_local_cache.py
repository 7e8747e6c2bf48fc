"""The local cache: rebuilt from a manifest, packs forgotten with what points into them,
file rows batched and counted only once the run's manifest is written."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from s3archive.archive.local_cache import CachedPack, FileKey, LocalCache
from s3archive.archive.packer import ChunkLocation
from s3archive.format.model import (ChunkRef, Entry, Header, Manifest, PackRef, Snapshot,
                                    Trailer)

T0 = datetime(2031, 3, 3, tzinfo=timezone.utc)


def digest(n: int) -> str:
    return hashlib.sha256(b"%d" % n).hexdigest()


def pack_key(n: int) -> str:
    h = f"{n:02x}" + "e" * 62
    return f"packs/{h[:2]}/{h}"


@pytest.fixture
def cache(tmp_path: Path):
    cache = LocalCache(tmp_path / "cache" / "c.sqlite")
    yield cache
    cache.close()


def manifest() -> Manifest:
    packs = [PackRef(0, pack_key(1), "v1", 1000, T0 + timedelta(days=40), "COMPLIANCE"),
             PackRef(1, pack_key(2), "v2", 2000)]  # no lock recorded: the header's
    entries = [
        Entry(b"/", "dir", 0o755, 0, 0, 1),
        Entry(b"/a", "file", 0o644, 0, 0, 2, size=30, ino=11, ctime_ns=3,
              chunks=[ChunkRef(digest(1), 10, 0, 0, 8, "zstd"), ChunkRef(digest(2), 20, 1, 0, 20, "raw")]),
        Entry(b"/b", "file", 0o644, 0, 0, 2, size=10, chunks=[ChunkRef(digest(1), 10, 0, 0, 8, "zstd")]),
        Entry(b"/c", "symlink", 0o777, 0, 0, 2, target=b"a"),
    ]
    snaps = [Snapshot("db", "ok", 0, 5, T0, 1.0, chunks=[ChunkRef(digest(3), 5, 1, 20, 5, "raw")])]
    header = Header("h", "run-1", T0, "GOVERNANCE", T0 + timedelta(days=30), "daily", "t")
    return Manifest(header, packs, entries, snaps, Trailer(T0))


def test_rebuild_from_a_manifest(cache: LocalCache) -> None:
    assert cache.is_empty()
    assert cache.rebuild_from_manifest(manifest()) == 1, "only files with inode and ctime"
    assert cache.get_pack(pack_key(1)) == CachedPack(pack_key(1), "v1", 1000, "COMPLIANCE",
                                                     T0 + timedelta(days=40))
    assert cache.get_pack(pack_key(2)) == CachedPack(pack_key(2), "v2", 2000, "GOVERNANCE",
                                                     T0 + timedelta(days=30))
    assert cache.get_chunk(digest(2)) == ChunkLocation(digest(2), pack_key(2), 0, 20, 20, "raw")
    assert cache.get_chunk(digest(3)) == ChunkLocation(digest(3), pack_key(2), 20, 5, 5, "raw")
    # a learned file row has no device number: it matches on any device
    hit = cache.get_file(b"/a", FileKey(99, 11, 30, 2, 3))
    assert hit is not None and hit.chunks == [(digest(1), 10), (digest(2), 20)]
    assert b'"path":"/a"' in hit.line and b"chunks" not in hit.line
    assert cache.get_file(b"/a", FileKey(99, 11, 30, 2, 4)) is None, "ctime changed"
    assert cache.get_file(b"/b", FileKey(99, 0, 10, 2, 3)) is None
    assert cache.get_meta("last_run_id") == "run-1"


def test_forgetting_a_pack_forgets_its_chunks_and_the_files_that_use_them(cache: LocalCache) -> None:
    cache.rebuild_from_manifest(manifest())
    cache.put_file(b"/other", FileKey(1, 2, 10, 2, 3), b"{}", [(digest(1), 10)])
    assert cache.packs_lapsing_before(T0 + timedelta(days=35)) == [pack_key(2)]
    cache.forget_packs([pack_key(2)])
    assert cache.get_pack(pack_key(2)) is None
    assert cache.get_chunks([digest(1), digest(2), digest(3)]).keys() == {digest(1)}
    assert cache.get_file(b"/a", FileKey(1, 11, 30, 2, 3)) is None, "it used a chunk of pack 2"
    assert cache.get_file(b"/other", FileKey(1, 2, 10, 2, 3)) is not None
    assert not cache.chunk_filter().may_contain(digest(2))
    assert cache.chunk_filter().may_contain(digest(1))


def test_file_rows_count_only_after_the_manifest_is_written(cache: LocalCache, tmp_path: Path) -> None:
    rows = [(b"/f%d" % i, FileKey(1, i, 5, 6, 7), b'{"line":%d}' % i, [(digest(i), 5)])
            for i in range(1200)]
    cache.begin()
    for start in range(0, len(rows), 512):  # as the archiver does: batches of 512
        cache.put_files(rows[start:start + 512], pending=True)
    cache.commit()
    assert cache.get_file(b"/f7", FileKey(1, 7, 5, 6, 7)) is None, "pending: not counted yet"
    # a second connection (the next run after a crash) does not see pending rows
    other = LocalCache(cache.path)
    try:
        assert other.get_file(b"/f7", FileKey(1, 7, 5, 6, 7)) is None
    finally:
        other.close()
    cache.commit_pending_files()
    hit = cache.get_file(b"/f1199", FileKey(1, 1199, 5, 6, 7))
    assert hit is not None and hit.line == b'{"line":1199}' and hit.chunks == [(digest(1199), 5)]
    assert sum(cache.get_file(p, k) is not None for p, k, _, _ in rows) == 1200


def test_pending_file_rows_of_a_failed_run_are_discarded(cache: LocalCache) -> None:
    cache.put_files([(b"/f", FileKey(1, 1, 5, 6, 7), b"{}", [(digest(1), 5)])], pending=True)
    cache.discard_pending_files()
    cache.commit_pending_files()
    assert cache.get_file(b"/f", FileKey(1, 1, 5, 6, 7)) is None


def test_an_uncommitted_transaction_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = LocalCache(path)
    cache.begin()
    cache.add_pack(CachedPack(pack_key(1), "v1", 10, None, T0))
    cache.add_chunks([ChunkLocation(digest(1), pack_key(1), 0, 10, 10, "raw")])
    cache.close()  # the process died before commit
    reopened = LocalCache(path)
    try:
        assert reopened.is_empty() and reopened.get_chunk(digest(1)) is None
    finally:
        reopened.close()


def test_many_chunks_are_looked_up_in_batches(cache: LocalCache) -> None:
    cache.add_chunks([ChunkLocation(digest(i), pack_key(1), i, 1, 1, "raw") for i in range(1300)])
    found = cache.get_chunks([digest(i) for i in range(0, 2600, 2)])
    assert found.keys() == {digest(i) for i in range(0, 1300, 2)}
    assert found[digest(1298)].offset == 1298


def test_a_pack_lock_is_only_ever_lengthened_for_the_same_version(cache: LocalCache) -> None:
    cache.add_pack(CachedPack(pack_key(1), "v1", 10, "GOVERNANCE", T0 + timedelta(days=9)))
    cache.add_pack(CachedPack(pack_key(1), "v1", 10, "GOVERNANCE", T0 + timedelta(days=3)))
    assert cache.get_pack(pack_key(1)).retain_until == T0 + timedelta(days=9)
    cache.add_pack(CachedPack(pack_key(1), "v2", 10, "GOVERNANCE", T0 + timedelta(days=1)))
    assert cache.get_pack(pack_key(1)).version_id == "v1", "an older-locked version never wins"
