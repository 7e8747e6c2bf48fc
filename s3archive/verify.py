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

import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

from s3archive.archive.encryption_rule import RunEncryption as RunEncryptionInfo
from s3archive.archive.encryption_rule import mixing_problems
from s3archive.crypto.keys import Identity
from s3archive.repo.catalog import ROOT, RunRef, load_manifest
from s3archive.clock import isoformat
from s3archive.errors import NoSuchVersion, S3ArchiveError, StoreError, TransportError
from s3archive.human import json_path
from s3archive.format.model import ChunkRef, Manifest, PackRef
from s3archive.repo.pack_reader import PackReader, merge_reads
from s3archive.storage_classes import ClassSurvey
from s3archive.store.base import ObjectInfo, StoreReader

_STRENGTH = {None: 0, "GOVERNANCE": 1, "COMPLIANCE": 2}
_PATHS_KEPT = 20


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
    seed: int | None = None
    # restore keys (--key): an encrypted run's trees and data are checked only with them
    identities: tuple[Identity, ...] = ()


class Verifier:
    """Verifies runs of one store; caches HEADs and checked chunks across runs."""

    def __init__(self, store: StoreReader, options: VerifyOptions = VerifyOptions()):
        self.store = store
        self.options = options
        self._heads: dict[tuple[str, str], ObjectInfo | S3ArchiveError] = {}
        self._checked: dict[_CheckedKey, str | None] = {}  # reference -> error or None
        self._lock = threading.Lock()
        self._random = random.Random(options.seed)
        self._encryption_seen: dict[str, list[RunEncryptionInfo]] = {}

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
        try:
            manifest = load_manifest(self.store, run, part=ROOT)
            self._encryption_seen.setdefault(run.host, []).append(RunEncryptionInfo(
                run.run_id, manifest.header.encryption,
                bool((manifest.header.encryption or {}).get("encryption_started"))))
            if manifest.header.encryption is None or self.options.identities:
                manifest = load_manifest(self.store, run,
                                         identities=list(self.options.identities))
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
        users = _PackUsers(manifest)
        for pack, problems in zip(manifest.packs, checks):
            for problem in problems:
                users.attach(problem, pack.id)
                result.problems.append(problem)
        if self.options.read_data and result.contents_checked:
            missing = {p.key for p in result.problems if p.kind == "missing"}
            self._read_data(manifest, result, users, missing)
        return result

    def mixing_problems(self) -> dict[str, list[str]]:
        """By host: runs that mix plain and encrypted (docs/FORMAT.md, the mixing rule),
        over the runs verified so far."""
        found = {}
        for host, runs in self._encryption_seen.items():
            problems = mixing_problems(host, sorted(runs, key=lambda r: r.run_id))
            if problems:
                found[host] = problems
        return found

    def _read_data(self, manifest: Manifest, result: RunVerification, users: "_PackUsers",
                   missing: set[str | None]) -> None:
        packs = [p for p in manifest.packs if p.key not in missing]
        if self.options.sample_percent < 100:
            count = max(1, round(len(packs) * self.options.sample_percent / 100)) if packs else 0
            packs = self._random.sample(packs, count)
        result.packs_read = len(packs)
        chosen = {p.id for p in packs}
        wanted = sorted({ref for ref in _all_chunks(manifest) if ref.pack in chosen},
                        key=lambda c: (c.pack, c.offset, c.stored, c.hash))
        todo = []
        for ref in wanted:
            known = self._checked.get(_checked_key(manifest.packs[ref.pack], ref), "unknown")
            if known == "unknown":
                todo.append(ref)
            else:
                self._count(result, ref, known, manifest.packs[ref.pack], users)
        reader = PackReader(self.store, manifest.packs, workers=self.options.workers,
                            opener=manifest.opener)
        for chunk in reader.results(merge_reads(todo, max_request=16 << 20)):
            pack = manifest.packs[chunk.ref.pack]
            if chunk.transport:  # not a verdict on the data: count it, remember nothing
                self._count(result, chunk.ref, chunk.error, pack, users, transport=True)
                continue
            self._checked[_checked_key(pack, chunk.ref)] = chunk.error
            self._count(result, chunk.ref, chunk.error, pack, users)

    @staticmethod
    def _count(result: RunVerification, ref: ChunkRef, error: str | None, pack: PackRef,
               users: "_PackUsers", transport: bool = False) -> None:
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


def _all_chunks(manifest: Manifest) -> Iterator[ChunkRef]:
    for entry in manifest.entries:
        yield from entry.chunks
    for snap in manifest.snapshots:
        yield from snap.chunks


class _PackUsers:
    """Which paths (and snapshots) use a pack, or one reference into it — built on demand."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self._by_pack: dict[int, list[tuple[ChunkRef, bytes]]] | None = None

    def _index(self) -> dict[int, list[tuple[ChunkRef, bytes]]]:
        if self._by_pack is None:
            index: dict[int, list[tuple[ChunkRef, bytes]]] = defaultdict(list)
            hardlinks: dict[bytes, list[bytes]] = defaultdict(list)
            for entry in self.manifest.entries:
                if entry.kind == "hardlink" and entry.target is not None:
                    hardlinks[entry.target].append(entry.path)
            for entry in self.manifest.entries:
                for ref in entry.chunks:
                    for path in [entry.path, *hardlinks.get(entry.path, [])]:
                        index[ref.pack].append((ref, path))
            for snap in self.manifest.snapshots:
                for ref in snap.chunks:
                    index[ref.pack].append((ref, f"snapshot:{snap.name}".encode()))
            self._by_pack = index
        return self._by_pack

    def attach(self, problem: Problem, pack_id: int, ref: ChunkRef | None = None) -> None:
        seen: dict[bytes, None] = {}
        for used, path in self._index().get(pack_id, []):
            if ref is None or used == ref:
                seen.setdefault(path)
        problem.paths = list(seen)[:_PATHS_KEPT]
        problem.paths_total = len(seen)
