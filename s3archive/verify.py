"""Prove that runs are whole: references exist, locks cover them, data hashes match.

For each run: the manifest version is read and parsed strictly; the manifest
and every pack version it references are HEADed (they exist, have the
recorded size, and are locked in the run's mode — or COMPLIANCE, which is
stronger — until at least the run's retain-until); with ``read_data`` every
referenced chunk (or those of a sample of packs) is downloaded with merged
ranged GETs and its SHA-256 checked — every reference, also several that share
one (pack, offset) with different hashes.  Every problem names the run, the pack
and the paths it affects.  HEADs and verified chunks are shared between runs.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

from s3archive.archive import group_index
from s3archive.archive.encryption_rule import RunEncryption as RunEncryptionInfo
from s3archive.archive.encryption_rule import mixing_problems
from s3archive.crypto.keys import Identity
from s3archive.format import run_root
from s3archive.repo.catalog import ROOT, RunRef, load_manifest, open_tree
from s3archive.repo.run_tree import RunTree
from s3archive.clock import isoformat
from s3archive.errors import NoSuchVersion, S3ArchiveError, StoreError, TransportError
from s3archive.human import json_path
from s3archive.format.model import (FILE, HARDLINK, BlobOpener, ChunkRef, Entry, Manifest,
                                    PackRef, Snapshot)
from s3archive.repo.pack_reader import DEFAULT_WINDOW, PackReader, merge_reads
from s3archive.storage_classes import ClassSurvey
from s3archive.store.base import ObjectInfo, StoreReader

log = logging.getLogger(__name__)

_STRENGTH = {None: 0, "GOVERNANCE": 1, "COMPLIANCE": 2}
_PATHS_KEPT = 20
MAX_REQUEST = 8 << 20  # bytes of one ranged GET of --read-data
SPOOL_ROWS = 4096  # references written to (or verdicts kept for) the database at a time


@dataclass
class Problem:
    # manifest | time | missing | size | unlocked | mode | retention | chunk | head | transport
    # (transport: the store could not deliver it after retries; says nothing about the data)
    kind: str
    message: str
    key: str | None = None
    version_id: str | None = None
    paths: list[bytes] = field(default_factory=list)  # affected (first _PATHS_KEPT)
    paths_total: int = 0

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"kind": self.kind, "message": self.message, "key": self.key,
                               "version_id": self.version_id, "paths_total": self.paths_total}
        obj["paths"] = [json_path(p) for p in self.paths]
        return obj


@dataclass
class RunVerification:
    host: str
    run_id: str
    retain_until: datetime | None = None
    lock_mode: str | None = None
    packs: int = 0
    packs_read: int = 0
    chunks_checked: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    contents_checked: bool = True  # False: an encrypted run verified without its key
    storage: ClassSurvey = field(default_factory=ClassSurvey)  # classes, from the HEADs

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "run_id": self.run_id, "ok": self.ok,
                "retain_until": isoformat(self.retain_until) if self.retain_until else None,
                "lock_mode": self.lock_mode, "packs": self.packs, "packs_read": self.packs_read,
                "chunks_checked": self.chunks_checked, "bytes_checked": self.bytes_checked,
                "contents_checked": self.contents_checked,
                "problems": [p.to_json() for p in self.problems],
                "pack_classes": self.storage.packs_json(),
                "warnings": self.storage.warnings_json()}


@dataclass(frozen=True)
class VerifyOptions:
    read_data: bool = False
    sample_percent: float = 100.0
    workers: int = 8
    window: int = DEFAULT_WINDOW  # bytes of --read-data GETs in flight
    seed: int | None = None
    # restore keys (--key): an encrypted run's trees and data are checked only with them
    identities: tuple[Identity, ...] = ()


class Verifier:
    """Verifies runs of one store; caches HEADs and checked chunks across runs."""

    def __init__(self, store: StoreReader, options: VerifyOptions = VerifyOptions()):
        self.store = store
        self.options = options
        self._heads: dict[tuple[str, str], ObjectInfo | S3ArchiveError] = {}
        self._database: sqlite3.Connection | None = None  # spooled and checked references
        self._lock = threading.Lock()
        self._random = random.Random(options.seed)
        self._encryption_seen: dict[str, list[RunEncryptionInfo]] = {}
        # the group index objects of the bucket by (host, run id), listed once
        self._index: dict[tuple[str, str], list[group_index.WrittenObject]] | None = None

    # ---------------------------------------------------------------- HEAD

    def _head(self, key: str, version_id: str) -> ObjectInfo | S3ArchiveError:
        with self._lock:
            cached = self._heads.get((key, version_id))
        if cached is not None:
            return cached
        try:
            result: ObjectInfo | S3ArchiveError = self.store.head(key, version_id)
        except StoreError as err:
            result = err
        with self._lock:
            self._heads[(key, version_id)] = result
        return result

    def _check_object(self, what: str, key: str, version_id: str, size: int | None,
                      mode: str | None, until: datetime) -> list[Problem]:
        info = self._head(key, version_id)
        where = f"{key}@{version_id}"
        if isinstance(info, NoSuchVersion):
            return [Problem("missing", f"{what} {where} does not exist (deleted?)", key,
                            version_id)]
        if isinstance(info, TransportError):
            return [Problem("transport", f"could not check {what} {where}: {info}", key,
                            version_id)]
        if isinstance(info, S3ArchiveError):
            return [Problem("head", f"{what} {where}: {info}", key, version_id)]
        problems = []
        if size is not None and info.size != size:
            problems.append(Problem("size", f"{what} {where} has {info.size} bytes, the "
                                    f"manifest says {size}", key, version_id))
        if mode is None:
            return problems
        if info.lock_mode is None or info.retain_until is None:
            problems.append(Problem("unlocked", f"{what} {where} is not locked (the run needs "
                                    f"{mode} until {isoformat(until)})", key, version_id))
        elif _STRENGTH.get(info.lock_mode, 0) < _STRENGTH.get(mode, 0):
            problems.append(Problem("mode", f"{what} {where} is locked in {info.lock_mode} "
                                    f"mode, the run needs {mode}", key, version_id))
        if info.retain_until is not None and info.retain_until < until:
            problems.append(Problem("retention", f"{what} {where} is locked until "
                                    f"{isoformat(info.retain_until)}, the run needs "
                                    f"{isoformat(until)}", key, version_id))
        return problems

    # ---------------------------------------------------------------- runs

    def verify(self, run: RunRef) -> RunVerification:
        result = RunVerification(host=run.host, run_id=run.run_id)
        time_problem = run.time_problem()
        if time_problem is not None:
            result.problems.append(Problem("time", time_problem, run.key, run.version_id))
        contents: _Contents | None = None
        try:
            manifest = load_manifest(self.store, run, part=ROOT)
            self._encryption_seen.setdefault(run.host, []).append(RunEncryptionInfo(
                run.run_id, manifest.header.encryption,
                bool((manifest.header.encryption or {}).get("encryption_started"))))
            if manifest.header.encryption is None or self.options.identities:
                if manifest.header.format == run_root.FORMAT:
                    tree = open_tree(self.store, run, whole_packs=True,
                                     identities=list(self.options.identities))
                    tree.keep_metadata = False
                    contents = _TreeContents(tree)
                else:
                    manifest = load_manifest(self.store, run,
                                             identities=list(self.options.identities))
                    contents = _ManifestContents(manifest)
                # every node, chunk list and record read and checked; with --read-data
                # every data reference spooled to disk, one row each
                contents.read(self._spool() if self.options.read_data else None)
                contents.walked()
            else:  # without a key: the pack table, sizes and locks; no tree, no data
                result.contents_checked = False
                if self.options.read_data:
                    result.problems.append(Problem(
                        "key", f"run {run.host}/{run.run_id} is encrypted: --read-data needs "
                        "--key FILE (or S3ARCHIVE_KEY_FILE)", run.key, run.version_id))
        except TransportError as err:
            result.problems.append(Problem("transport", f"could not read the manifest: {err}",
                                           run.key, run.version_id))
            return result
        except S3ArchiveError as err:
            result.problems.append(Problem("manifest", f"cannot read the manifest: {err}",
                                           run.key, run.version_id))
            return result
        header = manifest.header
        result.retain_until, result.lock_mode = header.retain_until, header.lock_mode
        result.packs = len(manifest.packs)
        result.problems += self._check_object("manifest", run.key, run.version_id, None,
                                              header.lock_mode, header.retain_until)
        if header.encryption is not None:  # the key holder's copy of the dedup secret
            copy = header.encryption["dedup_key"]
            result.problems += self._check_object("dedup secret", copy["key"],
                                                  copy["version_id"], copy["size"],
                                                  header.lock_mode, header.retain_until)
        with ThreadPoolExecutor(max_workers=self.options.workers) as pool:
            checks = list(pool.map(
                lambda p: self._check_object("pack", p.key, p.version_id, p.size,
                                             header.lock_mode, header.retain_until),
                manifest.packs))
        surveyed = [(run.key, run.version_id, False),
                    *((p.key, p.version_id, True) for p in manifest.packs)]
        if header.encryption is not None:
            surveyed.append((header.encryption["dedup_key"]["key"],
                             header.encryption["dedup_key"]["version_id"], False))
        for key, version_id, is_pack in surveyed:
            if isinstance(info := self._head(key, version_id), ObjectInfo):  # cached
                result.storage.add(key, version_id, info.storage_class, is_pack)
        users = _Users()
        for pack, problems in zip(manifest.packs, checks):
            for problem in problems:
                users.attach(problem, pack.id)
                result.problems.append(problem)
        if self.options.read_data and contents is not None:
            missing = {p.key for p in result.problems if p.kind == "missing"}
            self._read_data(manifest.packs, contents.opener, result, users, missing)
        if contents is not None or header.encryption is None:
            self._check_group_index(run, manifest.packs, contents, result)
        if contents is not None:
            try:
                users.resolve(contents)
            except S3ArchiveError as err:  # read once already: the store failed meanwhile
                result.problems.append(Problem("transport", "could not name the paths "
                                               f"affected: {err}", run.key, run.version_id))
        return result

    def _check_group_index(self, run: RunRef, packs: list[PackRef],
                           contents: "_Contents | None", result: RunVerification) -> None:
        """The group index objects the run wrote (docs/FORMAT.md part 2, 16.6): each
        names only packs of the run with locks they hold, and with --read-data each
        blob it lists is read and its id checked; every lie is named by the object."""
        if self._index is None:
            try:
                self._index = group_index.written_objects(self.store)
            except StoreError as err:  # a role that may not list index/: nothing to check
                log.warning("cannot list the group index (%s): its objects are not "
                            "verified", err)
                self._index = {}
        opener = contents.opener if contents is not None else None
        secret = getattr(opener, "dedup_secret", None)
        table = {p.key: p for p in packs if p.key.startswith("data/")}

        def lock_of(pack: PackRef) -> tuple[str | None, datetime | None] | None:
            info = self._head(pack.key, pack.version_id)
            return (info.lock_mode, info.retain_until) if isinstance(info, ObjectInfo) else None

        for written in self._index.get((run.host, run.run_id), []):
            try:
                audit = group_index.audit_object(self.store, written, secret, table, lock_of)
            except S3ArchiveError as err:
                result.problems.append(Problem("group-index", f"{written.key}: cannot read "
                                               f"it: {err}", written.key))
                continue
            result.problems += [Problem("group-index", text, written.key)
                                for text in audit.problems]
            if self.options.read_data and audit.blob_count and not audit.problems:
                self._read_index_blobs(written.key, audit, table, opener, result)

    def _read_index_blobs(self, key: str, audit: "group_index.ObjectAudit",
                          table: dict[str, PackRef], opener: BlobOpener | None,
                          result: RunVerification) -> None:
        """Read the blobs an index object lists that its run does not reference as
        listed (those it does were read as the run's chunks: a damaged one is the run's
        problem, not a lie of the index), and check their ids."""
        db = self._db
        refs = (ChunkRef(digest, size, n, offset, stored, encoding)
                for digest, n, offset, stored, size, encoding in audit.blobs()
                if db.execute("SELECT 1 FROM wanted WHERE pack=? AND offset=? AND stored=? "
                              "AND hash=? AND encoding=? AND size=?",
                              (table[audit.packs[n].key].id, offset, stored, digest, encoding,
                               size)).fetchone() is None)
        reader = PackReader(self.store, audit.packs, workers=self.options.workers,
                            window=self.options.window, opener=opener, keep_data=False)
        lies = [chunk for chunk in reader.results(merge_reads(refs, max_request=MAX_REQUEST))
                if chunk.error is not None]
        if lies:
            first = lies[0]
            result.problems.append(Problem(
                "group-index", f"{key}: {len(lies)} of its {audit.blob_count} blobs are not "
                f"what it says (first: blob {first.ref.hash} in "
                f"{audit.packs[first.ref.pack].key}: {first.error})", key))

    def mixing_problems(self) -> dict[str, list[str]]:
        """By host: runs that mix plain and encrypted (docs/FORMAT.md, the mixing rule),
        over the runs verified so far."""
        found = {}
        for host, runs in self._encryption_seen.items():
            problems = mixing_problems(host, sorted(runs, key=lambda r: r.run_id))
            if problems:
                found[host] = problems
        return found

    def _spool(self) -> sqlite3.Connection:
        """The verifier's database: ``wanted`` (the data references of the run
        being verified, each once) and ``checked`` (every reference read so far,
        by pack version, with its verdict: shared between runs).  A temporary
        file, so memory does not grow with the references."""
        if self._database is None:
            db = sqlite3.connect("", check_same_thread=False)  # "": a private temporary file
            db.executescript("""
                PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
                CREATE TABLE wanted (pack INTEGER, offset INTEGER, stored INTEGER,
                    encoding TEXT, hash TEXT, size INTEGER,
                    PRIMARY KEY (pack, offset, stored, hash, encoding, size)) WITHOUT ROWID;
                CREATE TABLE checked (pack_key TEXT, version TEXT, offset INTEGER,
                    stored INTEGER, encoding TEXT, hash TEXT, size INTEGER, error TEXT,
                    PRIMARY KEY (pack_key, version, offset, stored, encoding, hash, size))
                    WITHOUT ROWID;
                CREATE TABLE fresh AS SELECT * FROM checked WHERE 0;
                CREATE TABLE run_packs (id INTEGER PRIMARY KEY, key TEXT, version TEXT);
            """)
            self._database = db
        return self._database

    @property
    def _db(self) -> sqlite3.Connection:
        return self._spool()

    def close(self) -> None:
        """Drop the database (its temporary file goes with it)."""
        if self._database is not None:
            self._database.close()
            self._database = None

    def _read_data(self, packs: list[PackRef], opener: BlobOpener | None,
                   result: RunVerification, users: "_Users", missing: set[str | None]) -> None:
        chosen_packs = [p for p in packs if p.key not in missing]
        if self.options.sample_percent < 100:
            count = (max(1, round(len(chosen_packs) * self.options.sample_percent / 100))
                     if chosen_packs else 0)
            chosen_packs = self._random.sample(chosen_packs, count)
        result.packs_read = len(chosen_packs)
        db = self._db

        db.execute("DELETE FROM run_packs")
        db.executemany("INSERT INTO run_packs VALUES (?, ?, ?)",
                       [(p.id, p.key, p.version_id) for p in chosen_packs])

        def todo() -> Iterator[ChunkRef]:
            """The run's references in the chosen packs in (pack, offset) order;
            those an earlier run checked (the same pack version) are counted, not
            read again."""
            rows = db.execute(
                "SELECT w.pack, w.offset, w.stored, w.encoding, w.hash, w.size, "
                "c.pack_key IS NOT NULL, c.error FROM wanted w "
                "JOIN run_packs p ON p.id = w.pack LEFT JOIN checked c ON "
                "c.pack_key = p.key AND c.version = p.version AND c.offset = w.offset AND "
                "c.stored = w.stored AND c.encoding = w.encoding AND c.hash = w.hash AND "
                "c.size = w.size ORDER BY w.pack, w.offset, w.stored, w.hash")
            for number, offset, stored, encoding, hash_, size, known, error in rows:
                ref = ChunkRef(hash_, size, number, offset, stored, encoding)
                if known:
                    self._count(result, ref, error, packs[number], users)
                else:
                    yield ref

        reader = PackReader(self.store, packs, workers=self.options.workers,
                            window=self.options.window, opener=opener, keep_data=False)
        verdicts: list[tuple[Any, ...]] = []
        for chunk in reader.results(merge_reads(todo(), max_request=MAX_REQUEST)):
            pack = packs[chunk.ref.pack]
            if chunk.transport:  # not a verdict on the data: count it, remember nothing
                self._count(result, chunk.ref, chunk.error, pack, users, transport=True)
                continue
            verdicts.append((*_checked_key(pack, chunk.ref), chunk.error))
            if len(verdicts) >= SPOOL_ROWS:  # into a table the query above does not read
                _remember(db, verdicts)
            self._count(result, chunk.ref, chunk.error, pack, users)
        _remember(db, verdicts)
        db.execute("INSERT OR REPLACE INTO checked SELECT * FROM fresh")
        db.execute("DELETE FROM fresh")

    @staticmethod
    def _count(result: RunVerification, ref: ChunkRef, error: str | None, pack: PackRef,
               users: "_Users", transport: bool = False) -> None:
        if transport:  # the bytes never arrived: not checked, and not damaged either
            problem = Problem("transport", f"chunk {ref.hash[:16]} at {ref.offset} of "
                              f"{pack.key}@{pack.version_id} not checked: {error}", pack.key,
                              pack.version_id)
            users.attach(problem, pack.id, ref)
            result.problems.append(problem)
            return
        result.chunks_checked += 1
        result.bytes_checked += ref.size
        if error is not None:
            problem = Problem("chunk", f"chunk {ref.hash[:16]} at {ref.offset} of "
                              f"{pack.key}@{pack.version_id}: {error}", pack.key,
                              pack.version_id)
            users.attach(problem, pack.id, ref)
            result.problems.append(problem)


_CheckedKey = tuple[str, str, int, int, str, str, int]


def _checked_key(pack: PackRef, ref: ChunkRef) -> _CheckedKey:
    """A reference within a pack version, the same in every manifest (``ref.pack`` is not)."""
    return pack.key, pack.version_id, ref.offset, ref.stored, ref.encoding, ref.hash, ref.size


def _remember(db: sqlite3.Connection, verdicts: list[tuple[Any, ...]]) -> None:
    db.executemany("INSERT INTO fresh VALUES (?, ?, ?, ?, ?, ?, ?, ?)", verdicts)
    verdicts.clear()


class _Contents:
    """What a run references below its pack table: read once to check it (and
    spool its data references), then again only to name the paths a problem
    affects."""

    opener: BlobOpener | None = None

    def read(self, spool: sqlite3.Connection | None) -> None:
        rows: list[tuple[Any, ...]] = []
        if spool is not None:
            spool.execute("DELETE FROM wanted")
        for _, refs in self.uses():
            if spool is None:
                continue
            rows.extend((r.pack, r.offset, r.stored, r.encoding, r.hash, r.size) for r in refs)
            if len(rows) >= SPOOL_ROWS:
                spool.executemany("INSERT OR IGNORE INTO wanted VALUES (?, ?, ?, ?, ?, ?)", rows)
                rows.clear()
        if spool is not None and rows:
            spool.executemany("INSERT OR IGNORE INTO wanted VALUES (?, ?, ?, ?, ?, ?)", rows)

    def uses(self) -> Iterator[tuple[Entry | Snapshot, list[ChunkRef]]]:
        """Every entry and snapshot with the data references it uses."""
        raise NotImplementedError

    def walked(self) -> None:
        """The walk is over: drop what it kept (not needed while data is read)."""


class _ManifestContents(_Contents):
    """A format-1 run (its manifest is read whole: format 1 has no other shape)."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.opener = manifest.opener

    def uses(self) -> Iterator[tuple[Entry | Snapshot, list[ChunkRef]]]:
        for entry in self.manifest.entries:
            yield entry, entry.chunks
        for snap in self.manifest.snapshots:
            yield snap, snap.chunks


