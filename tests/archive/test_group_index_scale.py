"""A fleet of 100 hosts in one bucket, simulated on the in-memory store (issue 13 item 4).

The other 99 hosts' runs are their group index objects, written here in the
format of docs/FORMAT.md part 2, 16.2 (so the reader is held to the spec, not
to the writer's code): a first run indexing every file of the host (90 % of
them the same image on every host), then daily runs indexing 1 % changed
files.  One real host archives daily; its list requests beyond its own stay
constant, its GETs are the new objects only, and the memory its refresh needs
does not grow with the number of hosts.  The suite runs 100 hosts x 1,000
files; ``-m scale`` runs 100 hosts x 100,000 files.
"""

from __future__ import annotations

import hashlib
import os
import json
import random
import time
import tracemalloc
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import zstandard

from s3archive.archive.archiver import Archiver
from s3archive.archive.group_index import GroupIndex
from s3archive.archive import local_cache
from s3archive.archive.local_cache import LocalCache
from s3archive.config import Config, parse_config
from s3archive.store.base import ObjectLock
from support.fleet_hosts import HostView
from support.memory_store import FakeClock, MemoryStore

START = datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc)
DAY = timedelta(days=1)
PREFIX = "index/plain-all/"
FILES = int(os.environ.get("S3ARCHIVE_FLEET_FILES", "100000"))  # -m scale: files per host


