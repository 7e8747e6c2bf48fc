"""The local cache (SQLite): an optimisation, never the truth.

* ``files``: (path, dev, inode, size, mtime, ctime) -> chunk list, so an
  unchanged file is not read again;
* ``chunks``: chunk hash -> pack, offset, stored length, encoding (dedup);
* ``packs``: pack key -> version id, size, lock mode and the retain-until
  known to be in force;
* ``dir_trees``: format 2, a directory's digest -> its tree nodes, so an
  unchanged directory is not encoded again (archive/dir_cache.py).

A stored pack's chunk rows wait in a temporary table and join ``chunks`` in
key order a few dozen packs at a time (``add_pack_rows``): a run killed meanwhile
leaves a consistent cache that lacks them (those chunks are stored again).

When it is lost it is rebuilt from the latest run of this host, streamed
(``rebuild``: a format-2 run's tree is walked, rows go in in batches).  A pack
whose lock may lapse soon is forgotten with everything that points into it,
so no run reuses data that lifecycle might delete.

Rows are compact (schema 3): a chunk is its 32-byte hash and integers (its
pack a number into ``pack_names``); a file is keyed by its directory's number
and its name, and keeps of its manifest line only what its columns do not
hold, as a number into ``attrs`` (the same owner, group and mode for most
files: stored once).  An encrypting host keeps no path, name or metadata in
clear: a row's directory is named by an HMAC of the directory's path and the
row by an HMAC of the file's, and it holds the rest of the line sealed
(``FileCipher``); a directory's rows are read at once and found by inode.  A
cache of an older schema is dropped and rebuilt on open (a cache is disposable).
"""

from __future__ import annotations

import array
import base64
import bisect
import functools
import json
import os
import re
import sqlite3
import struct
import sys
import threading
from dataclasses import dataclass
from operator import itemgetter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple, TypeVar

from s3archive.archive.packer import ChunkId, ChunkLocation
from s3archive.archive.run_index import PackRows
from s3archive.archive.sql_rows import insert_rows
from s3archive.clock import isoformat, parse_iso
from s3archive.format.manifest_codec import dumps, encode_entry
from s3archive.format.model import ENCODINGS, FILE, ChunkRef, Entry, Header, Manifest, PackRef

if TYPE_CHECKING:
    from s3archive.archive.encryption import FileCipher

