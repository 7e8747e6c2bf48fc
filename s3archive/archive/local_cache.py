"""The local cache (SQLite): an optimisation, never the truth.

* ``files``: (path, dev, inode, size, mtime, ctime) -> chunk list, so an
  unchanged file is not read again;
* ``chunks``: chunk hash -> pack, offset, stored length, encoding (dedup);
* ``packs``: pack key -> version id, size, lock mode and the retain-until
  known to be in force.

When it is lost it is rebuilt from the latest manifest of this host
(``rebuild_from_manifest``).  A pack whose lock may lapse soon is forgotten
with everything that points into it, so no run reuses data that lifecycle
might delete.
"""

from __future__ import annotations

import array
import bisect
import functools
import os
import re
import sqlite3
import struct
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from s3archive.archive.packer import ChunkId, ChunkLocation
from s3archive.clock import isoformat, parse_iso
from s3archive.format.manifest_codec import dumps, encode_entry
from s3archive.format.model import FILE, Manifest

if TYPE_CHECKING:
    from s3archive.archive.encryption import FileCipher

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS packs (
    key TEXT PRIMARY KEY, version_id TEXT NOT NULL, size INTEGER NOT NULL,
    lock_mode TEXT, retain_until TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    hash BLOB PRIMARY KEY, pack TEXT NOT NULL, offset INTEGER NOT NULL,
    stored INTEGER NOT NULL, size INTEGER NOT NULL, encoding TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks (pack);
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY, dev INTEGER, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, chunks BLOB NOT NULL,
    line BLOB NOT NULL) WITHOUT ROWID;