class _TreeContents(_Contents):
    """A format-2 run, walked directory by directory (every node, chunk list and
    the record checked against its id as it is read)."""

    def __init__(self, tree: RunTree):
        self.tree = tree
        self.opener = tree.crypto

    def uses(self) -> Iterator[tuple[Entry | Snapshot, list[ChunkRef]]]:
        for entry in self.tree.walk():
            yield entry, entry.chunks
        for snap in self.tree.snapshots():
            yield snap, snap.chunks

    def walked(self) -> None:
        # the whole metadata packs of the walk (at 1M files 4 of ~8 MB) would stay
        # in memory through --read-data
        self.tree.blobs.release_packs()


class _Users:
    """The paths (and snapshots) a problem affects: a pack, or one reference into
    it.  Problems are collected first; :meth:`resolve` names their paths with one
    more pass over the run (only when there are problems), keeping at most
    ``_PATHS_KEPT`` paths and a count for each."""

    def __init__(self) -> None:
        self._pending: list[tuple[Problem, int, ChunkRef | None]] = []

    def attach(self, problem: Problem, pack_id: int, ref: ChunkRef | None = None) -> None:
        self._pending.append((problem, pack_id, ref))

    def resolve(self, contents: _Contents) -> None:
        if not self._pending:
            return
        by_pack: dict[int, list[tuple[Problem, ChunkRef | None]]] = defaultdict(list)
        for problem, pack_id, ref in self._pending:
            by_pack[pack_id].append((problem, ref))
        found: dict[int, dict[bytes, None]] = {id(p): {} for p, _, _ in self._pending}
        counts: dict[int, int] = {id(p): 0 for p, _, _ in self._pending}
        files: dict[bytes, list[Problem]] = {}  # affected files, for their hardlinks

        def add(problem: Problem, path: bytes) -> None:
            seen = found[id(problem)]
            if path in seen:
                return
            counts[id(problem)] += 1
            if len(seen) < _PATHS_KEPT:
                seen[path] = None

        for used, refs in contents.uses():
            if isinstance(used, Snapshot):
                path = f"snapshot:{used.name}".encode()
            else:
                path = used.path
                if used.kind == HARDLINK and used.target in files:
                    for problem in files[used.target]:
                        add(problem, path)
                    continue
            hit: list[Problem] = []
            for ref in refs:
                for problem, wanted in by_pack.get(ref.pack, ()):
                    if (wanted is None or wanted == ref) and all(p is not problem for p in hit):
                        hit.append(problem)
            for problem in hit:
                add(problem, path)
            if hit and isinstance(used, Entry) and used.kind == FILE:
                files[used.path] = hit
        for problem, _, _ in self._pending:
            problem.paths = list(found[id(problem)])
            problem.paths_total = counts[id(problem)]
        self._pending.clear()