def _id(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def index_object(host: str, written: datetime, blob_ids: list[str], lock_until: datetime
                 ) -> tuple[str, bytes]:
    """One run's group index object, by hand: its blobs in packs of 4,000 x 4 KiB."""
    stamp = written.strftime("%Y%m%dT%H%M%SZ")
    key = f"{PREFIX}{stamp[:8]}/{stamp}-{host}-{stamp}-abcdef-p0.idx"
    lines = [{"type": "group_index", "version": 1, "host": host, "run_id": f"{stamp}-abcdef",
              "written": written.isoformat().replace("+00:00", "Z"), "part": 0}]
    per_pack = 4000
    for n in range(0, max(1, (len(blob_ids) + per_pack - 1) // per_pack)):
        h = _id("pack", host, stamp, n)
        lines.append(["P", n, f"data/{h[:2]}/{h}", "v1", 29 + per_pack * 4096 + 16 + 38 * per_pack,
                      "GOVERNANCE", lock_until.isoformat().replace("+00:00", "Z")])
    for i, blob in enumerate(blob_ids):
        lines.append(["B", i // per_pack, blob, 29 + (i % per_pack) * 4096, 4096, 4096, "raw"])
    body = b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)
    return key, zstandard.ZstdCompressor(level=1).compress(body)


def fill_fleet(store: MemoryStore, clock: FakeClock, hosts: int, files: int, day: int,
               rng: random.Random, own: float = 0.1) -> None:
    """The index objects of ``hosts`` other hosts' runs of day ``day`` (0: the first), each
    host's first run ``own`` its own files, the rest the image."""
    written = clock()
    until = clock() + 20 * DAY
    image = files - round(files * own)
    for host in range(hosts):
        if day == 0:
            blobs = [_id("image", i) for i in range(image)] + \
                    [_id("own", host, i) for i in range(files - image)]
        else:
            blobs = [_id("change", host, day, i) for i in range(max(1, files // 100))]
        key, body = index_object(f"other{host:03d}", written, blobs, until)
        store.put(key, body, ObjectLock("GOVERNANCE", until))
        written += timedelta(seconds=rng.randrange(1, 60))


def peak_of_refresh(tmp_path: Path, hosts: int, files: int) -> tuple[int, int]:
    """Peak traced memory of a bootstrap refresh over ``hosts`` hosts' first runs, and
    the rows learned."""
    clock = FakeClock(START)
    store = MemoryStore(clock)
    fill_fleet(store, clock, hosts, files, 0, random.Random(hosts))
    cache = LocalCache(tmp_path / f"cache-{hosts}.sqlite")
    group = GroupIndex(store, "plain-all", "me")
    tracemalloc.start()
    try:
        report = group.refresh(cache, clock(), locked=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        cache.close()
    assert report.objects == hosts and report.skipped == 0
    return peak, report.blobs


def a_host(tmp_path: Path, clock: FakeClock, rng: random.Random) -> tuple[Path, Config]:
    """A host "me" of a few files (its picker and config under ``tmp_path``)."""
    tree = tmp_path / "tree"
    tree.mkdir(parents=True)
    for i in range(20):
        (tree / f"f{i}").write_bytes(rng.randbytes(3_000))
    etc = tmp_path / "etc"
    (etc / "pickers.d").mkdir(parents=True)
    picker = etc / "pickers.d" / "10-tree"
    picker.write_text(f"#!/bin/sh\necho '{tree}'\n")
    picker.chmod(0o755)
    config = parse_config({"s3": {"bucket": "big-fleet"}, "host": {"name": "me"},
                           "local": {"cache_dir": str(tmp_path / "cache"),
                                     "state_file": str(tmp_path / "state.json")}},
                          etc / "config.toml", clock=clock)
    return tree, config


@dataclass
class DayStats:
    index_lists: int  # list requests of index/ (the host's own are checked apart)
    gets: int
    refresh_cpu: float  # seconds of CPU of the group index refresh
    peak: int | None  # traced peak of the whole run (bytes), when traced


def run_fleet(tmp_path: Path, files: int, days: int = 3, others: int = 99,
              trace_from: int | None = None) -> list[DayStats]:
    """A host's daily runs in a fleet of ``others`` other hosts of ``files`` files;
    runs from day ``trace_from`` on are traced (tracemalloc) whole."""
    clock = FakeClock(START)
    store = MemoryStore(clock, bucket="big-fleet")
    rng = random.Random(100)
    tree, config = a_host(tmp_path / f"fleet-{others}", clock, rng)
    view = HostView(store)
    stats = []
    for day in range(days):
        fill_fleet(store, clock, others, files, day, rng)
        clock.advance(timedelta(hours=1))
        before = dict(store.requests)
        view.lists.clear()
        (tree / "f0").write_bytes(rng.randbytes(3_000))
        refresh = RefreshClock()
        traced = trace_from is not None and day >= trace_from
        if traced:
            tracemalloc.start()
        try:
            with refresh:
                summary = Archiver(config, view, clock=clock).run()
            peak = tracemalloc.get_traced_memory()[1] if traced else None
        finally:
            tracemalloc.stop()
        assert summary.exit_code == 0
        gets = store.requests["GetObject"] - before.get("GetObject", 0)
        index_lists = [p for p in view.lists if p.startswith("index/")]
        own_lists = [p for p in view.lists if not p.startswith("index/")]
        assert all(p.startswith("runs/me/") for p in own_lists), own_lists
        if day == 0:
            assert index_lists == [PREFIX]  # the bootstrap: one listing of the group
        else:
            assert len(index_lists) <= 2, index_lists  # yesterday's and today's prefixes
        assert gets <= others + 3, gets  # the new index objects, and the host's own reads
        stats.append(DayStats(len(index_lists), gets, refresh.cpu, peak))
        clock.advance(DAY - timedelta(hours=1))
        store.lifecycle_day()
    return stats


class RefreshClock:
    """The CPU seconds spent in GroupIndex.refresh while in effect."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self._original = GroupIndex.refresh

    def __enter__(self) -> "RefreshClock":
        original = self._original

        def timed(group: GroupIndex, *args: Any, **kwargs: Any) -> Any:
            began = time.process_time()
            try:
                return original(group, *args, **kwargs)
            finally:
                self.cpu += time.process_time() - began
        GroupIndex.refresh = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: object) -> None:
        GroupIndex.refresh = self._original  # type: ignore[method-assign]


def peak_of_daily_run(tmp_path: Path, hosts: int, files: int, own: float) -> int:
    """Peak traced memory of a host's second daily run (after its bootstrap) in a fleet of
    ``hosts`` other hosts, each of ``files`` files, ``own`` of them its own."""
    clock = FakeClock(START)
    store = MemoryStore(clock, bucket="big-fleet")
    rng = random.Random(hosts)
    tree, config = a_host(tmp_path / f"fleet-{hosts}", clock, rng)
    view = HostView(store)
    peak = 0
    for day in range(2):
        fill_fleet(store, clock, hosts, files, day, rng, own)
        clock.advance(timedelta(hours=1))
        (tree / "f0").write_bytes(rng.randbytes(3_000))
        if day:
            tracemalloc.start()
        try:
            assert Archiver(config, view, clock=clock).run().exit_code == 0
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        clock.advance(DAY - timedelta(hours=1))
    return peak


def test_a_daily_run_in_a_fleet_of_100_makes_constant_list_requests(tmp_path: Path) -> None:
    run_fleet(tmp_path, files=1_000)


def test_refresh_memory_does_not_grow_with_the_hosts(tmp_path: Path) -> None:
    small, learned_small = peak_of_refresh(tmp_path, 10, 300)
    large, learned_large = peak_of_refresh(tmp_path, 100, 300)
    assert learned_large == 10 * learned_small
    # one object at a time: 10x the hosts, not 10x the memory
    assert large < 1.5 * small, (small, large)


def test_a_daily_runs_memory_does_not_grow_with_the_hosts(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole run, not only the refresh: the group's distinct chunks (10 hosts 10,000,
    100 hosts 100,000) are in the local cache, and the run's chunk filter (8 bytes a
    chunk) holds them only up to its limit; past it the filter holds nothing and the run
    asks SQLite.  Without the limit the 100-host peak was 277 KiB higher; with it, 58."""
    monkeypatch.setattr(local_cache, "CHUNK_FILTER_LIMIT", 20_000)
    small = peak_of_daily_run(tmp_path, 10, 1_000, own=1.0)
    large = peak_of_daily_run(tmp_path, 100, 1_000, own=1.0)
    assert large < small + (160 << 10), (small, large)


@pytest.mark.scale
def test_a_fleet_of_100_hosts_of_100k_files(tmp_path: Path) -> None:
    """Issue 13 item 4 at full size, at 10, 50 and 100 hosts: the bootstrap and a daily
    run of one host; the daily run is traced whole (its memory: the refresh, the chunk
    filter, the walk, the upload)."""
    rows = {}
    for hosts in (10, 50, 100):
        rows[hosts] = run_fleet(tmp_path, files=FILES, days=2, others=hosts - 1,
                                trace_from=1)
    print("\nhosts | run | index lists | GETs | refresh CPU s | traced peak MiB")
    for hosts, days in rows.items():
        for day, stat in enumerate(days):
            peak = f"{stat.peak / 2**20:.1f}" if stat.peak is not None else "-"
            print(f"{hosts} | {'bootstrap' if day == 0 else 'daily'} | {stat.index_lists} | "
                  f"{stat.gets} | {stat.refresh_cpu:.1f} | {peak}")
    daily = {hosts: days[1] for hosts, days in rows.items()}
    assert all(d.index_lists <= 2 for d in daily.values())
    small, large = daily[10].peak, daily[100].peak
    assert small is not None and large is not None
    # the chunk filter (8 bytes a chunk of the group, up to CHUNK_FILTER_LIMIT) is all
    # that may grow with the hosts; at 100 hosts of 100,000 files (1.09M chunks) it is
    # past the limit and holds nothing: no more than at 10 hosts (0.19M chunks)
    assert large < small + 8 * local_cache.CHUNK_FILTER_LIMIT, (small, large)
    if FILES == 100_000:
        assert large < 1.5 * small, (small, large)
