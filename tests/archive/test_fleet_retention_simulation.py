"""Days of daily runs of several hosts of one dedup group on the in-memory Object Lock
store: leases across hosts hold (issue 13 item 2, docs/FORMAT.md part 2, 16.4).

Three hosts share most of their files and keep their own; they have different
tiers and retention (one a fixed ``until``), and one stops backing up part way.
After every day and every lifecycle pass the whole bucket is checked:

* no pack lapses that a live run of any host needs: every pack version a live
  root object references exists, locked at least until that root's retain-until;
* nothing is kept alive for nothing: no pack version is locked longer than the
  latest ``retain_until + slack`` of a run (of any host, with that host's slack)
  that references it — so the host that stopped keeps the packs it shared alive
  only as long as its own runs need them, and lifecycle collects what no live
  run needs within two days of its lease;
* every host's latest run restores byte-identical content, every tenth day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from s3archive.archive.archiver import Archiver
from s3archive.config import Config, parse_config
from s3archive.format.model import Manifest
from support.fleet_hosts import HostView
from support.memory_store import FakeClock, MemoryStore
from support.retention_checks import (check_lease_bound, check_live_run, check_restores,
                                      tree_digests)
from support.runs import PACK_PREFIXES, read_run

DAY = timedelta(days=1)
START = datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc)


@dataclass
class SimHost:
    name: str
    config: Config
    tree: Path
    view: HostView
    slack: timedelta
    stops_on: int | None = None
    latest: tuple[str, str] | None = None  # key, version of its newest run


@dataclass
class FleetSim:
    clock: FakeClock
    store: MemoryStore
    hosts: list[SimHost] = field(default_factory=list)
    # (pack key, version) -> the latest retain-until + slack of a run that references it
    lease_needed: dict[tuple[str, str], datetime] = field(default_factory=dict)
    manifests: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    shared_reuse: int = 0  # references of one host's runs to a pack another host uploaded
    uploader: dict[str, str] = field(default_factory=dict)  # pack key -> host

    def manifest(self, key: str, version_id: str) -> Manifest:
        found = self.manifests.get((key, version_id))
        if found is None:
            stored = self.store.version(key, version_id)
            assert stored is not None and stored.body is not None
            found = self.manifests[(key, version_id)] = read_run(self.store, key, stored.body)
        return found


def make_host(sim: FleetSim, root: Path, name: str, retention: dict[str, Any],
              shared: Path) -> SimHost:
    etc = root / name / "etc"
    (etc / "pickers.d").mkdir(parents=True)
    (etc / "snapshots.d").mkdir()
    tree = root / name / "tree"
    tree.mkdir()
    picker = etc / "pickers.d" / "10-tree"
    picker.write_text(f"#!/bin/sh\necho '{tree}'\necho '{shared}'\n")
    picker.chmod(0o755)
    document = {"s3": {"bucket": "fleet-sim"}, "host": {"name": name}, "retention": retention,
                "content": {"pack_size_mib": 1},
                "local": {"cache_dir": str(root / name / "cache"),
                          "state_file": str(root / name / "state.json")}}
    config = parse_config(document, etc / "config.toml", clock=sim.clock)
    host = SimHost(name, config, tree, HostView(sim.store),
                   timedelta(days=config.retention.slack_days))
    sim.hosts.append(host)
    return host


def check_bucket(sim: FleetSim) -> None:
    """The retention invariant for every live run of every host, and the lease bound."""
    now = sim.clock()
    for stored in sim.store.versions("runs/"):
        if stored.is_delete_marker:
            continue
        manifest = sim.manifest(stored.key, stored.version_id)
        if manifest.header.retain_until > now:
            check_live_run(sim.store, stored, manifest)
    check_lease_bound((v for prefix in PACK_PREFIXES for v in sim.store.versions(prefix)
                       if not v.is_delete_marker),
                      lambda key, version: sim.lease_needed.get((key, version)), now)


def check_restore(sim: FleetSim, host: SimHost, expected: dict[bytes, str]) -> None:
    assert host.latest is not None
    check_restores(sim.store, sim.manifest(*host.latest), expected, host.name)


def simulate(tmp_path: Path, days: int) -> FleetSim:
    clock = FakeClock(START)
    sim = FleetSim(clock, MemoryStore(clock, bucket="fleet-sim"))
    rng = random.Random(1311)
    shared_roots = []
    base = [rng.randbytes(rng.randrange(5_000, 40_000)) for _ in range(12)]
    retentions = [
        {"daily_days": 4, "weekly_days": 16, "monthly_days": 45, "yearly_days": 130,
         "slack_days": 4, "repack_below": 0.3},
        {"daily_days": 2, "weekly_days": 2, "monthly_days": 2, "yearly_days": 2,
         "slack_days": 1, "repack_below": 0.3},
        {"until": (START + timedelta(days=days // 2)).isoformat().replace("+00:00", "Z"),
         "slack_days": 2, "max_days": 3650, "repack_below": 0.3},
    ]
    for n, retention in enumerate(retentions):
        shared = tmp_path / f"shared{n}"  # one image: the same bytes on every host
        shared.mkdir()
        for i, data in enumerate(base):
            (shared / f"base{i}.bin").write_bytes(data)
        shared_roots.append(shared)
        host = make_host(sim, tmp_path, f"h{n}", retention, shared)
        (host.tree / "own.bin").write_bytes(rng.randbytes(20_000))
    sim.hosts[2].stops_on = days // 3  # the fixed-until host stops backing up
    for day in range(days):
        if rng.random() < 0.3:  # an update of the image reaches every host
            i = rng.randrange(len(base))
            base[i] = rng.randbytes(rng.randrange(5_000, 40_000))
            for shared in shared_roots:
                (shared / f"base{i}.bin").write_bytes(base[i])
        for n, host in enumerate(sim.hosts):
            if host.stops_on is not None and day >= host.stops_on:
                continue
            if rng.random() < 0.3:
                (host.tree / f"own{rng.randrange(3)}.bin").write_bytes(rng.randbytes(20_000))
            summary = Archiver(host.config, host.view, clock=clock).run()
            assert summary.exit_code == 0 and summary.manifest_key is not None
            current = sim.store.versions(summary.manifest_key)[-1]
            host.latest = (summary.manifest_key, current.version_id)
            manifest = sim.manifest(*host.latest)
            until = manifest.header.retain_until + host.slack
            for pack in manifest.packs:
                ref = (pack.key, pack.version_id)
                sim.lease_needed[ref] = max(sim.lease_needed.get(ref, until), until)
                first = sim.uploader.setdefault(pack.key, host.name)
                sim.shared_reuse += pack.key.startswith("data/") and first != host.name
            check_bucket(sim)
            if day % 10 == 9:
                check_restore(sim, host, tree_digests(host.tree, shared_roots[n]))
            clock.advance(timedelta(minutes=30))
        clock.advance(DAY - timedelta(minutes=30 * len(sim.hosts)))
        sim.store.lifecycle_day()
        check_bucket(sim)
    return sim


def test_leases_hold_across_hosts_with_different_retention(tmp_path: Path) -> None:
    sim = simulate(tmp_path, 45)
    assert sim.shared_reuse > 40  # the hosts did reference each other's packs
    # the stopped host's last run has lapsed: nothing it alone referenced is left
    stopped = sim.hosts[2]
    assert stopped.latest is not None
    last = sim.manifest(*stopped.latest)
    assert last.header.retain_until < sim.clock()


@pytest.mark.scale
def test_three_hundred_days_of_a_fleet(tmp_path: Path) -> None:
    sim = simulate(tmp_path, 300)
    assert sim.shared_reuse > 300