SCHEMA_VERSION = 3
_TABLES = ("meta", "packs", "pack_names", "chunks", "files", "attrs", "dirs", "dir_trees",
           "group_packs", "group_seen")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pack_names (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS packs (
    id INTEGER PRIMARY KEY, version_id TEXT NOT NULL, size INTEGER NOT NULL,
    lock_mode TEXT, retain_until TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    hash BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL,
    stored INTEGER NOT NULL, size INTEGER NOT NULL, encoding INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirs (id INTEGER PRIMARY KEY, path BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS attrs (id INTEGER PRIMARY KEY, body BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS files (
    dir INTEGER NOT NULL, name BLOB NOT NULL, dev INTEGER, ino INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    chunks BLOB NOT NULL, attrs INTEGER, sealed BLOB,
    PRIMARY KEY (dir, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dir_trees (
    name BLOB PRIMARY KEY, digest BLOB NOT NULL, row BLOB NOT NULL) WITHOUT ROWID;
-- the dedup group (archive/group_index.py): packs other hosts uploaded, and the
-- group index objects already read
CREATE TABLE IF NOT EXISTS group_packs (key TEXT PRIMARY KEY, host TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_seen (key TEXT PRIMARY KEY, day TEXT NOT NULL) WITHOUT ROWID;
"""
# a chunk of a file row's list: its hash and size (at most 8 MiB, format/limits.py)
CHUNK_ITEM = struct.Struct(">32sI")
_BATCH = 500  # hashes in one ``IN (...)``
_ROWS_BATCH = 2048  # rows written at once while rebuilding
# a stored pack's chunk rows wait in a temporary table (add_pack_rows) and join the chunk
# index, in key order, once this many rows or packs wait, or before the index is read
# or written otherwise, committed or closed: a pack's rows alone, random hashes, touched
# a page of the index each and wrote them all to the WAL (at 1M chunks ~20 MB a pack,
# 0.1 s of CPU).  A run killed before they join loses them: the next run stores those
# chunks again (at most these many), and the cache stays consistent.
_STAGED_ROWS = 1 << 17
_STAGED_PACKS = 16  # (at 16 MiB packs: 256 MiB stored again after a kill, at most)
_MEMO = 4096  # directory and attribute numbers remembered
_FILE_PAGE = 256  # file rows of one directory read at once, in name order
_FILE_PAGES = 64  # at most this many directories' pages are kept (the walk's ancestors)
# an encrypting host's rows of one directory are read at once (their names are HMACs, in
# no order the walk can use) when there are at most _SEALED_PAGE of them, else one by one;
# the pages kept (the walk's ancestors, nearest first) hold at most _SEALED_KEPT rows
_SEALED_PAGE = 4096
_SEALED_KEPT = 8192
# how an encrypting host's rows are keyed and sealed: rows written otherwise (before,
# every row in directory 0, named by the HMAC of its path; then lines sealed with
# ChaCha20-Poly1305, "by-directory") are dropped (LocalCache.use_cipher)
_SEALED_LAYOUT = "by-directory stream"
# the line's fields a file row keeps in columns (absent ones are listed under _ABSENT)
_COLUMNS = ("mtime_ns", "size", "ino", "ctime_ns")
_ENCODING_NUMBERS = {name: number for number, name in enumerate(ENCODINGS)}
_ABSENT = "\x00absent"

# Packs in a bucket without Object Lock (allow_unlocked_bucket) have no lease
# to renew: the cache treats them as lasting, and nothing protects them.
UNLOCKED_UNTIL = datetime(9999, 12, 31, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class CachedPack:
    key: str
    version_id: str
    size: int
    lock_mode: str | None
    retain_until: datetime


class CachedFile(NamedTuple):
    """An unchanged file's row (a tuple: a no-change run makes one a file)."""

    line: bytes  # the file's manifest line without chunks (JSON, no newline)
    listed: bytes  # its chunks in file order, packed (CHUNK_ITEM each)

    @property
    def chunks(self) -> list[ChunkId]:
        return unpack_chunk_list(self.listed)

    def spooled_chunks(self) -> bytes:
        """The chunks as the entry spool lists them (``hash:size,...``, ASCII)."""
        listed = self.listed
        if len(listed) == CHUNK_ITEM.size:  # (most files: one chunk)
            return b"%s:%d" % (listed[:32].hex().encode("ascii"),
                               int.from_bytes(listed[32:], "big"))
        return ",".join([f"{digest.hex()}:{size}"
                         for digest, size in CHUNK_ITEM.iter_unpack(listed)]).encode("ascii")


class FileKey(NamedTuple):
    """What identifies a file's content as unchanged (a tuple: made once a file)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int


CHUNK_FILTER_LIMIT = 1 << 20  # chunks in a run's ChunkFilter: 8 MiB at most


class ChunkFilter:
    """Which chunks the index held when the run started: 8 bytes a chunk.  The index
    also holds the dedup group's chunks, so a cache of more than
    :data:`CHUNK_FILTER_LIMIT` gets a filter that holds nothing and answers yes
    (``everything``): every question goes to the index, and memory stays bounded.

    ``may_contain`` answers without a lock or a query; a yes (or a rare false
    positive) is confirmed by a lookup in the index.
    """

    def __init__(self, prefixes: Iterable[bytes], presorted: bool = False,
                 everything: bool = False):
        values = (int.from_bytes(p, "big") for p in prefixes)
        # presorted (the index read in key order): no list of a Python int per chunk
        self._sorted = array.array("Q", values if presorted else sorted(values))
        self.everything = everything

    def __len__(self) -> int:
        return len(self._sorted)

    def extend_sorted(self, prefixes: bytes) -> None:
        """Add prefixes given as 8-byte big-endian values, one after the other, each
        no smaller than those already held."""
        more = array.array("Q", prefixes)
        if sys.byteorder == "little":
            more.byteswap()
        self._sorted.extend(more)

    def may_contain(self, digest: str) -> bool:
        if self.everything:
            return True
        value = int(digest[:16], 16)
        index = bisect.bisect_left(self._sorted, value)
        return index < len(self._sorted) and self._sorted[index] == value


# questions a DeferredChunkFilter answers yes (each confirmed by a lookup, ~5 us) before
# it is built (~1 us a chunk of the index): a 1 % change of a large host asks fewer
FILTER_AFTER = 16384
_FILTER_PAGE = 65536  # hashes read at once while a ChunkFilter is built


class DeferredChunkFilter:
    """A :class:`ChunkFilter` built on the :data:`FILTER_AFTER`-th question, not
    before: until then every answer is yes, confirmed by a lookup in the index as a
    false positive is.  A run that asks few questions (an unchanged host asks only of
    its new metadata blobs) does not read its whole chunk index at start.  A filter
    built later also knows the chunks the run has stored meanwhile: more yeses."""

    def __init__(self, build: Callable[[], ChunkFilter], after: int | None = None):
        self._build = build
        self._after = FILTER_AFTER if after is None else after
        self._asked = 0
        self._built: ChunkFilter | None = None
        self._lock = threading.Lock()

    def may_contain(self, digest: str) -> bool:
        built = self._built
        if built is None:
            with self._lock:
                if self._built is None:
                    self._asked += 1
                    if self._asked <= self._after:
                        return True
                    self._built = self._build()
                built = self._built
        return built.may_contain(digest)


@dataclass(slots=True)
class _FilePage:
    """The file rows of one directory with names from ``low`` to ``high`` (None: to
    the last), by name: a name in that range and not in ``rows`` has no row."""

    low: bytes
    high: bytes | None
    rows: dict[Any, tuple[Any, ...]]  # an encrypting host's: by inode (LocalCache._sealed_page)
    # an encrypting host's directory of more than _SEALED_PAGE rows (its number): its
    # rows are asked one at a time (0: ``rows`` holds them all)
    one_by_one: int = 0
    # an encrypting host's rows of an inode that ``rows`` has already (hard links, a
    # deleted file's row whose inode was used again): every one is tried
    twins: dict[int, list[tuple[Any, ...]]] | None = None

    def covers(self, name: bytes) -> bool:
        return self.low <= name and (self.high is None or name <= self.high)


def cache_path(cache_dir: Path, bucket: str, prefix: str, host: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{bucket}-{prefix}-{host}".replace("/", "_"))
    return cache_dir / f"{name}.sqlite"


def pack_chunk_list(chunks: Iterable[ChunkId]) -> bytes:
    return b"".join(CHUNK_ITEM.pack(bytes.fromhex(h), size) for h, size in chunks)


def unpack_chunk_list(blob: bytes) -> list[ChunkId]:
    return [ChunkId(h.hex(), size) for h, size in CHUNK_ITEM.iter_unpack(blob)]


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(self: "LocalCache", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class LocalCache:
    """One SQLite database per bucket/prefix/host; thread-safe (one lock)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.RLock()
        self._cipher: FileCipher | None = None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        previous = os.umask(0o077)  # the database, its -wal and -shm: paths, xattrs
        try:
            self._open(path)
        finally:
            os.umask(previous)

    def _open(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            # an older schema: dropped (and compacted, no page keeps its rows); the
            # archiver finds the cache empty and rebuilds it from the latest run
            self.db.executescript("".join(f"DROP TABLE IF EXISTS {name};" for name in _TABLES)
                                  + "DROP INDEX IF EXISTS chunks_by_pack;")
            self.db.execute("VACUUM")
        self.db.executescript(_SCHEMA)
        # rows of files read by a run that has not committed yet (per connection)
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS files_pending AS "
                        "SELECT * FROM files WHERE 0")
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS dir_trees_pending (name BLOB PRIMARY "
                        "KEY, digest BLOB NOT NULL, row BLOB NOT NULL) WITHOUT ROWID")
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS dir_trees_seen (name BLOB PRIMARY KEY) "
                        "WITHOUT ROWID")
        # stored packs' chunk rows not yet in ``chunks`` (_STAGED_ROWS)
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS chunks_staged (hash BLOB PRIMARY KEY, "
                        "pack INTEGER NOT NULL, offset INTEGER NOT NULL, stored INTEGER NOT NULL, "
                        "size INTEGER NOT NULL, encoding INTEGER NOT NULL) WITHOUT ROWID")
        self._staged_rows = 0
        self._staged_packs = 0
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        os.chmod(path, 0o600)
        self._pack_ids: dict[str, int] = {}
        self._pack_keys: dict[int, str] = {}
        self._dir_ids: dict[bytes, int] = {}
        self._attr_ids: dict[bytes, int] = {}
        self._attr_bodies: dict[int, bytes] = {}
        # of a plain rest (_is_plain_rest): its fields as they go into a line
        self._attr_inner: dict[int, bytes] = {}
        self._file_pages: dict[bytes, _FilePage] = {}  # by directory

    @_locked
    def close(self) -> None:
        try:
            self._join_staged()
        finally:
            self.db.close()

    # -- transactions
    @_locked
    def begin(self) -> None:
        self._join_staged()
        self.db.execute("BEGIN")

    @_locked
    def commit(self) -> None:
        self._join_staged()
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    # -- meta
    @_locked
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    @_locked
    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @_locked
    def has_files(self) -> bool:
        """Whether any file row is remembered (a first run's cache has none)."""
        return self.db.execute("SELECT 1 FROM files LIMIT 1").fetchone() is not None

    @_locked
    def has_dirs(self) -> bool:
        """Whether any directory's tree is remembered (a first run's cache has none;
        during a run rows are only dropped, never added: they are added at commit)."""
        return self.db.execute("SELECT 1 FROM dir_trees LIMIT 1").fetchone() is not None

    @_locked
    def is_empty(self) -> bool:
        return self.db.execute("SELECT 1 FROM packs LIMIT 1").fetchone() is None

    # -- pack numbers
    def _pack_id(self, key: str, create: bool = True) -> int | None:
        number = self._pack_ids.get(key)
        if number is not None:
            return number
        row = self.db.execute("SELECT id FROM pack_names WHERE key=?", (key,)).fetchone()
        if row is None:
            if not create:
                return None
            row = (self.db.execute("INSERT INTO pack_names (key) VALUES (?)", (key,)).lastrowid,)
        self._remember(self._pack_ids, key, row[0])
        self._remember(self._pack_keys, row[0], key)
        return row[0]

    def _pack_key(self, number: int) -> str:
        key = self._pack_keys.get(number)
        if key is None:
            key = self.db.execute("SELECT key FROM pack_names WHERE id=?", (number,)).fetchone()[0]
            self._remember(self._pack_keys, number, key)
        return key

    @staticmethod
    def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
        if len(memo) >= _MEMO:
            memo.clear()
        memo[key] = value

    # -- packs
    @_locked
    def add_pack(self, pack: CachedPack) -> None:
        number = self._pack_id(pack.key)
        self.db.execute(
            "INSERT INTO packs VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "version_id=excluded.version_id, size=excluded.size, lock_mode=excluded.lock_mode, "
            "retain_until=max(packs.retain_until, excluded.retain_until) "
            "WHERE packs.version_id = excluded.version_id OR excluded.retain_until >= packs.retain_until",
            (number, pack.version_id, pack.size, pack.lock_mode, isoformat(pack.retain_until)))

    @_locked
    def get_pack(self, key: str) -> CachedPack | None:
        number = self._pack_id(key, create=False)
        row = self.db.execute("SELECT version_id, size, lock_mode, retain_until FROM packs "
                              "WHERE id=?", (number,)).fetchone() if number is not None else None
        return CachedPack(key, row[0], row[1], row[2], parse_iso(row[3])) if row else None

    @_locked
    def forget_packs(self, keys: Iterable[str]) -> None:
        """Drop packs and every chunk and file entry that points into them (one scan of
        the chunk index for them all: no index by pack, it would double the chunks' size)."""
        self._join_staged()
        numbers = {n for key in keys if (n := self._pack_id(key, create=False)) is not None}
        if not numbers:
            return
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS forgotten (id INTEGER PRIMARY KEY)")
        self.db.execute("DELETE FROM forgotten")
        self.db.executemany("INSERT INTO forgotten VALUES (?)", [(n,) for n in numbers])
        hashes = {row[0] for row in self.db.execute(
            "SELECT hash FROM chunks WHERE pack IN (SELECT id FROM forgotten)")}
        self.db.execute("DELETE FROM chunks WHERE pack IN (SELECT id FROM forgotten)")
        self.db.execute("DELETE FROM packs WHERE id IN (SELECT id FROM forgotten)")
        self.db.execute("DELETE FROM pack_names WHERE id IN (SELECT id FROM forgotten)")
        self._pack_ids.clear()
        self._pack_keys.clear()
        if hashes:
            self._forget_files_with(hashes)

    def _forget_files_with(self, hashes: set[bytes]) -> None:
        doomed = []
        for directory, name, blob in self.db.execute("SELECT dir, name, chunks FROM files"):
            for i in range(0, len(blob), CHUNK_ITEM.size):
                if blob[i:i + 32] in hashes:
                    doomed.append((directory, name))
                    break
        self.db.executemany("DELETE FROM files WHERE dir=? AND name=?", doomed)
        self._file_pages.clear()

    @_locked
    def packs_not_locked_in(self, mode: str) -> list[str]:
        return [row[0] for row in self.db.execute(
            "SELECT n.key FROM packs p JOIN pack_names n ON n.id = p.id "
            "WHERE p.lock_mode IS NULL OR p.lock_mode != ?", (mode,))]

    @_locked
    def packs_lapsing_before(self, moment: datetime) -> list[str]:
        return [row[0] for row in self.db.execute(
            "SELECT n.key FROM packs p JOIN pack_names n ON n.id = p.id "
            "WHERE p.retain_until < ?", (isoformat(moment),))]

    # -- chunks
    @_locked
    def add_chunks(self, rows: Iterable[ChunkLocation]) -> None:
        """Many rows (a batch of a rebuild, a pack index's) in a few statements, in
        key order (neighbours share pages: a third cheaper than in pack order)."""
        self._join_staged()
        pack_id, numbers = self._pack_id, _ENCODING_NUMBERS
        insert_rows(
            self.db, "INSERT OR REPLACE INTO chunks", 6,
            sorted([(bytes.fromhex(c.hash), pack_id(c.pack), c.offset, c.stored, c.size,
                     numbers[c.encoding]) for c in rows], key=itemgetter(0)))  # (stable)

    @_locked
    def add_pack_rows(self, rows: PackRows) -> None:
        """A stored pack's chunks (a statement a slice; what :meth:`add_chunks` of them
        does, the rows staged first: :data:`_STAGED_ROWS`)."""
        if not rows.count:
            return
        insert = PackRows.insert_sql("INSERT OR REPLACE", "chunks_staged")
        for parameters in rows.parameters(self._pack_id(rows.key)):
            self.db.execute(insert, parameters)
        self._staged_rows += rows.count
        self._staged_packs += 1
        if self._staged_rows >= _STAGED_ROWS or self._staged_packs >= _STAGED_PACKS:
            self._join_staged()

    def _join_staged(self) -> None:
        """The staged chunk rows into ``chunks``, in key order, as one transaction (or
        in the one open): a stored pack's rows, staged later, replace any before."""
        if not self._staged_packs:
            return
        alone = not self.db.in_transaction
        if alone:
            self.db.execute("BEGIN")
        try:
            self.db.execute("INSERT OR REPLACE INTO chunks SELECT * FROM chunks_staged")
            self.db.execute("DELETE FROM chunks_staged")
        except BaseException:
            if alone:
                self.db.execute("ROLLBACK")
            raise
        if alone:
            self.db.execute("COMMIT")
        self._staged_rows = self._staged_packs = 0

    def _location(self, digest: str, row: tuple[int, int, int, int, int]) -> ChunkLocation:
        return ChunkLocation(digest, self._pack_key(row[0]), row[1], row[2], row[3],
                             ENCODINGS[row[4]])

    @_locked
    def get_chunks(self, digests: Iterable[str]) -> dict[str, ChunkLocation]:
        """Many lookups at once (in batches of 500)."""
        self._join_staged()
        found: dict[str, ChunkLocation] = {}
        wanted = sorted(bytes.fromhex(d) for d in digests)  # neighbours share pages
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start:start + _BATCH]
            marks = ",".join("?" * len(batch))
            for row in self.db.execute("SELECT hash, pack, offset, stored, size, encoding "
                                       f"FROM chunks WHERE hash IN ({marks})", batch).fetchall():
                digest = row[0].hex()
                found[digest] = self._location(digest, row[1:])
        return found

    @_locked
    def chunk_filter(self) -> "ChunkFilter":
        """A snapshot of the chunk index, for lookups that need no lock."""
        self._join_staged()
        # counted first: past the limit not even a passing array of it is built
        count = self.db.execute("SELECT count(*) FROM (SELECT 1 FROM chunks LIMIT ?)",
                                (CHUNK_FILTER_LIMIT + 1,)).fetchone()[0]
        if count > CHUNK_FILTER_LIMIT:
            return ChunkFilter((), everything=True)
        # the hashes' first 8 bytes, in key order, a page at a time into the array
        found = ChunkFilter(())
        rows = self.db.execute("SELECT substr(hash, 1, 8) FROM chunks ORDER BY hash")
        while page := rows.fetchmany(_FILTER_PAGE):
            found.extend_sorted(b"".join([row[0] for row in page]))
        return found

    def deferred_chunk_filter(self) -> ChunkFilter | DeferredChunkFilter:
        """:meth:`chunk_filter`, built once a run asks enough to pay for it; an index of
        fewer than :data:`FILTER_AFTER` chunks (a first run's: none) is read now."""
        with self._lock:
            self._join_staged()
            small = self.db.execute("SELECT count(*) FROM (SELECT 1 FROM chunks LIMIT ?)",
                                    (FILTER_AFTER,)).fetchone()[0] < FILTER_AFTER
        return self.chunk_filter() if small else DeferredChunkFilter(self.chunk_filter)

    @_locked
    def forget_files(self) -> None:
        self.db.execute("DELETE FROM files")
        self._file_pages.clear()

    @_locked
    def get_chunk(self, digest: str) -> ChunkLocation | None:
        self._join_staged()
        row = self.db.execute("SELECT pack, offset, stored, size, encoding FROM chunks WHERE hash=?",
                              (bytes.fromhex(digest),)).fetchone()
        return self._location(digest, row) if row else None

    # -- the dedup group (archive/group_index.py)
    @_locked
    def learn_group_pack(self, pack: CachedPack, host: str | None,
                         rows: Iterable[ChunkLocation]) -> None:
        """A pack another host of the group uploaded (``host``), or only a newer lock of
        a pack (``host`` None); its blobs never replace a location already known."""
        self._join_staged()
        self.add_pack(pack)
        if host is not None:
            self.db.execute("INSERT OR IGNORE INTO group_packs VALUES (?, ?)", (pack.key, host))
        insert_rows(
            self.db, "INSERT OR IGNORE INTO chunks", 6,
            [(bytes.fromhex(c.hash), self._pack_id(c.pack), c.offset, c.stored, c.size,
              ENCODINGS.index(c.encoding)) for c in rows])

    @_locked
    def group_pack_host(self, key: str) -> str | None:
        """The host that uploaded a pack learned from the group index, or None."""
        row = self.db.execute("SELECT host FROM group_packs WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    @_locked
    def group_seen(self, keys: Iterable[str]) -> set[str]:
        wanted = list(keys)
        seen: set[str] = set()
        for start in range(0, len(wanted), 500):
            batch = wanted[start:start + 500]
            marks = ",".join("?" * len(batch))
            seen.update(row[0] for row in self.db.execute(
                f"SELECT key FROM group_seen WHERE key IN ({marks})", batch))
        return seen

    @_locked
    def add_group_seen(self, key: str, day: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO group_seen VALUES (?, ?)", (key, day))

    @_locked
    def forget_group_seen_before(self, day: str) -> None:
        self.db.execute("DELETE FROM group_seen WHERE day < ?", (day,))

    # -- files
    def _row_key(self, path: bytes, create: bool) -> tuple[int, bytes] | None:
        """(directory number, name) of a file row: an encrypting host's directory is
        named by an HMAC of its path, and the row by an HMAC of the file's (no path in
        clear)."""
        parent, _, name = path.rpartition(b"/")
        number = self._dir_number(parent, create)
        if number is None:
            return None
        return number, name if self._cipher is None else self._cipher.name(path)

    def _dir_number(self, parent: bytes, create: bool) -> int | None:
        number = self._dir_ids.get(parent)  # by path, in memory only
        if number is None:  # not asked yet (a directory with no rows is remembered as 0)
            stored = parent if self._cipher is None else self._cipher.directory(parent)
            row = self.db.execute("SELECT id FROM dirs WHERE path=?", (stored,)).fetchone()
            number = row[0] if row is not None else 0
            self._remember(self._dir_ids, parent, number)
        if number == 0:
            if not create:
                return None
            stored = parent if self._cipher is None else self._cipher.directory(parent)
            number = self.db.execute("INSERT INTO dirs (path) VALUES (?)", (stored,)).lastrowid
            self._remember(self._dir_ids, parent, number)
        return number

    def _attrs_id(self, body: bytes) -> int:
        number = self._attr_ids.get(body)
        if number is None:
            row = self.db.execute("SELECT id FROM attrs WHERE body=?", (body,)).fetchone()
            if row is None:
                row = (self.db.execute("INSERT INTO attrs (body) VALUES (?)", (body,)).lastrowid,)
            number = row[0]
            self._remember(self._attr_ids, body, number)
        return number

    def _attrs_body(self, number: int) -> bytes | None:
        body = self._attr_bodies.get(number)
        if body is None:
            row = self.db.execute("SELECT body FROM attrs WHERE id=?", (number,)).fetchone()
            if row is None:
                return None
            body = row[0]
            self._remember(self._attr_bodies, number, body)
        return body

    def get_file(self, path: bytes, key: FileKey) -> CachedFile | None:
        """The cached line and chunks of an unchanged file, or None.

        Every chunk of a file row is in the chunk index: ``forget_packs``
        removes the file rows that point into a forgotten pack.
        """
        with self._lock:
            if self._cipher is not None:
                return self._sealed_file(path, key)
            row = self._plain_file_row(path)
            if row is None:
                return None
            # row: dev, ino, size, mtime_ns, ctime_ns, chunks, attrs, sealed
            if row[1:5] != key[1:] or (row[0] is not None and row[0] != key.dev):
                return None
            number = row[6]
            if number is None:
                return None
            inner = self._attr_inner.get(number)
            if inner is None:
                rest = self._attrs_body(number)
                if rest is None:
                    return None
                if not _is_plain_rest(rest):
                    return CachedFile(join_line(path, key, rest), row[5])
                inner = rest[1:-1]
                self._remember(self._attr_inner, number, inner)
            if _PLAIN_PATH.fullmatch(path):  # the usual row: joined as join_line does
                return CachedFile(_PLAIN_LINE % (path, inner, key.mtime_ns, key.size, key.ino,
                                                 key.ctime_ns), row[5])
            return CachedFile(join_line(path, key, b"{" + inner + b"}"), row[5])

    def _plain_file_row(self, path: bytes) -> tuple[Any, ...] | None:
        """The row of ``path`` (plain rows), from a page of its directory's rows:
        the walk asks for a directory's files in name order, so one query serves
        :data:`_FILE_PAGE` of them (names compare as SQLite compares blobs)."""
        parent, _, name = path.rpartition(b"/")
        page = self._file_pages.get(parent)
        if page is None or not page.covers(name):
            row_key = self._row_key(path, create=False)
            if row_key is None:  # no row in this directory
                page = _FilePage(b"", None, {})
            else:
                rows = self.db.execute(
                    "SELECT name, dev, ino, size, mtime_ns, ctime_ns, chunks, attrs, sealed "
                    "FROM files WHERE dir=? AND name>=? ORDER BY name LIMIT ?",
                    (row_key[0], name, _FILE_PAGE)).fetchall()
                page = _FilePage(name, rows[-1][0] if len(rows) == _FILE_PAGE else None,
                                 {row[0]: row[1:] for row in rows})
            # the walk is depth first: only the pages of this directory's ancestors
            # can be asked again (memory: the depth of the walk, not its width)
            self._file_pages = {directory: kept for directory, kept in self._file_pages.items()
                                if parent.startswith(directory + b"/")
                                and len(self._file_pages) < _FILE_PAGES}
            self._file_pages[parent] = page
        return page.rows.get(name)

    def _sealed_file(self, path: bytes, key: FileKey) -> CachedFile | None:
        """``get_file`` of an encrypting host: the row is found by the file's inode
        among its directory's rows, read at once (their names are HMACs, in no order
        a range of the walk's names could use), so no name is computed for a file
        found unchanged or new; a row opens only for its own path and stat
        (``FileCipher.open``), which tells apart rows of one inode (a directory of
        more than :data:`_SEALED_PAGE` rows: asked by name, one query)."""
        cipher = self._cipher
        assert cipher is not None
        parent = path.rpartition(b"/")[0]
        page = self._file_pages.get(parent)
        if page is None:
            page = self._sealed_page(parent)
        if page.one_by_one:
            first = self.db.execute(
                "SELECT dev, ino, size, mtime_ns, ctime_ns, chunks, attrs, sealed FROM files "
                "WHERE dir=? AND name=?", (page.one_by_one, cipher.name(path))).fetchone()
        else:
            first = page.rows.get(key.ino)
        if first is None:
            return None
        stat = key[1:]
        for row in (first,) if page.twins is None else (first, *page.twins.get(key.ino, ())):
            # row: dev, ino, size, mtime_ns, ctime_ns, chunks, attrs, sealed
            if row[1:5] == stat and (row[0] is None or row[0] == key.dev):
                rest = cipher.open(path, stat, row[7] or b"")
                if rest is not None:
                    return CachedFile(join_line(path, key, rest), row[5])
        return None

    def _sealed_page(self, parent: bytes) -> _FilePage:
        number = self._dir_number(parent, create=False)
        rows = [] if number is None else self.db.execute(
            "SELECT name, dev, ino, size, mtime_ns, ctime_ns, chunks, attrs, sealed "
            "FROM files WHERE dir=? LIMIT ?", (number, _SEALED_PAGE + 1)).fetchall()
        if number is not None and len(rows) > _SEALED_PAGE:
            page = _FilePage(b"", None, {}, one_by_one=number)
        else:  # by inode (the name's HMAC is computed only to put a row)
            page = _FilePage(b"", None, {row[2]: row[1:] for row in rows})
            if len(page.rows) < len(rows):
                page.twins = {}
                for row in rows:
                    if page.rows[row[2]] != row[1:]:
                        page.twins.setdefault(row[2], []).append(row[1:])
        # the walk is depth first: keep the pages of this directory's ancestors only,
        # the nearest first, as long as they hold at most _SEALED_KEPT rows in all
        kept, rows_kept = {parent: page}, len(page.rows)
        for directory in sorted((d for d in self._file_pages if parent.startswith(d + b"/")),
                                key=len, reverse=True):
            rows_kept += len(self._file_pages[directory].rows)
            if rows_kept > _SEALED_KEPT or len(kept) >= _FILE_PAGES:
                break
            kept[directory] = self._file_pages[directory]
        self._file_pages = kept
        return page

    @_locked
    def use_cipher(self, cipher: "FileCipher | None") -> None:
        """Key file rows by HMAC and seal their lines (an encrypting host keeps no
        path or metadata of a file it no longer has).  Rows written otherwise (plain,
        keyed another way, or under another secret) are dropped (and the database
        compacted, so no page keeps them)."""
        label = f"{cipher.label} {_SEALED_LAYOUT}" if cipher is not None else "plain"
        if self.get_meta("file_rows") not in (None, label):
            self.db.execute("PRAGMA secure_delete=ON")
            self.db.execute("DELETE FROM files")
            self.db.execute("DELETE FROM dirs")
            self.db.execute("DELETE FROM attrs")
            self.db.execute("DELETE FROM dir_trees")
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._dir_ids.clear()
            self._file_pages.clear()
            self._attr_ids.clear()
            self._attr_bodies.clear()
            self._attr_inner.clear()
        self.set_meta("file_rows", label)
        self._cipher = cipher

    def put_file(self, path: bytes, key: FileKey, line: bytes,
                 chunks: list[ChunkId], pending: bool = False) -> None:
        """Remember a file; ``pending`` rows count only after ``commit_pending_files``."""
        self.put_files([(path, key, line, chunks)], pending)

    def put_files(self, rows: list[tuple[bytes, FileKey, bytes, list[ChunkId]]],
                  pending: bool = False) -> None:
        self.put_split_files([(path, (key.dev, key.ino, key.size, key.mtime_ns, key.ctime_ns),
                               split_line(path, key, line), pack_chunk_list(chunks))
                              for path, key, line, chunks in rows], pending)

    @_locked
    def put_split_files(self, rows: list[tuple[bytes, tuple[int, int, int, int, int], bytes,
                                               bytes]], pending: bool = False) -> None:
        """``put_files`` of rows split already: (path, (dev, ino, size, mtime_ns,
        ctime_ns), :func:`split_line` of its line, :func:`pack_chunk_list` of its
        chunks) each (as a content worker returns them)."""
        table = "files_pending" if pending else "files"
        cipher = self._cipher
        values = []
        for path, (dev, ino, size, mtime_ns, ctime_ns), rest, chunks in rows:
            row_key = self._row_key(path, create=True)
            assert row_key is not None
            if cipher is not None:
                attrs, sealed = None, cipher.seal(path, (ino, size, mtime_ns, ctime_ns), rest)
            else:
                attrs, sealed = self._attrs_id(rest), None
            values.append((*row_key, dev, ino, size, mtime_ns, ctime_ns, chunks, attrs, sealed))
        # (a statement a group of rows, not a row: sql_rows.py)
        insert_rows(self.db, f"INSERT OR REPLACE INTO {table}", 10, values)
        if not pending:
            self._file_pages.clear()

    @_locked
    def commit_pending_files(self) -> None:
        """The run's manifest is written: its files' rows become the file cache (every
        chunk they list in the chunk index first)."""
        self._join_staged()
        self._copy_pending()

    @_locked
    def stage_pending_files(self) -> None:
        """:meth:`commit_pending_files`' work done before the run's root object is
        written (while its group index is), inside a savepoint: the rows count once
        :meth:`keep_pending_files` releases it, after the root is written, and
        :meth:`unstage_pending_files` undoes them (a run whose root was not written).
        Until the cache's transaction commits, a crash keeps none of it either."""
        self._join_staged()  # (the stored packs' chunks: kept whether the run commits or not)
        self.db.execute("SAVEPOINT pending_files")
        try:
            self._copy_pending()
        except BaseException:
            self._rollback_pending()
            raise

    @_locked
    def keep_pending_files(self) -> None:
        self.db.execute("RELEASE pending_files")

    @_locked
    def unstage_pending_files(self) -> None:
        self._rollback_pending()

    def _rollback_pending(self) -> None:
        self.db.execute("ROLLBACK TO pending_files")
        self.db.execute("RELEASE pending_files")
        self._file_pages.clear()

    def _copy_pending(self) -> None:
        # in key order (an encrypting host's row names are HMACs: 200k rows in random
        # order took 4.3 s of CPU, sorted 1.1 s); a path put twice: the later row wins
        self.db.execute("INSERT OR REPLACE INTO files SELECT * FROM files_pending "
                        "ORDER BY dir, name, rowid")
        self.db.execute("DELETE FROM files_pending")
        self._file_pages.clear()
        # the directories of the run, no more: rows of directories gone are dropped
        self.db.execute("DELETE FROM dir_trees WHERE name NOT IN "
                        "(SELECT name FROM dir_trees_seen)")
        self.db.execute("INSERT OR REPLACE INTO dir_trees SELECT * FROM dir_trees_pending")
        self.discard_pending_dirs()

    @_locked
    def discard_pending_files(self) -> None:
        self.db.execute("DELETE FROM files_pending")
        self.discard_pending_dirs()

    # -- directory trees (archive/dir_cache.py: rows by name, opaque to the cache)
    @_locked
    def get_dir(self, name: bytes) -> tuple[bytes, bytes] | None:
        """The digest and row of a directory, as the last committed run left them."""
        row = self.db.execute("SELECT digest, row FROM dir_trees WHERE name=?",
                              (name,)).fetchone()
        return (row[0], row[1]) if row else None

    @_locked
    def put_dirs(self, rows: list[tuple[bytes, bytes, bytes]], kept: list[bytes]) -> None:
        """(name, digest, row) of directories, pending like file rows; ``kept``: the
        names of the run's other directories, whose rows stay as they are."""
        insert_rows(self.db, "INSERT OR REPLACE INTO dir_trees_pending", 3, rows)
        insert_rows(self.db, "INSERT OR IGNORE INTO dir_trees_seen", 1,
                    [(name,) for name, _, _ in rows] + [(name,) for name in kept])

    @_locked
    def discard_pending_dirs(self) -> None:
        self.db.execute("DELETE FROM dir_trees_pending")
        self.db.execute("DELETE FROM dir_trees_seen")

    # -- rebuild
    def rebuild_from_manifest(self, manifest: Manifest) -> int:
        """Fill the cache from a manifest read whole; returns the number of files learned."""
        metadata = [manifest.metadata]
        return self.rebuild(manifest.header, manifest.packs, iter(manifest.entries),
                            [c for snap in manifest.snapshots for c in snap.chunks],
                            lambda: metadata.pop() if metadata else ())

    @_locked
    def rebuild(self, header: Header, packs: list[PackRef], entries: Iterator[Entry],
                other_chunks: Iterable[ChunkRef] = (),
                metadata: Callable[[], Iterable[ChunkRef]] = lambda: ()) -> int:
        """Fill the cache from a run, streamed: ``entries`` (a tree's walk) go in
        batches of rows; ``metadata()`` gives the metadata blobs read since it was
        last called (each batch takes them).  All or nothing: a failure midway (a
        damaged run) leaves the cache as it was.  Returns the files learned."""
        by_id = {p.id: p for p in packs}
        self.begin()
        try:
            for pack in packs:
                self.add_pack(CachedPack(pack.key, pack.version_id, pack.size,
                                         pack.lock_mode or header.lock_mode,
                                         pack.locked_until or header.retain_until))
            learned = 0
            chunk_rows: list[ChunkLocation] = []
            file_rows: list[tuple[bytes, FileKey, bytes, list[ChunkId]]] = []

            def located(refs: Iterable[ChunkRef]) -> Iterator[ChunkLocation]:
                for c in refs:
                    yield ChunkLocation(c.hash, by_id[c.pack].key, c.offset, c.stored, c.size,
                                        c.encoding)

            def flush() -> None:
                chunk_rows.extend(located(metadata()))
                self.add_chunks(chunk_rows)
                # rows learned from a run carry no device number (-1: NULL below)
                self.put_files(file_rows)
                chunk_rows.clear()
                file_rows.clear()

            for entry in entries:
                if entry.kind != FILE:
                    continue
                chunk_rows.extend(located(entry.chunks))
                if entry.ino is not None and entry.ctime_ns is not None:
                    chunks = [ChunkId(c.hash, c.size) for c in entry.chunks]
                    line = dumps(encode_entry(entry, with_chunks=False))[:-1]
                    file_rows.append((entry.path, FileKey(-1, entry.ino, entry.size,
                                                          entry.mtime_ns, entry.ctime_ns),
                                      line, chunks))
                    learned += 1
                if len(chunk_rows) + len(file_rows) >= _ROWS_BATCH:
                    flush()
            chunk_rows.extend(located(other_chunks))
            flush()
            self.db.execute("UPDATE files SET dev=NULL WHERE dev=-1")
            self.set_meta("last_run_id", header.run_id)
        except BaseException:
            self.db.execute("ROLLBACK")
            self._pack_ids.clear()
            self._pack_keys.clear()
            self._dir_ids.clear()
            self._file_pages.clear()
            self._attr_ids.clear()
            self._attr_bodies.clear()
            self._attr_inner.clear()
            raise
        self.commit()
        return learned


def split_line(path: bytes, key: FileKey, line: bytes) -> bytes:
    """What a file row keeps of its manifest line: the fields its path and columns
    do not hold (JSON; a field the line lacks is listed as absent, so
    :func:`join_line` gives back exactly what was put)."""
    obj = json.loads(line)
    absent = []
    if obj.get("type") == "entry":
        del obj["type"]
    elif "type" not in obj:
        absent.append("type")
    if "path" in obj and "path_b64" not in obj and obj["path"].encode("utf-8") == path:
        del obj["path"]
    elif "path_b64" in obj and "path" not in obj and obj["path_b64"] == \
            base64.b64encode(path).decode("ascii"):
        del obj["path_b64"]
    elif "path" not in obj and "path_b64" not in obj:
        absent.append("path")
    for name in _COLUMNS:
        if name not in obj:
            absent.append(name)
        elif obj[name] == getattr(key, name):
            del obj[name]
    if absent:
        obj[_ABSENT] = absent
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


_PLAIN_REST = re.compile(rb'\{(?!\})(?!.*"(?:type|path|path_b64|mtime_ns|size|ino|ctime_ns|'
                         rb'\\u0000absent)":).*\}', re.DOTALL)


# a path JSON (ensure_ascii=False) writes as it is: printable ASCII but " and backslash
_PLAIN_PATH = re.compile(rb'[\x20\x21\x23-\x5b\x5d-\x7f]*')


# a line of a plain rest (its fields between the braces) and a path _PLAIN_PATH matches
_PLAIN_LINE = (b'{"type":"entry","path":"%s",%s,"mtime_ns":%d,"size":%d,"ino":%d,'
               b'"ctime_ns":%d}')


@functools.lru_cache(maxsize=256)
def _is_plain_rest(rest: bytes) -> bool:
    """Whether a row's rest joins as bytes (most files share a handful of rests)."""
    return _PLAIN_REST.fullmatch(rest) is not None


# the members of a plain file's line between its path and its mtime (kind, mode,
# owners), by those fields (bounded: a few owners and modes in most runs)
_MIDDLES: dict[tuple[Any, ...], bytes] = {}
_MIDDLES_MAX = 4096
_PLAIN_FILE_KEYS = ("type", "path", "kind", "mode", "uid", "gid", "user", "group",
                    "mtime_ns", "size", "ino", "ctime_ns")


def plain_file_line(entry: Entry, key: FileKey | None) -> tuple[bytes, bytes | None] | None:
    """A plain file's line, ``dumps(encode_entry(entry, with_chunks=False))[:-1]``, and
    with ``key`` its row's rest, :func:`split_line` of that line, made as bytes (a
    content worker's per-file JSON, about 15 µs); None for any other entry (a path
    JSON escapes, xattrs, ACLs, holes, a link...): then encode and split it."""
    if (entry.kind != FILE or entry.target is not None or entry.rdev is not None
            or entry.acl_access or entry.acl_default or entry.xattrs
            or entry.extents is not None or type(entry.ino) is not int
            or type(entry.ctime_ns) is not int or type(entry.mtime_ns) is not int
            or type(entry.size) is not int or type(entry.mode) is not int
            or type(entry.uid) is not int or type(entry.gid) is not int
            or not _PLAIN_PATH.fullmatch(entry.path)):
        return None
    fields = (entry.mode, entry.uid, entry.gid, entry.user, entry.group)
    middle = _MIDDLES.get(fields)
    if middle is None:
        obj = encode_entry(entry, with_chunks=False)
        # (user and group may be absent; nothing else may be, nor be added)
        if tuple(obj) != tuple(name for name in _PLAIN_FILE_KEYS
                               if name in obj or name not in ("user", "group")):
            return None
        for name in ("type", "path", *_COLUMNS):
            del obj[name]
        if not all(type(value) in (str, int) for value in obj.values()):
            return None
        middle = dumps(obj)[1:-2]
        if len(_MIDDLES) >= _MIDDLES_MAX:
            _MIDDLES.clear()
        _MIDDLES[fields] = middle
    line = _PLAIN_LINE % (entry.path, middle, entry.mtime_ns, entry.size, entry.ino,
                          entry.ctime_ns)
    if key is None:
        return line, None
    if (key.mtime_ns, key.size, key.ino, key.ctime_ns) != \
            (entry.mtime_ns, entry.size, entry.ino, entry.ctime_ns):
        return line, split_line(entry.path, key, line)
    return line, b"{" + middle + b"}"


def join_line(path: bytes, key: FileKey, rest: bytes) -> bytes:
    """The manifest line :func:`split_line` took apart."""
    if _is_plain_rest(rest):  # the usual row: joined as bytes, no JSON parsed
        try:
            name = (path if _PLAIN_PATH.fullmatch(path) else
                    json.dumps(path.decode("utf-8"), ensure_ascii=False).encode("utf-8")[1:-1])
        except UnicodeDecodeError:
            pass
        else:
            return _PLAIN_LINE % (name, rest[1:-1], key.mtime_ns, key.size, key.ino,
                                  key.ctime_ns)
    obj = json.loads(rest)
    absent = obj.pop(_ABSENT, ())
    line: dict[str, Any] = {}
    if "type" not in obj and "type" not in absent:
        line["type"] = "entry"
    if "path" not in obj and "path_b64" not in obj and "path" not in absent:
        try:
            line["path"] = path.decode("utf-8")
        except UnicodeDecodeError:
            line["path_b64"] = base64.b64encode(path).decode("ascii")
    line.update(obj)
    for name in _COLUMNS:
        if name not in line and name not in absent:
            line[name] = getattr(key, name)
    return dumps(line)[:-1]
