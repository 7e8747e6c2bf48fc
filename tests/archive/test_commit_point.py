"""The commit point: unique run keys, an idempotent manifest PUT, a sane clock.

In-memory Object Lock store with fake clocks (tests/support/memory_store.py);
the RGW cases are in tests/archive/test_archive_rgw.py.
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import s3archive.archive.commit as commit_module
from s3archive.archive.archiver import Archiver
from s3archive.archive.retention import RetainUntilPast
from s3archive.clock import ClockSkewed
from s3archive.config import parse_config
from s3archive.errors import StoreError
from s3archive.format.run_id import RUN_ID, new_run_id
from s3archive.repo.catalog import list_runs, load_manifest, run_id_time
from s3archive.store.base import ObjectLock, PutResult
from support.memory_store import FakeClock, MemoryStore
from support.store_wrapper import StoreWrapper

START = datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc)


class Host:
    """One configuration (its own tree and cache) archiving into ``store``."""

    def __init__(self, root: Path, store: Any, clock: FakeClock, name: str = "web",
                 retention: dict[str, Any] | None = None):
        etc = root / "etc"
        (etc / "pickers.d").mkdir(parents=True)
        self.tree = root / "tree"
        self.tree.mkdir()
        (self.tree / "only-here").write_bytes(os.fsencode(str(root)) * 100)
        picker = etc / "pickers.d" / "10-tree"
        picker.write_text(f"#!/bin/sh\necho '{self.tree}'\n")
        picker.chmod(0o755)
        self.store = store
        self.clock = clock
        self.config = parse_config(
            {"s3": {"bucket": "commit-test"}, "host": {"name": name},
             "retention": retention or {},
             "local": {"cache_dir": str(root / "cache"), "state_file": str(root / "s.json")}},
            etc / "config.toml", clock=clock)

    def archive(self):
        return Archiver(self.config, self.store, clock=self.clock).run()


@pytest.fixture
def no_waiting(monkeypatch) -> None:
    monkeypatch.setattr(commit_module, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))


# ---------------------------------------------------------------- run ids (defect 5)

class RaceFirst(StoreWrapper):
    """Runs ``other`` (a whole archive) just before this store's first manifest PUT:
    both runs listed the host's runs before either wrote its manifest."""

    def __init__(self, inner: MemoryStore, other: Host):
        self.inner, self.other, self.raced = inner, other, False

    def _race(self, key: str) -> None:
        if key.startswith("runs/") and not self.raced:
            self.raced = True
            self.other.archive()

    def put(self, key: str, body: bytes, lock: ObjectLock | None,
            legal_hold: bool = False) -> PutResult:
        self._race(key)
        return self.inner.put(key, body, lock, legal_hold)

    def put_once(self, key: str, body: bytes, lock: ObjectLock | None,
                 legal_hold: bool = False) -> PutResult:
        self._race(key)
        return self.inner.put_once(key, body, lock, legal_hold)


def test_two_configurations_of_one_host_name_in_the_same_second_write_two_runs(
        tmp_path: Path) -> None:
    clock = FakeClock(START)  # both start in the same second: the clock stands still
    store = MemoryStore(clock)
    second = Host(tmp_path / "b", store, clock)
    first = Host(tmp_path / "a", RaceFirst(store, second), clock)
    summary = first.archive()
    assert first.store.raced
    runs = list_runs(store, "web")
    assert len(runs) == 2, [(r.key, r.version_id) for r in runs]
    assert len({r.key for r in runs}) == 2, "two runs wrote one key"
    assert {run_id_time(r.run_id) for r in runs} == {START}
    # each run restores its own tree, not the other's
    for host, run in ((first, next(r for r in runs if r.key == summary.manifest_key)),
                      (second, next(r for r in runs if r.key != summary.manifest_key))):
        manifest = load_manifest(store, run)
        paths = {e.path for e in manifest.entries}
        assert os.fsencode(host.tree / "only-here") in paths
        other = first if host is second else second
        assert os.fsencode(other.tree / "only-here") not in paths