"""
_CHUNK_ITEM = struct.Struct(">32sQ")

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


@dataclass(frozen=True, slots=True)
class CachedFile:
    line: bytes  # the file's manifest line without chunks (JSON, no newline)
    chunks: list[ChunkId]  # in file order


@dataclass(frozen=True, slots=True)
class FileKey:
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int


class ChunkFilter:
    """Which chunks the index held when the run started: 8 bytes a chunk.

    ``may_contain`` answers without a lock or a query; a yes (or a rare false
    positive) is confirmed by a lookup in the index.
    """

    def __init__(self, prefixes: Iterable[bytes]):
        self._sorted = array.array("Q", sorted(int.from_bytes(p, "big") for p in prefixes))

    def __len__(self) -> int:
        return len(self._sorted)

    def may_contain(self, digest: str) -> bool:
        value = int(digest[:16], 16)
        index = bisect.bisect_left(self._sorted, value)
        return index < len(self._sorted) and self._sorted[index] == value


def cache_path(cache_dir: Path, bucket: str, prefix: str, host: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{bucket}-{prefix}-{host}".replace("/", "_"))
    return cache_dir / f"{name}.sqlite"


def pack_chunk_list(chunks: Iterable[ChunkId]) -> bytes:
    return b"".join(_CHUNK_ITEM.pack(bytes.fromhex(h), size) for h, size in chunks)


def unpack_chunk_list(blob: bytes) -> list[ChunkId]:
    return [ChunkId(h.hex(), size) for h, size in _CHUNK_ITEM.iter_unpack(blob)]


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
            self.db.executescript("DROP TABLE IF EXISTS meta; DROP TABLE IF EXISTS packs;"
                                  "DROP TABLE IF EXISTS chunks; DROP TABLE IF EXISTS files;")
        self.db.executescript(_SCHEMA)
        # rows of files read by a run that has not committed yet (per connection)
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS files_pending AS "
                        "SELECT * FROM files WHERE 0")
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        os.chmod(path, 0o600)

    @_locked
    def close(self) -> None:
        self.db.close()

    # -- transactions
    @_locked
    def begin(self) -> None:
        self.db.execute("BEGIN")

    @_locked
    def commit(self) -> None:
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
    def is_empty(self) -> bool:
        return self.db.execute("SELECT 1 FROM packs LIMIT 1").fetchone() is None

    # -- packs
    @_locked
    def add_pack(self, pack: CachedPack) -> None:
        self.db.execute(
            "INSERT INTO packs VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
            "version_id=excluded.version_id, size=excluded.size, lock_mode=excluded.lock_mode, "
            "retain_until=max(packs.retain_until, excluded.retain_until) "
            "WHERE packs.version_id = excluded.version_id OR excluded.retain_until >= packs.retain_until",
            (pack.key, pack.version_id, pack.size, pack.lock_mode, isoformat(pack.retain_until)))

    @_locked
    def get_pack(self, key: str) -> CachedPack | None:
        row = self.db.execute("SELECT key, version_id, size, lock_mode, retain_until FROM packs "
                              "WHERE key=?", (key,)).fetchone()
        return CachedPack(row[0], row[1], row[2], row[3], parse_iso(row[4])) if row else None

    @_locked
    def forget_packs(self, keys: Iterable[str]) -> None:
        """Drop packs and every chunk and file entry that points into them."""
        for key in keys:
            hashes = [row[0] for row in self.db.execute("SELECT hash FROM chunks WHERE pack=?", (key,))]
            self.db.execute("DELETE FROM chunks WHERE pack=?", (key,))
            self.db.execute("DELETE FROM packs WHERE key=?", (key,))
            if hashes:
                self._forget_files_with(set(hashes))

    def _forget_files_with(self, hashes: set[bytes]) -> None:
        doomed = []
        for path, blob in self.db.execute("SELECT path, chunks FROM files"):
            for i in range(0, len(blob), _CHUNK_ITEM.size):
                if blob[i:i + 32] in hashes:
                    doomed.append(path)
                    break
        self.db.executemany("DELETE FROM files WHERE path=?", [(p,) for p in doomed])

    @_locked
    def packs_not_locked_in(self, mode: str) -> list[str]:
        return [row[0] for row in self.db.execute(
            "SELECT key FROM packs WHERE lock_mode IS NULL OR lock_mode != ?", (mode,))]

    @_locked
    def packs_lapsing_before(self, moment: datetime) -> list[str]:
        return [row[0] for row in self.db.execute(
            "SELECT key FROM packs WHERE retain_until < ?", (isoformat(moment),))]

    # -- chunks
    @_locked
    def add_chunks(self, rows: Iterable[ChunkLocation]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
            [(bytes.fromhex(c.hash), c.pack, c.offset, c.stored, c.size, c.encoding) for c in rows])

    @_locked
    def get_chunks(self, digests: Iterable[str]) -> dict[str, ChunkLocation]:
        """Many lookups at once (in batches of 500)."""
        found: dict[str, ChunkLocation] = {}
        wanted = [bytes.fromhex(d) for d in digests]
        for start in range(0, len(wanted), 500):
            batch = wanted[start:start + 500]
            marks = ",".join("?" * len(batch))
            for row in self.db.execute("SELECT hash, pack, offset, stored, size, encoding "
                                       f"FROM chunks WHERE hash IN ({marks})", batch):
                digest = row[0].hex()
                found[digest] = ChunkLocation(digest, *row[1:])
        return found

    @_locked
    def chunk_filter(self) -> "ChunkFilter":
        """A snapshot of the chunk index, for lookups that need no lock."""
        return ChunkFilter(row[0][:8] for row in self.db.execute("SELECT hash FROM chunks"))

    @_locked
    def forget_files(self) -> None:
        self.db.execute("DELETE FROM files")

    @_locked
    def get_chunk(self, digest: str) -> ChunkLocation | None:
        row = self.db.execute("SELECT pack, offset, stored, size, encoding FROM chunks WHERE hash=?",
                              (bytes.fromhex(digest),)).fetchone()
        return ChunkLocation(digest, *row) if row else None

    # -- files
    @_locked
    def get_file(self, path: bytes, key: FileKey) -> CachedFile | None:
        """The cached line and chunks of an unchanged file, or None.

        Every chunk of a file row is in the chunk index: ``forget_packs``
        removes the file rows that point into a forgotten pack.
        """
        name = self._cipher.name(path) if self._cipher is not None else path
        row = self.db.execute(
            "SELECT dev, ino, size, mtime_ns, ctime_ns, chunks, line FROM files WHERE path=?",
            (name,)).fetchone()
        if row is None:
            return None
        dev, ino, size, mtime_ns, ctime_ns, blob, line = row
        if (ino, size, mtime_ns, ctime_ns) != (key.ino, key.size, key.mtime_ns, key.ctime_ns):
            return None
        if dev is not None and dev != key.dev:
            return None
        if self._cipher is not None:
            line = self._cipher.open(path, (ino, size, mtime_ns, ctime_ns), line)
            if line is None:
                return None
        return CachedFile(line, unpack_chunk_list(blob))

    @_locked
    def use_cipher(self, cipher: "FileCipher | None") -> None:
        """Name file rows by HMAC and seal their lines (an encrypting host keeps no
        path or metadata of a file it no longer has).  Rows written otherwise, or
        under another secret, are dropped (and the database compacted, so no page
        keeps them)."""
        label = cipher.label if cipher is not None else "plain"
        if self.get_meta("file_rows") not in (None, label):
            self.db.execute("PRAGMA secure_delete=ON")
            self.db.execute("DELETE FROM files")
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.set_meta("file_rows", label)
        self._cipher = cipher

    def put_file(self, path: bytes, key: FileKey, line: bytes,
                 chunks: list[ChunkId], pending: bool = False) -> None:
        """Remember a file; ``pending`` rows count only after ``commit_pending_files``."""
        self.put_files([(path, key, line, chunks)], pending)

    @_locked
    def put_files(self, rows: list[tuple[bytes, FileKey, bytes, list[ChunkId]]],
                  pending: bool = False) -> None:
        table = "files_pending" if pending else "files"
        cipher = self._cipher
        if cipher is not None:
            rows = [(cipher.name(path), key,
                     cipher.seal(path, (key.ino, key.size, key.mtime_ns, key.ctime_ns), line),
                     chunks) for path, key, line, chunks in rows]
        self.db.executemany(
            f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(path, key.dev, key.ino, key.size, key.mtime_ns, key.ctime_ns,
              pack_chunk_list(chunks), line) for path, key, line, chunks in rows])

    @_locked
    def commit_pending_files(self) -> None:
        """The run's manifest is written: its files' rows become the file cache."""
        self.db.execute("INSERT OR REPLACE INTO files SELECT * FROM files_pending")
        self.db.execute("DELETE FROM files_pending")

    @_locked
    def discard_pending_files(self) -> None:
        self.db.execute("DELETE FROM files_pending")

    # -- rebuild
    @_locked
    def rebuild_from_manifest(self, manifest: Manifest) -> int:
        """Fill the cache from a manifest; returns the number of files learned."""
        packs = {p.id: p for p in manifest.packs}
        self.begin()
        for pack in manifest.packs:
            self.add_pack(CachedPack(pack.key, pack.version_id, pack.size,
                                     pack.lock_mode or manifest.header.lock_mode,
                                     pack.locked_until or manifest.header.retain_until))
        learned = 0
        chunk_rows = []
        for entry in manifest.entries:
            if entry.kind != FILE:
                continue
            for c in entry.chunks:
                chunk_rows.append(ChunkLocation(c.hash, packs[c.pack].key, c.offset, c.stored,
                                              c.size, c.encoding))
            if entry.ino is not None and entry.ctime_ns is not None:
                chunks = [ChunkId(c.hash, c.size) for c in entry.chunks]
                line = dumps(encode_entry(entry, with_chunks=False))[:-1]
                self.put_file(entry.path, FileKey(-1, entry.ino, entry.size, entry.mtime_ns,
                                                  entry.ctime_ns), line, chunks)
                learned += 1
        for snap in manifest.snapshots:
            for c in snap.chunks:
                chunk_rows.append(ChunkLocation(c.hash, packs[c.pack].key, c.offset, c.stored,
                                              c.size, c.encoding))
        for c in manifest.metadata:  # format 2: unchanged directories are not stored again
            chunk_rows.append(ChunkLocation(c.hash, packs[c.pack].key, c.offset, c.stored,
                                          c.size, c.encoding))
        self.add_chunks(chunk_rows)
        # rows learned from a manifest carry no device number
        self.db.execute("UPDATE files SET dev=NULL WHERE dev=-1")
        self.set_meta("last_run_id", manifest.header.run_id)
        self.commit()
        return learned
