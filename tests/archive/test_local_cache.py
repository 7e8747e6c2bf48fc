"""The local cache: rebuilt from a manifest, packs forgotten with what points into them,
file rows batched and counted only once the run's manifest is written."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from s3archive.archive import local_cache
from s3archive.archive.local_cache import CachedPack, FileKey, LocalCache
from s3archive.archive.packer import ChunkLocation
from s3archive.archive.sql_rows import GROUP_ROWS
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


def test_past_its_limit_the_chunk_filter_holds_nothing_and_answers_maybe(
        cache: LocalCache, monkeypatch: pytest.MonkeyPatch) -> None:
    # the cache also holds the dedup group's chunks: the filter's memory is capped
    cache.rebuild_from_manifest(manifest())
    assert not cache.chunk_filter().everything
    monkeypatch.setattr(local_cache, "CHUNK_FILTER_LIMIT", 2)
    capped = cache.chunk_filter()
    assert capped.everything and len(capped) == 0
    assert capped.may_contain(digest(1)) and capped.may_contain(digest(99))


def test_a_deferred_chunk_filter_reads_the_index_only_once_asked_enough(
        cache: LocalCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the FILTER_AFTER-th question every answer is yes (a lookup confirms it);
    then the filter is built, once, and says no to what the index lacks."""
    cache.rebuild_from_manifest(manifest())  # 3 chunks
    assert not cache.deferred_chunk_filter().may_contain(digest(99)), "a small index: read now"
    monkeypatch.setattr(local_cache, "FILTER_AFTER", 3)
    built: list[int] = []
    build = cache.chunk_filter
    monkeypatch.setattr(cache, "chunk_filter", lambda: built.append(1) or build())
    deferred = cache.deferred_chunk_filter()
    assert all(deferred.may_contain(digest(n)) for n in range(50, 53))
    assert built == [], "no question has paid for reading the index yet"
    assert not deferred.may_contain(digest(99)) and deferred.may_contain(digest(2))
    assert not deferred.may_contain(digest(98)) and built == [1], "built once"


def test_a_hit_lists_its_chunks_as_the_spool_does(cache: LocalCache) -> None:
    from s3archive.archive.file_stage import spool_file_line

    chunks = [(digest(1), 10), (digest(2), 8 << 20), (digest(3), 0)]
    cache.put_file(b"/x", FileKey(1, 2, 3, 4, 5), b'{"type":"entry","path":"/x"}', chunks)
    hit = cache.get_file(b"/x", FileKey(1, 2, 3, 4, 5))
    assert hit is not None and hit.chunks == chunks
    assert cache.get_file(b"/x", FileKey(9, 2, 3, 4, 5)) is None, "another device"
    assert cache.get_file(b"/x", FileKey(1, 2, 3, 4, 6)) is None, "another ctime"
    assert hit.line + b"\t" + hit.spooled_chunks() + b"\n" == spool_file_line(hit.line, chunks)
    cache.put_file(b"/empty", FileKey(1, 3, 0, 4, 5), b'{"type":"entry","path":"/empty"}', [])
    empty = cache.get_file(b"/empty", FileKey(1, 3, 0, 4, 5))
    assert empty is not None and empty.spooled_chunks() == b"" and empty.chunks == []


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


def test_a_file_put_twice_in_a_run_keeps_its_later_row(cache: LocalCache) -> None:
    """The pending rows become the file cache in key order; of two rows of one
    path, the one put later wins (as it did in the order they were put)."""
    # put in an order unlike the key order (as HMAC-named rows are)
    paths = sorted((b"/d%d/f%d" % (i % 7, i) for i in range(600)),
                   key=lambda p: hashlib.sha256(p).digest())
    for line in (b'{"line":"old"}', b'{"line":"new"}'):
        cache.put_files([(p, FileKey(1, i, 5, 6, 7), line, [(digest(i), 5)])
                         for i, p in enumerate(paths)], pending=True)
    cache.commit_pending_files()
    assert {cache.get_file(p, FileKey(1, i, 5, 6, 7)).line  # type: ignore[union-attr]
            for i, p in enumerate(paths)} == {b'{"line":"new"}'}