def test_run_ids_sort_by_start_time_and_a_hosts_runs_keep_their_order() -> None:
    at = START.replace(microsecond=250_000)
    rng = random.Random(5)
    taken: set[str] = set()
    ids = []
    for _ in range(10):  # 10 runs of one host in one second: each sorts after the last
        run_id = new_run_id(at, taken, rng.randrange)
        assert RUN_ID.fullmatch(run_id) and run_id_time(run_id) == START
        assert all(run_id > other for other in taken)
        taken.add(run_id)
        ids.append(run_id)
    assert new_run_id(at + timedelta(seconds=1), taken, rng.randrange) > max(ids)
    # two writers that see no runs draw from 2**30 suffixes
    assert len({new_run_id(at, set()) for _ in range(1000)}) == 1000
    # ids of earlier versions still name their start
    assert run_id_time("20311124T031500Z") == START
    assert run_id_time("20311124T031500Z-2") == START
    assert RUN_ID.fullmatch("20311124T031500Z-2") and not RUN_ID.fullmatch("20311124T031500Z-ABCDEF")


# ---------------------------------------------------------------- the commit PUT (defect 6)

class LostAcks(StoreWrapper):
    """PUTs under ``runs/`` reach the store, then the connection breaks
    (``lose`` acknowledgements, counted down); listings fail ``list_failures`` times."""

    def __init__(self, inner: MemoryStore, lose: int, list_failures: int = 0,
                 arrive: bool = True):
        self.inner, self.lose, self.list_failures, self.arrive = inner, lose, list_failures, arrive

    def put(self, key: str, body: bytes, lock: ObjectLock | None,
            legal_hold: bool = False) -> PutResult:
        return self._put(self.inner.put, key, body, lock, legal_hold)

    def put_once(self, key: str, body: bytes, lock: ObjectLock | None,
                 legal_hold: bool = False) -> PutResult:
        return self._put(self.inner.put_once, key, body, lock, legal_hold)

    def _put(self, put: Any, key: str, body: bytes, lock: ObjectLock | None,
             legal_hold: bool) -> PutResult:
        if key.startswith("runs/") and self.lose > 0:
            self.lose -= 1
            if self.arrive:
                put(key, body, lock, legal_hold)
            raise StoreError(f"PUT {key}: S3 request failed: Connection was closed before we "
                             "received a valid response from endpoint URL")
        return put(key, body, lock, legal_hold)

    def list_versions(self, prefix: str):
        if prefix.endswith(".jsonl.zst") and self.list_failures > 0:  # the commit's look
            self.list_failures -= 1
            raise StoreError(f"ListObjectVersions {prefix}: S3 request failed: read timeout")
        return self.inner.list_versions(prefix)


def _one_version_of_the_run(store: MemoryStore, summary) -> None:
    assert summary.exit_code == 0 and summary.manifest_key
    versions = [v for v in store.versions("runs/") if not v.is_delete_marker]
    assert [v.key for v in versions] == [summary.manifest_key], "the run key has one version"
    (run,) = list_runs(store, "web")
    assert load_manifest(store, run).header.run_id == summary.run_id


def test_a_lost_acknowledgement_of_the_manifest_put_is_recognised(
        tmp_path: Path, no_waiting: None) -> None:
    clock = FakeClock(START)
    store = MemoryStore(clock)
    host = Host(tmp_path, LostAcks(store, lose=1), clock)
    summary = host.archive()
    _one_version_of_the_run(store, summary)
    assert host.store.lose == 0


def test_every_acknowledgement_lost_still_commits_the_run_once(
        tmp_path: Path, no_waiting: None) -> None:
    clock = FakeClock(START)
    store = MemoryStore(clock)
    host = Host(tmp_path, LostAcks(store, lose=10, list_failures=1), clock)
    summary = host.archive()
    _one_version_of_the_run(store, summary)
    # and the next run finds everything in place: the cache was committed
    clock.advance(timedelta(days=1))
    again = Host.archive(host)
    assert again.packs_uploaded == 0 and again.files_unchanged == 1


