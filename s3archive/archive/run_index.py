"""Where every chunk a run references is, kept on disk instead of in memory.

A run of a million files references about a million chunks; a dict of their
:class:`ChunkLocation` s costs hundreds of megabytes.  :class:`RunIndex` keeps
them in a private temporary SQLite database (deleted when closed), keyed by
the 32-byte hash, the pack as a small integer.  A Bloom filter of the hashes
put answers most "not here" questions without a query; lookups come in
batches where the caller can batch (a block of spooled entries, a leaf).
Memory: the filter (4 to 8 bytes a chunk) and SQLite's page cache, whatever the
run's size.  The chunks of unchanged files are copied from the local cache in
SQL (:meth:`RunIndex.put_listed_from_cache`, the cache attached read-only): a
no-change run builds no Python object per chunk.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import threading
import urllib.parse
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from s3archive.archive.packer import ChunkLocation
from s3archive.archive.sql_rows import insert_rows
from s3archive.format.model import ENCODINGS

_ENCODING_NUMBERS = {name: number for number, name in enumerate(ENCODINGS)}
_HALVES = struct.Struct(">QQ")  # a digest's first and second 8 bytes (DigestFilter.add_numbers)
_CACHE_KIB = 8 << 10  # SQLite page cache of the index (KiB)


# rows n(i), i = 0 .. ?1 - 1: the items of a list passed to SQL as one value (fixed
# width; item i at i * width) are split by the statement this begins
_NUMBERED = ("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n "
             "WHERE i + 1 < ?1) ")


class PackRows:
    """A stored pack's chunk locations as SQL takes them, a slice of them a statement
    (split there, like :meth:`RunIndex.put_listed_from_cache`'s lists): no Python
    object, bound parameter or GIL hand-over a row (``executemany`` releases the GIL
    for every row).  The run index and the local cache each insert them
    (:meth:`insert_sql` with each slice's :meth:`parameters`).  Memory: 65 bytes a
    chunk, and passing strings of one slice."""

    # a chunk's numbers: its offset, stored and plain sizes, encoding, in decimal digits
    _NUMBERS = "%012d%010d%010d%d"
    _WIDTH = 33
    SLICE = 2048  # chunks a statement

    def __init__(self, key: str, locations: Sequence[ChunkLocation]):
        in_order = sorted(locations, key=attrgetter("hash"))  # neighbours share pages
        self.key = key
        self.count = len(in_order)
        # (count, digests, numbers) of each slice
        self.slices: list[tuple[int, bytes, bytes]] = []
        numbers, form = _ENCODING_NUMBERS, self._NUMBERS
        for start in range(0, self.count, self.SLICE):
            part = in_order[start:start + self.SLICE]
            hashes = bytes.fromhex("".join([c.hash for c in part]))
            listed = "".join([form % (c.offset, c.stored, c.size, numbers[c.encoding])
                              for c in part]).encode("ascii")
            if len(hashes) != 32 * len(part) or len(listed) != self._WIDTH * len(part):
                raise ValueError(f"{key}: a chunk location out of range")  # (too wide)
            self.slices.append((len(part), hashes, listed))

    @staticmethod
    def insert_sql(verb: str, table: str) -> str:
        """``verb`` (INSERT OR REPLACE...) into ``table`` (hash, pack, offset, stored, size,
        encoding) with a slice's :meth:`parameters`."""
        return (_NUMBERED + f"{verb} INTO {table} SELECT substr(?2, i * 32 + 1, 32), ?4, "
                "CAST(substr(?3, i * 33 + 1, 12) AS INTEGER), "
                "CAST(substr(?3, i * 33 + 13, 10) AS INTEGER), "
                "CAST(substr(?3, i * 33 + 23, 10) AS INTEGER), "
                "CAST(substr(?3, i * 33 + 33, 1) AS INTEGER) FROM n")

    def parameters(self, pack: int) -> Iterator[tuple[int, bytes, bytes, int]]:
        """Each slice's parameters, its chunks in pack number ``pack``."""
        return ((count, hashes, listed, pack) for count, hashes, listed in self.slices)


class DigestFilter:
    """A growing Bloom filter over hex digests (uniform already: their bits are the
    hash functions).  ``may_contain`` never answers False for a digest added."""

    # with 4 probes: ~0.02 % false positives a layer at capacity, ~0.1 % for the five
    # layers of a million chunks.  (16 bits made that 1 %: a batch of 64 new chunks
    # asked SQLite, waiting for an upload thread's insert, every other time)
    BITS_PER_ITEM = 32
    PROBES = 4

    def __init__(self, capacity: int = 1 << 16):
        # each layer: its bits, a mask of its size in bits (a power of two), its capacity
        self._layers: list[tuple[bytearray, int, int]] = []
        self._count = 0  # items in the newest layer
        self._grow(1 << max(capacity - 1, 1).bit_length())

    def _grow(self, capacity: int) -> None:
        size = capacity * self.BITS_PER_ITEM
        self._layers.append((bytearray(size // 8), size - 1, capacity))
        self._count = 0

    def add(self, digest: str) -> None:
        bits, mask, capacity = self._layers[-1]
        if self._count >= capacity:
            self._grow(capacity * 2)
            bits, mask, capacity = self._layers[-1]
        position, step = int(digest[:16], 16), int(digest[16:32], 16) | 1
        for _ in range(self.PROBES):
            position &= mask
            bits[position >> 3] |= 1 << (position & 7)
            position += step
        self._count += 1

    def add_many(self, digests: Iterable[str]) -> None:
        """:meth:`add` each (the same bits; the probes unrolled: a third cheaper)."""
        self.add_numbers((int(d[:16], 16), int(d[16:32], 16)) for d in digests)

    def add_listed(self, listed: bytes, item: int) -> None:
        """:meth:`add` the digests of a packed list (``item`` bytes an entry, each
        beginning with its 32-byte digest): no hex string is made."""
        self.add_numbers(struct.iter_unpack(f">QQ{item - 16}x", listed))

    def add_numbers(self, numbers: Iterable[tuple[int, int]]) -> None:
        """:meth:`add` digests given as the numbers of their first and second 8 bytes."""
        assert self.PROBES == 4
        bits, mask, capacity = self._layers[-1]
        count = self._count
        for position, step in numbers:
            if count >= capacity:
                self._count = count
                self._grow(capacity * 2)
                bits, mask, capacity = self._layers[-1]
                count = 0
            step |= 1
            position &= mask
            bits[position >> 3] |= 1 << (position & 7)
            position = (position + step) & mask
            bits[position >> 3] |= 1 << (position & 7)
            position = (position + step) & mask
            bits[position >> 3] |= 1 << (position & 7)
            position = (position + step) & mask
            bits[position >> 3] |= 1 << (position & 7)
            count += 1
        self._count = count

    def may_contain(self, digest: str) -> bool:
        """(The probes unrolled as :meth:`add_numbers`'s: a third cheaper, and a new
        chunk of a run of a million asks all five layers.)"""
        assert self.PROBES == 4
        first, step = int(digest[:16], 16), int(digest[16:32], 16) | 1
        for bits, mask, _ in self._layers:
            position = first & mask
            if not bits[position >> 3] >> (position & 7) & 1:
                continue
            position = (position + step) & mask
            if not bits[position >> 3] >> (position & 7) & 1:
                continue
            position = (position + step) & mask
            if not bits[position >> 3] >> (position & 7) & 1:
                continue
            position = (position + step) & mask
            if bits[position >> 3] >> (position & 7) & 1:
                return True
        return False

    @property
    def nbytes(self) -> int:
        return sum(len(bits) for bits, _, _ in self._layers)


class RunIndex:
    """hash -> :class:`ChunkLocation` of one run's chunks; thread-safe (one lock)."""

    def __init__(self) -> None:
        # "": a private temporary database on disk, removed when closed
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE chunks (hash BLOB PRIMARY KEY, pack INTEGER NOT NULL, "
                         "offset INTEGER NOT NULL, stored INTEGER NOT NULL, "
                         "size INTEGER NOT NULL, encoding INTEGER NOT NULL) WITHOUT ROWID")
        # the pack numbers, also in SQL: locations copied from the local cache join them
        self._db.execute("CREATE TABLE packs (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE)")
        self._db.execute("CREATE TABLE wanted (hash BLOB PRIMARY KEY) WITHOUT ROWID")
        # the cache's rows of the digests wanted (their pack: the cache's number), and the
        # cache's numbers of the packs they may come from -> this index's
        self._db.execute("CREATE TABLE staged (hash BLOB NOT NULL, pack INTEGER NOT NULL, "
                         "offset INTEGER NOT NULL, stored INTEGER NOT NULL, "
                         "size INTEGER NOT NULL, encoding INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE reusable (id INTEGER PRIMARY KEY, pack INTEGER NOT NULL)")
        self._cache_attached = False
        self._lock = threading.Lock()
        self._filter = DigestFilter()
        self._pack_ids: dict[str, int] = {}
        self._pack_keys: list[str] = []

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Many statements as one transaction (each alone would be one: ~2 µs a row)."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _pack_id(self, key: str) -> int:
        number = self._pack_ids.get(key)
        if number is None:
            number = self._pack_ids[key] = len(self._pack_keys)
            self._pack_keys.append(key)
            self._db.execute("INSERT INTO packs VALUES (?, ?)", (number, key))
        return number

    def _location(self, row: tuple[bytes, int, int, int, int, int]) -> ChunkLocation:
        return ChunkLocation(row[0].hex(), self._pack_keys[row[1]], row[2], row[3], row[4],
                             ENCODINGS[row[5]])

    # -- writing
    def put(self, locations: Iterable[ChunkLocation], replace: bool = True) -> None:
        """Record locations (a statement a group of them: sql_rows.py);
        ``replace=False`` keeps a location already recorded (the first place found
        wins)."""
        with self._lock:
            pack_id, numbers = self._pack_id, _ENCODING_NUMBERS
            # in key order (stable: the same first or last wins), neighbours share pages
            rows = sorted([(bytes.fromhex(c.hash), pack_id(c.pack), c.offset, c.stored, c.size,
                            numbers[c.encoding]) for c in locations], key=itemgetter(0))
            verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
            with self._transaction():
                insert_rows(self._db, f"{verb} INTO chunks", 6, rows)
            self._filter.add_numbers(_HALVES.unpack_from(row[0]) for row in rows)

    def put_pack(self, rows: PackRows) -> None:
        """Record a stored pack's locations (one statement), replacing any recorded."""
        if not rows.count:
            return
        with self._lock:
            with self._transaction():
                insert = PackRows.insert_sql("INSERT OR REPLACE", "chunks")
                for parameters in rows.parameters(self._pack_id(rows.key)):
                    self._db.execute(insert, parameters)
            for _, hashes, _ in rows.slices:
                self._filter.add_listed(hashes, 32)

    def attach_cache(self, path: Path) -> None:
        """Read the local cache at ``path`` (schema 3: ``chunks``, ``pack_names``)
        directly, read-only, for :meth:`put_listed_from_cache`.  It sees what the cache
        has committed: the chunks of earlier runs, which are what a file-cache hit
        references."""
        uri = "file:" + urllib.parse.quote(os.fsencode(path.absolute())) + "?mode=ro"
        with self._lock:
            self._db.execute("ATTACH DATABASE ? AS cache", (uri,))
            self._cache_attached = True

    def put_listed_from_cache(self, listed: bytes, item: int,
                              prefixes: tuple[str, ...] | None = None) -> set[str]:
        """Copy the cache's locations of the digests of a packed chunk list, as the
        local cache's file rows hold them (``item`` bytes an entry, each beginning
        with its 32-byte digest), in packs whose key starts with one of
        ``prefixes`` (None: any), into the index, in SQL: the list goes to SQL as
        one value and is split there, so a file-cache hit's chunks cost no Python
        object each.  A location already recorded is kept.  Returns the digests
        that are then still not in the index."""
        count = len(listed) // item
        if count == 0:
            return set()
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM wanted")
            self._db.execute(
                _NUMBERED
                + "INSERT OR IGNORE INTO wanted SELECT substr(?2, i * ?3 + 1, 32) FROM n",
                (count, listed, item))
            self._filter.add_listed(listed, item)  # more than are found: only false positives
            return self._copy_wanted(prefixes)

    def _copy_wanted(self, prefixes: tuple[str, ...] | None) -> set[str]:
        """Copy the cache's locations of the digests in ``wanted`` (under the lock,
        in a transaction); returns those then still not in the index.

        One join with the cache's chunks, into ``staged``; the few packs found there
        are numbered (and checked against ``prefixes``) in Python, and the rows in
        reusable packs go into the index by those numbers."""
        assert self._cache_attached, "attach_cache first"
        db = self._db
        # CROSS JOIN: in this order (the planner knows no sizes, and scanned the cache)
        db.execute("INSERT INTO staged SELECT c.hash, c.pack, c.offset, c.stored, c.size, "
                   "c.encoding FROM wanted w CROSS JOIN cache.chunks c ON c.hash = w.hash")
        db.execute("DELETE FROM reusable")
        for (number,) in db.execute("SELECT DISTINCT pack FROM staged").fetchall():
            row = db.execute("SELECT key FROM cache.pack_names WHERE id = ?",
                             (number,)).fetchone()
            if row is not None and (prefixes is None or row[0].startswith(prefixes)):
                db.execute("INSERT INTO reusable VALUES (?, ?)", (number, self._pack_id(row[0])))
        db.execute("INSERT OR IGNORE INTO chunks SELECT s.hash, r.pack, s.offset, s.stored, "
                   "s.size, s.encoding FROM staged s CROSS JOIN reusable r ON r.id = s.pack")
        db.execute("DELETE FROM staged")
        return {row[0].hex() for row in db.execute(
            "SELECT hash FROM wanted WHERE hash NOT IN (SELECT hash FROM chunks)")}

    def delete(self, digest: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM chunks WHERE hash=?", (bytes.fromhex(digest),))

    def keep_only(self, packs: set[str]) -> None:
        """Forget every location outside ``packs``."""
        with self._lock:
            gone = [(number,) for key, number in self._pack_ids.items() if key not in packs]
            self._db.executemany("DELETE FROM chunks WHERE pack=?", gone)

    # -- reading
    def may_contain(self, digest: str) -> bool:
        """Whether the index may hold ``digest`` (False: surely not).  Asked without
        the lock, which an upload thread holds while SQLite inserts a pack's rows
        (:meth:`put_pack`): the filter's bits are only ever set and its layers only
        appended, so every digest a put has returned from is seen; one being put
        meanwhile may not be yet (the caller looks again once that pack counts as
        stored: ``ChunkWriter._claim_many``)."""
        return self._filter.may_contain(digest)

    def get(self, digest: str) -> ChunkLocation | None:
        with self._lock:
            if not self._filter.may_contain(digest):
                return None
            row = self._db.execute("SELECT * FROM chunks WHERE hash=?",
                                   (bytes.fromhex(digest),)).fetchone()
            return self._location(row) if row is not None else None

    def get_many(self, digests: Iterable[str]) -> dict[str, ChunkLocation]:
        """The locations known of ``digests`` (one statement: the digests go to SQL as
        one value, in key order, and are split there)."""
        wanted = sorted(set(digests))  # mostly known: no filter
        if not wanted:
            return {}
        keys, encodings = self._pack_keys, ENCODINGS
        with self._lock:
            rows = self._db.execute(
                _NUMBERED + "SELECT c.* FROM n CROSS JOIN chunks c "
                "ON c.hash = substr(?2, i * 32 + 1, 32)",
                (len(wanted), bytes.fromhex("".join(wanted)))).fetchall()
        found: dict[str, ChunkLocation] = {}
        for hash_, pack, offset, stored, size, encoding in rows:
            digest = hash_.hex()
            found[digest] = ChunkLocation(digest, keys[pack], offset, stored, size,
                                          encodings[encoding])
        return found

    def bytes_by_pack(self) -> dict[str, int]:
        """Stored bytes referenced in each pack."""
        with self._lock:
            return {self._pack_keys[pack]: stored for pack, stored in self._db.execute(
                "SELECT pack, sum(stored) FROM chunks GROUP BY pack")}

    def in_packs(self, packs: set[str]) -> list[ChunkLocation]:
        """The locations inside ``packs`` (a run's little-used packs: few)."""
        with self._lock:
            numbers = [(self._pack_ids[key],) for key in packs if key in self._pack_ids]
            out = []
            for (number,) in numbers:
                out += [self._location(row) for row in self._db.execute(
                    "SELECT * FROM chunks WHERE pack=?", (number,))]
            return out

    def __iter__(self) -> Iterator[ChunkLocation]:
        """Every location, read in pages (bounded memory)."""
        last = b""
        while True:
            with self._lock:
                rows = self._db.execute("SELECT * FROM chunks WHERE hash > ? ORDER BY hash "
                                        "LIMIT 1000", (last,)).fetchall()
                page = [self._location(row) for row in rows]
            if not page:
                return
            yield from page
            last = rows[-1][0]

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM chunks").fetchone()[0]