@pytest.mark.parametrize("count", [0, 1, GROUP_ROWS, GROUP_ROWS + 1])
@pytest.mark.parametrize("pending", [False, True])
def test_a_batch_of_file_rows_keeps_its_later_row_of_a_path(cache: LocalCache, count: int,
                                                             pending: bool) -> None:
    """A batch goes in a group of rows a statement (sql_rows.py): of a path put twice
    in one batch, in one statement or two, the later row wins, pending or not."""
    rows = [(b"/d/f%d" % i, FileKey(1, i, 5, 6, 7), b'{"line":%d}' % i, [(digest(i), 5)])
            for i in range(count)]
    if count:  # the first path again, last (another statement past a group), and the
        # last path put early too, just before its row (one statement): later rows win
        rows += [(b"/d/f0", FileKey(1, 0, 5, 6, 7), b'{"line":"again"}', [(digest(0), 5)])]
        last = count - 1
        rows.insert(last, (b"/d/f%d" % last, FileKey(1, last, 5, 6, 7), b'{"line":"early"}',
                           []))
    cache.put_files(rows, pending=pending)
    if pending:
        assert cache.get_file(b"/d/f0", FileKey(1, 0, 5, 6, 7)) is None
        cache.commit_pending_files()
    for i in range(1, count):
        hit = cache.get_file(b"/d/f%d" % i, FileKey(1, i, 5, 6, 7))
        assert hit is not None and hit.line == b'{"line":%d}' % i, i
    first = cache.get_file(b"/d/f0", FileKey(1, 0, 5, 6, 7))
    assert (first.line, first.chunks) == (b'{"line":"again"}', [(digest(0), 5)]) if count \
        else first is None
    assert cache.db.execute("SELECT count(*) FROM files").fetchone()[0] == count


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


def test_a_stored_packs_chunk_rows_join_the_index_in_groups_and_before_any_use(
        tmp_path: Path, monkeypatch) -> None:
    """add_pack_rows stages a pack's rows; they join ``chunks`` once enough packs wait,
    and before the index is read or written otherwise, committed or closed: every
    lookup sees them, a later pack's location of a chunk wins as it did, and a run
    killed with rows staged leaves a consistent cache without them."""
    from s3archive.archive.run_index import PackRows
    monkeypatch.setattr(local_cache, "_STAGED_PACKS", 3)
    path = tmp_path / "c.sqlite"
    cache = LocalCache(path)
    packs = [pack_key(n) for n in range(5)]

    def rows(pack: str, numbers: range) -> PackRows:
        return PackRows(pack, [ChunkLocation(digest(n), pack, n, 10, 20, "zstd") for n in numbers])

    def committed() -> int:  # what another connection (the next run's) sees
        other = LocalCache(path)
        try:
            return other.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        finally:
            other.db.close()

    cache.add_pack_rows(rows(packs[0], range(0, 100)))
    cache.add_pack_rows(rows(packs[1], range(50, 150)))  # 50..99 again: this pack's win
    assert committed() == 0, "staged"
    assert cache.get_chunk(digest(70)).pack == packs[1]  # (joined first)
    assert committed() == 150
    cache.add_pack_rows(rows(packs[2], range(200, 300)))
    cache.add_chunks([ChunkLocation(digest(250), packs[4], 1, 2, 3, "raw")])  # joined first
    assert cache.get_chunk(digest(250)).pack == packs[4]
    cache.add_pack_rows(rows(packs[3], range(300, 400)))
    cache.add_pack_rows(rows(packs[0], range(400, 500)))
    assert committed() == 250
    cache.add_pack_rows(rows(packs[1], range(500, 600)))  # the third pack waiting: joined
    assert committed() == 550
    cache.add_pack_rows(rows(packs[2], range(600, 700)))
    assert set(cache.get_chunks([digest(n) for n in range(700)])) == \
        {digest(n) for n in range(700) if not 150 <= n < 200}
    assert committed() == 650
    cache.add_pack_rows(rows(packs[3], range(700, 800)))
    # killed now (the connection gone without a word): the next run finds the rows
    # joined before, none of those staged, and a cache it can use
    cache.db.close()
    again = LocalCache(path)
    assert again.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert again.get_chunk(digest(750)) is None and again.get_chunk(digest(650)) is not None
    again.add_pack_rows(rows(packs[3], range(700, 800)))
    again.close()  # closed: joined
    assert committed() == 750