def test_a_manifest_that_never_arrives_fails_the_run_with_no_manifest(
        tmp_path: Path, no_waiting: None) -> None:
    clock = FakeClock(START)
    store = MemoryStore(clock)
    host = Host(tmp_path, LostAcks(store, lose=10, arrive=False), clock)
    with pytest.raises(StoreError, match=r"the manifest runs/web/\S+ was not written: .*Connection"):
        host.archive()
    assert store.versions("runs/") == []
    assert host.store.lose == 10 - 4  # four attempts, each after looking first
    # the file rows were copied while the group index was written: undone, as the run
    # never committed (its files are read again next time)
    host.store.lose = 0
    again = host.archive()
    assert again.exit_code == 0 and again.files_unchanged == 0


# ---------------------------------------------------------------- the clock (defect 12)

@pytest.mark.parametrize("skew, words", [(timedelta(days=-400), "400 days behind"),
                                         (timedelta(days=2), "2 days ahead of"),
                                         (timedelta(minutes=-20), "20 minutes behind")])
def test_a_host_clock_far_off_fails_before_any_upload(tmp_path: Path, skew: timedelta,
                                                      words: str) -> None:
    store_clock = FakeClock(START)
    store = MemoryStore(store_clock)
    host = Host(tmp_path, store, FakeClock(START + skew))
    with pytest.raises(ClockSkewed) as caught:
        host.archive()
    message = str(caught.value)
    assert f"this host's clock is {words} the store's" in message, message
    assert "\n" not in message
    assert store.requests["PutObject"] == 0 and store.versions() == []


def test_a_clock_a_few_minutes_off_is_accepted(tmp_path: Path) -> None:
    store = MemoryStore(FakeClock(START))
    summary = Host(tmp_path, store, FakeClock(START - timedelta(minutes=10))).archive()
    assert summary.exit_code == 0 and summary.manifest_key


def test_a_retain_until_in_the_past_by_the_stores_clock_fails_before_any_upload(
        tmp_path: Path) -> None:
    store = MemoryStore(FakeClock(START))
    host_clock = FakeClock(START - timedelta(minutes=14))  # inside the tolerated skew
    until = (START - timedelta(minutes=4)).isoformat()  # ahead of the host, behind the store
    host = Host(tmp_path, store, host_clock, retention={"until": until})
    with pytest.raises(RetainUntilPast) as caught:
        host.archive()
    assert str(caught.value).startswith("retain-until 2031-11-24T03:11:01")
    assert "is in the past (the store's time is 2031-11-24T03:15" in str(caught.value)
    assert store.requests["PutObject"] == 0


def test_request_time_too_skewed_names_the_clock(monkeypatch) -> None:
    from botocore.exceptions import ClientError

    import s3archive.clock as clock_module
    from s3archive.store.errors import describe_error

    monkeypatch.setattr(clock_module, "utc_now",
                        lambda: datetime(2025, 10, 25, 12, 0, tzinfo=timezone.utc))
    err = ClientError({"Error": {"Code": "RequestTimeTooSkewed", "Message": None},
                       "ResponseMetadata": {"HTTPHeaders": {
                           "date": "Sun, 29 Nov 2026 12:00:00 GMT"}}}, "PutObject")
    assert describe_error(err).startswith(
        "this host's clock is 400 days behind the store's (host 2025-10-25T12:00:00Z, "
        "store 2026-11-29T12:00:00Z)")


def test_a_clock_stepped_back_a_little_still_sorts_the_new_run_last() -> None:
    rng = random.Random(6)
    earlier = new_run_id(START + timedelta(minutes=10), set(), rng.randrange)
    # the clock went back 10 minutes: the new id takes the later second, and sorts last
    stepped = new_run_id(START, {earlier}, rng.randrange)
    assert stepped > earlier and run_id_time(stepped) == START + timedelta(minutes=10)
    # an id further ahead (planted, or a clock far off) is not followed
    planted = new_run_id(START + timedelta(hours=2), set(), rng.randrange)
    assert run_id_time(new_run_id(START, {planted}, rng.randrange)) == START
