"""Months of daily runs against the in-memory Object Lock store: the lease holds.

The real ``Archiver`` archives a real file tree once a simulated day; the
bucket's lifecycle runs once a day in between.  After every run and every
lifecycle pass the whole bucket is checked:

* the retention invariant: every pack version a live manifest references
  exists and is locked (its mode or COMPLIANCE) at least until the manifest's
  retain-until, and no live manifest has gone;
* nothing is kept alive for nothing: no pack version is locked longer than
  the latest retain-until of a run that references it plus the slack, so
  lifecycle collects every pack a few days after the last run needing it
  lapses, and storage stays bounded;
* a run never deletes; it extends a lock only when the lock falls short of
  the run's retain-until, to retain-until + slack, and only for a pack of
  which it needs at least ``repack_below`` — a pack it needs little of is
  rewritten instead;
* every run restores byte-identical content (ranged GETs of the pinned
  versions, decoded and hash-checked).
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from s3archive.archive.archiver import ArchiveSummary, Archiver
from s3archive.clock import isoformat
from s3archive.config import Config, parse_config
from s3archive.errors import NoSuchVersion, StoreError
from s3archive.archive.local_cache import cache_path
from s3archive.format.model import Manifest
from s3archive.store.base import ObjectLock
from support.store_wrapper import StoreWrapper
from support.runs import PACK_PREFIXES, read_run
from support.memory_store import FakeClock, MemoryStore
from support.retention_checks import (check_lease_bound, check_live_run, check_restores,
                                      tree_digests)

DAY = timedelta(days=1)
HOST = "simhost"


# ---------------------------------------------------------------- harness

class GuardedStore(StoreWrapper):
    """What the archiver sees: the memory store, with deletes and reads of
    ``packs/`` forbidden (the backup role has neither), and every retention
    update recorded together with the lock it replaced."""

    def __init__(self, inner: MemoryStore):
        self.inner = inner
        self.deletes: list[tuple[str, str]] = []
        self.pack_reads: list[tuple[str, str | None]] = []
        self.extensions: list[tuple[str, str, datetime | None, ObjectLock]] = []
        self.failed_extensions: list[tuple[str, str, str]] = []

    def delete_version(self, key: str, version_id: str) -> None:
        self.deletes.append((key, version_id))
        raise AssertionError(f"an archive run deleted {key}@{version_id}")

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        if key.startswith("packs/"):
            self.pack_reads.append((key, version_id))
            raise StoreError(f"GET {key}: AccessDenied (the backup role cannot read packs/)")
        return self.inner.get(key, version_id, byte_range)

    def extend_retention(self, key: str, version_id: str, lock: ObjectLock) -> None:
        before = self.inner.version(key, version_id)
        try:
            self.inner.extend_retention(key, version_id, lock)
        except StoreError as err:
            self.failed_extensions.append((key, version_id, type(err).__name__))
            raise
        self.extensions.append((key, version_id, before.retain_until if before else None, lock))


@dataclass
class RunRecord:
    day: int
    summary: ArchiveSummary
    key: str
    version_id: str
    manifest: Manifest
    expected: dict[bytes, str]  # path -> sha256 of the content at run time
    extensions: list[tuple[str, str, datetime | None, ObjectLock]]
    failed: list[tuple[str, str, str]]
    requests: dict[str, int]


@dataclass
class Sim:
    root: Path
    clock: FakeClock
    store: MemoryStore
    guard: GuardedStore
    config: Config
    tree: Path
    slack: timedelta
    repack_below: float
    runs: list[RunRecord] = field(default_factory=list)
    # (pack key, version) -> the latest retain-until of any run referencing it
    needed_until: dict[tuple[str, str], datetime] = field(default_factory=dict)
    _manifests: dict[tuple[str, str], Manifest] = field(default_factory=dict)

    @property
    def day(self) -> int:
        return len(self.runs)

    # -- the bucket's content, read without counting requests
    def manifest(self, key: str, version_id: str) -> Manifest:
        found = self._manifests.get((key, version_id))
        if found is None:
            stored = self.store.version(key, version_id)
            assert stored is not None and stored.body is not None
            found = self._manifests[(key, version_id)] = read_run(self.store, key, stored.body)
        return found

    def pack_versions(self) -> list:
        return [v for prefix in PACK_PREFIXES for v in self.store.versions(prefix)
                if not v.is_delete_marker]

    # -- one day
    def run(self) -> RunRecord:
        expected = tree_digests(self.tree)
        before = dict(self.store.requests)
        extensions_before = len(self.guard.extensions)
        failed_before = len(self.guard.failed_extensions)
        summary = Archiver(self.config, self.guard, clock=self.clock).run()
        requests = {op: n - before.get(op, 0) for op, n in self.store.requests.items()
                    if n - before.get(op, 0)}
        assert summary.exit_code == 0, summary.warnings
        assert summary.warnings == []
        assert self.guard.deletes == [] and self.guard.pack_reads == []
        assert summary.manifest_key is not None
        current = self.store.versions(summary.manifest_key)[-1]
        manifest = self.manifest(summary.manifest_key, current.version_id)
        assert isoformat(manifest.header.retain_until) == summary.retain_until
        record = RunRecord(self.day, summary, summary.manifest_key, current.version_id, manifest,
                           expected, self.guard.extensions[extensions_before:],
                           self.guard.failed_extensions[failed_before:], requests)
        self.runs.append(record)
        for pack in manifest.packs:
            ref = (pack.key, pack.version_id)
            self.needed_until[ref] = max(self.needed_until.get(ref, manifest.header.retain_until),
                                         manifest.header.retain_until)
        check_run(self, record)
        check_bucket(self)
        return record

    def next_day(self) -> None:
        self.clock.advance(DAY)
        self.store.lifecycle_day()
        check_bucket(self)


def make_sim(tmp_path: Path, retention: dict[str, Any],
             start: datetime = datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc)) -> Sim:
    clock = FakeClock(start)
    store = MemoryStore(clock, bucket="sim-bucket")
    etc = tmp_path / "etc"
    (etc / "pickers.d").mkdir(parents=True)
    (etc / "snapshots.d").mkdir()
    tree = tmp_path / "tree"
    tree.mkdir()
    picker = etc / "pickers.d" / "10-tree"
    picker.write_text(f"#!/bin/sh\necho '{tree}'\n")
    picker.chmod(0o755)
    document = {
        "s3": {"bucket": "sim-bucket"},
        "host": {"name": HOST},
        "retention": retention,
        "content": {"pack_size_mib": 1},
        "local": {"cache_dir": str(tmp_path / "cache"),
                  "state_file": str(tmp_path / "state" / "last-run.json")},
    }
    config = parse_config(document, etc / "config.toml", clock=clock)
    _documents[config.path] = document
    return Sim(tmp_path, clock, store, GuardedStore(store), config, tree,
               slack=timedelta(days=config.retention.slack_days),
               repack_below=config.retention.repack_below)


_documents: dict[Path, dict[str, Any]] = {}


def _document(sim: Sim) -> dict[str, Any]:
    return _documents[sim.config.path]


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ---------------------------------------------------------------- checks

def check_bucket(sim: Sim) -> None:
    """The retention invariant and the garbage bound, over the whole bucket."""
    now = sim.clock()
    live_manifests = 0
    for stored in sim.store.versions("runs/"):
        if stored.is_delete_marker:
            continue
        manifest = sim.manifest(stored.key, stored.version_id)
        header = manifest.header
        if header.retain_until <= now:
            continue
        live_manifests += 1
        check_live_run(sim.store, stored, manifest)
    # every run still under its lock has its manifest
    for run in sim.runs:
        if run.manifest.header.retain_until > now:
            assert sim.store.version(run.key, run.version_id) is not None, f"run {run.key} gone"
    assert live_manifests == sum(1 for r in sim.runs if r.manifest.header.retain_until > now)
    # nothing is kept alive beyond the last run that needs it (+ slack): so
    # lifecycle collects it a day or two later and storage stays bounded

    def lease_needed(key: str, version_id: str) -> datetime | None:
        needed = sim.needed_until.get((key, version_id))
        return needed + sim.slack if needed is not None else None

    check_lease_bound(sim.pack_versions(), lease_needed, now)


def check_run(sim: Sim, run: RunRecord) -> None:
    manifest = run.manifest
    needed = manifest.header.retain_until
    pack_until = needed + sim.slack
    sizes = {p.key: p.size for p in manifest.packs}
    used: dict[str, dict[str, int]] = {}
    for entry in manifest.entries:
        for chunk in entry.chunks:
            used.setdefault(manifest.packs[chunk.pack].key, {})[chunk.hash] = chunk.stored
    for blob in manifest.metadata:  # format 2: trees, chunk lists, the run record
        used.setdefault(manifest.packs[blob.pack].key, {})[blob.hash] = blob.stored
    # extensions are batched by slack and never spent on a pack barely needed
    for key, version_id, before, lock in run.extensions:
        assert before is not None and before < needed, \
            f"day {run.day}: extended {key} although locked until {before} >= {needed}"
        assert lock.retain_until == pack_until, (lock.retain_until, pack_until)
        assert lock.mode in (manifest.header.lock_mode, "COMPLIANCE")
        share = sum(used.get(key, {}).values()) / sizes[key]
        assert share >= sim.repack_below, \
            f"day {run.day}: extended {key} for {share:.1%} of its bytes (repack_below)"
    assert run.summary.packs_extended == len(run.extensions)
    assert run.requests.get("PutObjectRetention", 0) == len(run.extensions) + len(run.failed)
    assert run.requests.get("DeleteObject", 0) == 0
    check_restore(sim, run)


def check_restore(sim: Sim, run: RunRecord) -> None:
    """Every file of the run reads back byte-identical from the pinned versions."""
    check_restores(sim.store, run.manifest, run.expected, f"day {run.day}")


def live_runs(sim: Sim) -> list[RunRecord]:
    now = sim.clock()
    return [r for r in sim.runs if r.manifest.header.retain_until > now]


# ---------------------------------------------------------------- the store double

def test_memory_store_keeps_object_lock_rules() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    until = clock() + 3 * DAY
    first = store.put("k", b"0123456789", ObjectLock("GOVERNANCE", until))
    second = store.put("k", b"new", None)
    assert store.get("k") == b"new"
    assert store.get("k", first.version_id, (2, 4)) == b"234"
    assert store.get("k", first.version_id, (8, 100)) == b"89"  # S3 clamps the end
    with pytest.raises(StoreError):
        store.get("k", first.version_id, (10, 12))
    with pytest.raises(StoreError):  # no lock in the past
        store.put("x", b"", ObjectLock("GOVERNANCE", clock() - DAY))
    with pytest.raises(StoreError):  # no shortening, no bypass
        store.extend_retention("k", first.version_id, ObjectLock("GOVERNANCE", until - DAY))
    with pytest.raises(StoreError):
        store.delete_version("k", first.version_id)
    with pytest.raises(NoSuchVersion):
        store.extend_retention("k", "v-none", ObjectLock("GOVERNANCE", until))
    with pytest.raises(StoreError):  # GOVERNANCE -> COMPLIANCE needs a bypass (AWS)
        store.extend_retention("k", first.version_id, ObjectLock("COMPLIANCE", until + DAY))
    store.extend_retention("k", first.version_id, ObjectLock("GOVERNANCE", until + DAY))
    strict = store.put("c", b"c", ObjectLock("COMPLIANCE", until))
    with pytest.raises(StoreError):  # COMPLIANCE stays COMPLIANCE
        store.extend_retention("c", strict.version_id, ObjectLock("GOVERNANCE", until + DAY))
    with pytest.raises(StoreError):
        store.extend_retention("c", strict.version_id, ObjectLock("COMPLIANCE", until - DAY))
    store.extend_retention("c", strict.version_id, ObjectLock("COMPLIANCE", until + DAY))
    store.set_legal_hold("k", second.version_id, True)
    with pytest.raises(StoreError):
        store.delete_version("k", second.version_id)
    store.set_legal_hold("k", second.version_id, False)

    clock.advance(DAY)
    store.lifecycle_day()  # "new" is a day old: a delete marker on top
    with pytest.raises(NoSuchVersion):
        store.get("k")
    assert [e.key for e in store.list_keys("")] == []
    marker = store.versions("k")[-1]
    assert marker.is_delete_marker
    with pytest.raises(StoreError):
        store.head("k", marker.version_id)
    clock.advance(DAY)
    store.lifecycle_day()  # "new" expires; the locked version stays
    assert [v.version_id for v in store.versions("k")] == [first.version_id, marker.version_id]
    clock.advance(DAY)
    store.lifecycle_day()
    assert len(store.versions("k")) == 2  # locked until day 4
    clock.advance(DAY)
    store.lifecycle_day()  # the lock lapses now: version and marker go
    assert store.versions("k") == [] and store.versions("c") == []
    assert store.requests["PutObjectRetention"] == 7


# ---------------------------------------------------------------- the simulation

def test_months_of_daily_runs_keep_the_retention_invariant(tmp_path: Path) -> None:
    retention = {"daily_days": 4, "weekly_days": 16, "monthly_days": 45, "yearly_days": 130,
                 "slack_days": 4, "repack_below": 0.3}
    sim = make_sim(tmp_path, retention)
    rng = random.Random(20311124)
    names: list[str] = []

    def new_file(size: int | None = None) -> None:
        name = f"d{rng.randrange(4)}/f{len(sim.runs)}-{rng.randrange(10**6)}.bin"
        names.append(name)
        write(sim.tree / name, rng.randbytes(size or rng.randrange(1_000, 60_000)))

    for _ in range(24):
        new_file()
    write(sim.tree / "big.bin", rng.randbytes(700_000))
    write(sim.tree / "text.log", b"".join(b"line %d of a log\n" % i for i in range(20_000)))

    days = 300
    bulk_day, bulk_deleted_day = 40, 41
    wipe_days = {75, 160}
    quiet_daily_zero = quiet_daily = 0
    counts: list[int] = []
    bulk_pack = None
    rewritten_on: list[int] = []
    keep_moved_on = None
    for day in range(days):
        changed = False
        if day == bulk_day:  # a pack made mostly of files about to be deleted
            for i in range(10):
                write(sim.tree / "bulk" / f"big-{i}.bin", rng.randbytes(90_000))
            write(sim.tree / "bulk" / "keep.txt", rng.randbytes(3_000))
            changed = True
        elif day == bulk_deleted_day:
            for i in range(10):
                (sim.tree / "bulk" / f"big-{i}.bin").unlink()
            changed = True
        elif day not in wipe_days and rng.random() < 0.35:
            changed = True
            for _ in range(rng.randrange(1, 3)):
                name = rng.choice(names)
                write(sim.tree / name, rng.randbytes(rng.randrange(1_000, 60_000)))
            if rng.random() < 0.3:
                new_file()
            if rng.random() < 0.3 and len(names) > 15:
                victim = names.pop(rng.randrange(len(names)))
                (sim.tree / victim).unlink()
        if day in wipe_days:
            shutil.rmtree(tmp_path / "cache")

        run = sim.run()
        summary = run.summary
        # new metadata (trees of changed directories) fits in one small metadata pack
        data_packs_uploaded = summary.packs_uploaded - (1 if summary.trees_new else 0)
        if day in wipe_days:  # rebuilt from the latest run: no data re-uploaded
            assert data_packs_uploaded == 0 and summary.chunks_new == 0, summary
            assert summary.files_unchanged == summary.files
        if day == bulk_day:
            assert data_packs_uploaded == 1
            keep_chunk = next(e.chunks[0] for e in run.manifest.entries
                              if e.path.endswith(b"bulk/keep.txt"))
            bulk_pack = run.manifest.packs[keep_chunk.pack]
            assert bulk_pack.size > 900_000
        if summary.packs_rewritten:
            rewritten_on.append(day)
        if bulk_pack is not None and day > bulk_day and keep_moved_on is None:
            keep_now = next(e.chunks[0] for e in run.manifest.entries
                            if e.path.endswith(b"bulk/keep.txt"))
            moved_to = run.manifest.packs[keep_now.pack]
            if moved_to.key != bulk_pack.key:  # copied into a pack written by this run
                keep_moved_on = day
                assert summary.packs_rewritten >= 1, summary
                written = sim.store.version(moved_to.key, moved_to.version_id)
                assert written is not None and written.last_modified == sim.clock()
        if not changed and summary.tier == "daily":
            # (the state file, written next to the tree, changes the mtime of the
            # directory above it: that node and those above are new metadata)
            assert data_packs_uploaded == 0 and summary.bytes_read == 0, summary
            assert summary.trees_new <= len(sim.tree.parts) + 1, summary
            quiet_daily += 1
            quiet_daily_zero += run.requests.get("PutObjectRetention", 0) == 0
        counts.append(len(sim.pack_versions()))
        if day % 10 == 9:  # older live runs still restore
            for older in live_runs(sim):
                check_restore(sim, older)
        sim.next_day()

    # the small file left in the bulk pack was copied out, not the pack extended
    assert keep_moved_on is not None and keep_moved_on <= bulk_deleted_day + 30, rewritten_on
    assert sim.store.version(bulk_pack.key, bulk_pack.version_id) is None, "bulk pack not collected"
    # extensions are batched: most quiet days cost no retention request at all
    assert quiet_daily >= 60 and quiet_daily_zero >= 0.6 * quiet_daily, \
        (quiet_daily_zero, quiet_daily)
    # storage is bounded: once the longest-kept runs have lapsed, it falls
    # back below its peak and stays there while the tree keeps changing
    lapsed = max(r.day for r in sim.runs if r.summary.tier == "yearly") + 130 + 4 + 3
    assert lapsed + 60 < days
    assert max(counts[lapsed:]) < max(counts[:lapsed]), (max(counts[:lapsed]), counts[lapsed:])
    assert sim.guard.deletes == []
    print(f"pack versions per day: max {max(counts)}, last {counts[-1]}; "
          f"bulk pack rewritten on day {keep_moved_on}; "
          f"quiet daily runs without extension: {quiet_daily_zero}/{quiet_daily}; "
          f"rewrites on days {rewritten_on}")


def test_lost_cache_rebuilds_without_uploading(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, {"daily_days": 3, "weekly_days": 8, "monthly_days": 20,
                              "yearly_days": 40, "slack_days": 2, "repack_below": 0.3})
    rng = random.Random(7)
    for i in range(12):
        write(sim.tree / f"f{i}", rng.randbytes(rng.randrange(5_000, 80_000)))
    first = sim.run()
    assert first.summary.packs_uploaded >= 1
    sim.next_day()
    write(sim.tree / "f3", rng.randbytes(10_000))
    sim.run()
    sim.next_day()
    before = {(v.key, v.version_id) for v in sim.store.versions()}
    shutil.rmtree(tmp_path / "cache")
    third = sim.run()
    assert third.summary.chunks_new == 0
    assert third.summary.bytes_read == 0 and third.summary.files_unchanged == 12
    # removing the cache changed the mtime of the directory above the tree: its node
    # and those above it are new (one small metadata pack), nothing else
    new = [v.key.split("/")[0] for v in sim.store.versions()
           if (v.key, v.version_id) not in before]
    assert sorted(new) == ["meta", "runs"], new
    assert third.summary.stats.trees_new <= len(sim.tree.parts) + 1
    sim.next_day()


def test_pack_deleted_behind_the_caches_back_is_written_again(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, {"daily_days": 2, "weekly_days": 2, "monthly_days": 2,
                              "yearly_days": 2, "slack_days": 1, "repack_below": 0.3})
    rng = random.Random(11)
    for i in range(6):
        write(sim.tree / f"f{i}", rng.randbytes(40_000))
    first = sim.run()
    (pack,) = [p for p in first.manifest.packs if p.key.startswith("data/")]
    # the host is off for a while: the run lapses, lifecycle removes its pack
    for _ in range(5):
        sim.next_day()
    assert sim.store.version(pack.key, pack.version_id) is None
    # ... while the cache still believes the pack is locked for 1.5 more days
    db = cache_path(sim.config.local.cache_dir, "sim-bucket", "", HOST)
    with sqlite3.connect(db) as conn:
        changed = conn.execute("UPDATE packs SET retain_until=? WHERE id="
                               "(SELECT id FROM pack_names WHERE key=?)", (isoformat(
                                   sim.clock() + timedelta(hours=36)), pack.key)).rowcount
    assert changed == 1
    second = sim.run()  # extension -> NoSuchVersion -> the chunks are written again
    assert second.failed == [(pack.key, pack.version_id, "NoSuchVersion")]
    assert second.extensions == []
    # the data pack, and a metadata pack (the old one lapsed too; the cache knew it)
    assert second.summary.packs_uploaded == 2 and second.summary.chunks_new == 6
    (new_pack,) = [p for p in second.manifest.packs if p.key.startswith("data/")]
    assert (new_pack.key, new_pack.version_id) != (pack.key, pack.version_id)
    sim.next_day()
    third = sim.run()  # and the cache now knows the new version
    assert third.manifest.packs == second.manifest.packs
    assert third.summary.packs_uploaded == 0 and third.extensions == []


def test_switch_to_compliance_locks_every_reused_pack_in_compliance(tmp_path: Path) -> None:
    retention = {"daily_days": 5, "weekly_days": 5, "monthly_days": 5, "yearly_days": 5,
                 "slack_days": 3, "repack_below": 0.3}
    sim = make_sim(tmp_path, retention)
    rng = random.Random(3)
    for i in range(5):
        write(sim.tree / f"f{i}", rng.randbytes(30_000))
    first = sim.run()
    assert first.manifest.header.lock_mode == "GOVERNANCE"
    sim.next_day()
    sim.config = parse_config({**_document(sim), "retention": {**retention, "mode": "COMPLIANCE"}},
                              sim.config.path, clock=sim.clock)
    second = sim.run()  # the packs' GOVERNANCE locks are long enough, but not strong enough
    assert second.manifest.header.lock_mode == "COMPLIANCE"
    for pack in second.manifest.packs:
        assert sim.store.version(pack.key, pack.version_id).lock_mode == "COMPLIANCE"
    sim.next_day()
    sim.run()