def test_a_pack_lock_is_only_ever_lengthened_for_the_same_version(cache: LocalCache) -> None:
    cache.add_pack(CachedPack(pack_key(1), "v1", 10, "GOVERNANCE", T0 + timedelta(days=9)))
    cache.add_pack(CachedPack(pack_key(1), "v1", 10, "GOVERNANCE", T0 + timedelta(days=3)))
    assert cache.get_pack(pack_key(1)).retain_until == T0 + timedelta(days=9)
    cache.add_pack(CachedPack(pack_key(1), "v2", 10, "GOVERNANCE", T0 + timedelta(days=1)))
    assert cache.get_pack(pack_key(1)).version_id == "v1", "an older-locked version never wins"


SCHEMA_2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE packs (key TEXT PRIMARY KEY, version_id TEXT NOT NULL, size INTEGER NOT NULL,
    lock_mode TEXT, retain_until TEXT NOT NULL);
CREATE TABLE chunks (hash BLOB PRIMARY KEY, pack TEXT NOT NULL, offset INTEGER NOT NULL,
    stored INTEGER NOT NULL, size INTEGER NOT NULL, encoding TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX chunks_by_pack ON chunks (pack);
CREATE TABLE files (path BLOB PRIMARY KEY, dev INTEGER, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, chunks BLOB NOT NULL,
    line BLOB NOT NULL) WITHOUT ROWID;
PRAGMA user_version=2;
"""


def test_a_cache_of_the_older_schema_is_dropped_and_then_rebuilt(tmp_path: Path) -> None:
    import sqlite3
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as old:
        old.executescript(SCHEMA_2)
        old.execute("INSERT INTO packs VALUES (?, 'v', 1, NULL, '2031-01-01T00:00:00Z')",
                    (pack_key(1),))
        old.execute("INSERT INTO files VALUES (?, 1, 2, 3, 4, 5, x'', ?)",
                    (b"/secret/old-path", b'{"path":"/secret/old-path"}'))
    cache = LocalCache(path)
    try:
        assert cache.is_empty(), "an old schema is not read: the archiver rebuilds the cache"
        assert cache.rebuild_from_manifest(manifest()) == 1
        assert cache.get_chunk(digest(3)) == ChunkLocation(digest(3), pack_key(2), 20, 5, 5, "raw")
        assert cache.get_file(b"/a", FileKey(1, 11, 30, 2, 3)) is not None
    finally:
        cache.close()
    assert b"/secret/old-path" not in path.read_bytes(), "the old rows are gone from the pages"
    with sqlite3.connect(path) as reopened:
        assert reopened.execute("PRAGMA user_version").fetchone()[0] == 3


def test_a_rebuild_that_fails_midway_leaves_the_cache_empty(cache: LocalCache) -> None:
    source = manifest()

    def entries_then_damage():
        yield from source.entries[:2]
        raise ValueError("a damaged node")

    with pytest.raises(ValueError):
        cache.rebuild(source.header, source.packs, entries_then_damage())
    assert cache.is_empty() and cache.get_chunk(digest(1)) is None
    assert cache.get_file(b"/a", FileKey(1, 11, 30, 2, 3)) is None
    assert cache.rebuild_from_manifest(source) == 1, "and can be rebuilt after"


def test_rebuild_takes_a_stream_in_batches(cache: LocalCache, monkeypatch) -> None:
    import s3archive.archive.local_cache as module
    monkeypatch.setattr(module, "_ROWS_BATCH", 64)
    source = manifest()
    drained: list[int] = []

    def entries():
        for n in range(1000):
            yield Entry(b"/d/f%04d" % n, "file", 0o644, 0, 0, 2, size=10, ino=n, ctime_ns=3,
                        chunks=[ChunkRef(digest(n), 10, n % 2, n, 8, "zstd")])

    def metadata():
        drained.append(1)
        return [ChunkRef(digest(5000 + len(drained)), 9, 1, 0, 9, "raw")]

    assert cache.rebuild(source.header, source.packs, entries(), (), metadata) == 1000
    assert len(drained) > 10, "the metadata read so far goes with each batch"
    assert len(cache.get_chunks([digest(n) for n in range(1000)])) == 1000
    assert cache.get_chunk(digest(5001)) is not None
    hit = cache.get_file(b"/d/f0999", FileKey(7, 999, 10, 2, 3))
    assert hit is not None and hit.chunks == [(digest(999), 10)]


@pytest.mark.parametrize("path", [b"/plain/name", b"/bad/\xff\xfe-name", b"/d/x"])
def test_a_file_line_is_given_back_exactly(cache: LocalCache, path: bytes) -> None:
    from s3archive.format.manifest_codec import dumps, encode_entry
    entry = Entry(path, "file", 0o640, 5, 6, 7, user="u", group="g", size=12, ino=8,
                  ctime_ns=9, xattrs={"user.a": b"\x00\x01"}, extents=[(0, 4), (8, 4)])
    line = dumps(encode_entry(entry, with_chunks=False))[:-1]
    key = FileKey(1, 8, 12, 7, 9)
    cache.put_files([(path, key, line, [(digest(1), 12)])])
    odd = b'{"type":"entry","path":"elsewhere","size":99}'  # fields that differ stay in
    cache.put_files([(b"/d/odd", key, odd, [])])
    hit, other = cache.get_file(path, key), cache.get_file(b"/d/odd", key)
    assert hit is not None and json.loads(hit.line) == json.loads(line)
    assert other is not None and json.loads(other.line) == json.loads(odd)


def test_file_rows_share_their_attributes(cache: LocalCache) -> None:
    import sqlite3
    rows = [(b"/d%d/f%d" % (n % 7, n), FileKey(1, n, 5, 6, 7),
             b'{"type":"entry","path":"/d%d/f%d","kind":"file","mode":"0644","uid":0,"gid":0,'
             b'"mtime_ns":6,"size":5,"ino":%d,"ctime_ns":7}' % (n % 7, n, n), [(digest(n), 5)])
            for n in range(300)]
    cache.put_files(rows)
    cache.commit()
    with sqlite3.connect(cache.path) as db:
        assert db.execute("SELECT count(*) FROM attrs").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM dirs").fetchone()[0] == 7
    assert all(cache.get_file(p, k).line == line for p, k, line, _ in rows)


def test_file_rows_are_read_by_pages_of_a_directory_in_any_order(cache: LocalCache) -> None:
    """get_file reads a page of a directory's rows at once; every answer is still
    exact: names asked out of order, across page ends, in nested directories asked
    in between, absent names, and rows changed since a page was read."""
    import random

    from s3archive.archive import local_cache

    count = local_cache._FILE_PAGE * 2 + 7
    names = [b"f%04d" % i for i in range(0, count * 2, 2)]  # odd numbers are absent
    rows = [(b"/d/" + n, FileKey(1, i, 5, 6, 7), b'{"line":%d}' % i, [(digest(i), 5)])
            for i, n in enumerate(names)]
    rows += [(b"/d/sub/" + n, FileKey(1, 9000 + i, 5, 6, 7), b'{"sub":%d}' % i, [])
             for i, n in enumerate(names[:40])]
    cache.put_files(rows)

    def ask(path: bytes, ino: int) -> bytes | None:
        hit = cache.get_file(path, FileKey(1, ino, 5, 6, 7))
        return hit.line if hit is not None else None

    for i, name in enumerate(names):  # walk order, a subdirectory visited midway
        assert ask(b"/d/" + name, i) == b'{"line":%d}' % i
        assert ask(b"/d/f%04d" % (2 * i + 1), i) is None
        if i == 300:
            for j, sub in enumerate(names[:40]):
                assert ask(b"/d/sub/" + sub, 9000 + j) == b'{"sub":%d}' % j
    order = list(enumerate(names))
    random.Random(5).shuffle(order)
    for i, name in order:
        assert ask(b"/d/" + name, i) == b'{"line":%d}' % i
        assert ask(b"/d/" + name, i + 1) is None, "another inode: not this row"
    assert ask(b"/d/zzz", 0) is None and ask(b"/d/", 0) is None and ask(b"/e/f0000", 0) is None
    # a row written since the page was read is seen; one deleted is gone
    cache.put_files([(b"/d/f0001", FileKey(1, 77, 5, 6, 7), b'{"new":1}', [])])
    assert ask(b"/d/f0001", 77) == b'{"new":1}'
    cache.put_files([(b"/d/f0003", FileKey(1, 78, 5, 6, 7), b'{"new":3}', [])], pending=True)
    assert ask(b"/d/f0003", 78) is None
    cache.commit_pending_files()
    assert ask(b"/d/f0003", 78) == b'{"new":3}'
    cache.forget_files()
    assert ask(b"/d/f0000", 0) is None and ask(b"/d/f0003", 78) is None


def test_a_plain_path_joins_as_json_would_write_it(cache: LocalCache) -> None:
    for path in (b"/a b/c", b'/q"uote', b"/back\\slash", b"/ctl\x01", b"/del\x7f",
                 "/caf\u00e9".encode(), b"/bad\xff"):
        key = FileKey(1, 2, 3, 4, 5)
        obj = {"type": "entry", "kind": "file", "mode": "0644", "mtime_ns": 4, "size": 3,
               "ino": 2, "ctime_ns": 5}
        try:
            obj["path"] = path.decode("utf-8")
        except UnicodeDecodeError:
            import base64
            obj["path_b64"] = base64.b64encode(path).decode("ascii")
        line = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        cache.put_files([(path, key, line, [])])
        hit = cache.get_file(path, key)
        assert hit is not None and json.loads(hit.line) == obj, path


def test_a_plain_file_line_made_as_bytes_is_the_encoded_and_split_line() -> None:
    """plain_file_line (a content worker's per-file line and row, made without JSON)
    gives exactly the bytes encode_entry and split_line give, or None; it is taken
    for the usual file and declined for every entry that is not plain."""
    import random

    from s3archive.format.manifest_codec import dumps, encode_entry
    rng = random.Random(3)
    paths = [b"/plain/name", b"/a b/c", b'/q"uote', b"/back\\slash", b"/ctl\x01", b"/del\x7f",
             "/caf\u00e9".encode(), b"/bad\xff", b"/t\tab"]
    owners = [None, "root", 'we"ird', "\u00fcn\u00efcode", "back\\slash", "ctl\x02"]
    taken = declined = 0
    for number in range(3000):
        path = rng.choice(paths)
        entry = Entry(path, "file", rng.choice([0o644, 0o600, 0o4755, 0o7777, 0]),
                      rng.choice([0, 1000, (1 << 32) - 1]), rng.choice([0, 5]),
                      rng.choice([0, -1, 1 << 62]), user=rng.choice(owners),
                      group=rng.choice(owners), size=rng.choice([0, 1, 5000]),
                      ino=rng.choice([1, 1 << 40]), ctime_ns=rng.choice([2, 1 << 61]))
        odd = rng.randrange(12)
        if odd == 0:
            entry.xattrs = {"user.a": b"\x00"}
        elif odd == 1:
            entry.extents = [(0, entry.size)]
        elif odd == 2:
            entry.acl_access = "u::rw-,u:5:r--,g::r--,m::r--,o::---"
        elif odd == 3:
            entry.kind, entry.target = "hardlink", b"/first"
        key = rng.choice([None, FileKey(1, entry.ino, entry.size, entry.mtime_ns, entry.ctime_ns),
                          FileKey(1, entry.ino, entry.size + 1, entry.mtime_ns, entry.ctime_ns),
                          FileKey(1, entry.ino, entry.size, entry.mtime_ns, 7)])
        made = local_cache.plain_file_line(entry, key)
        plain = odd > 3 and path in (b"/plain/name", b"/a b/c", b"/del\x7f")
        assert (made is not None) == plain, (entry, made)
        if made is None:
            declined += 1
            continue
        taken += 1
        line = dumps(encode_entry(entry, with_chunks=False))[:-1]
        assert made[0] == line
        assert made[1] == (None if key is None else local_cache.split_line(path, key, line))
        if key is not None:  # (a column that differs is kept in the rest, ahead of them)
            joined = local_cache.join_line(path, key, made[1])
            assert json.loads(joined) == json.loads(line)
            assert joined == line or (key.size, key.ctime_ns) != (entry.size, entry.ctime_ns)
    assert taken > 500 and declined > 1000
