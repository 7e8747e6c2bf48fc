"""prune: lifecycle's job for stores without lifecycle rules, and no more."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from s3archive.archive import file_stage
from s3archive.archive.archiver import Archiver
from s3archive.repo.catalog import list_runs, load_manifest
from s3archive.config import parse_config
from s3archive.prune import prune
from support.memory_store import FakeClock, MemoryStore

DAY = timedelta(days=1)


def archive(tmp_path: Path, store: MemoryStore, clock: FakeClock, days: int) -> None:
    config_path = tmp_path / "etc" / "config.toml"
    config = parse_config({
        "s3": {"bucket": "prune-test"}, "host": {"name": "h"},
        "retention": {"daily_days": days, "weekly_days": days, "monthly_days": days,
                      "yearly_days": days, "slack_days": 0, "repack_below": 0.0},
        "content": {"pack_size_mib": 1},
        "local": {"cache_dir": str(tmp_path / "cache"), "state_file": str(tmp_path / "s.json")},
    }, config_path, clock=clock)
    summary = Archiver(config, store, clock=clock).run()
    assert summary.exit_code == 0, summary.warnings


def setup_tree(tmp_path: Path) -> Path:
    (tmp_path / "etc" / "pickers.d").mkdir(parents=True)
    tree = tmp_path / "tree"
    tree.mkdir()
    picker = tmp_path / "etc" / "pickers.d" / "10"
    picker.write_text(f"#!/bin/sh\necho '{tree}'\n")
    picker.chmod(0o755)
    return tree


def test_prune_deletes_only_lapsed_versions_no_live_run_needs(tmp_path: Path,
                                                              monkeypatch) -> None:
    # one reader: the two files' chunks never share a pack (two readers interleave them)
    monkeypatch.setattr(file_stage, "READERS", 1)
    clock = FakeClock()
    store = MemoryStore(clock)
    tree = setup_tree(tmp_path)
    (tree / "kept").write_bytes(os.urandom(1 << 20))
    (tree / "dropped").write_bytes(os.urandom(1 << 20))
    archive(tmp_path, store, clock, days=2)  # run 1: both files, locked 2 days
    first = list_runs(store)[0]
    first_packs = {(p.key, p.version_id) for p in load_manifest(store, first).packs}
    (tree / "dropped").unlink()
    clock.advance(DAY)
    archive(tmp_path, store, clock, days=10)  # run 2: "kept" only, extends its pack
    second = list_runs(store)[1]
    second_packs = {(p.key, p.version_id) for p in load_manifest(store, second).packs}
    only_first = first_packs - second_packs
    assert only_first and second_packs & first_packs

    assert prune(store, clock=clock).deleted == [], "nothing has lapsed yet"
    clock.advance(3 * DAY)  # run 1 lapsed; run 2 is live
    preview = prune(store, clock=clock, dry_run=True)
    # the lapsed run's group index object goes with it, the live run's stays
    first_index = {(v.key, v.version_id) for v in store.versions()
                   if v.key.startswith("index/") and first.run_id in v.key}
    assert len(first_index) == 1
    assert set(preview.deleted) == only_first | {(first.key, first.version_id)} | first_index
    assert {(v.key, v.version_id) for v in store.versions()} >= set(preview.deleted)

    result = prune(store, clock=clock)
    assert set(result.deleted) == set(preview.deleted)
    assert (result.live_runs, result.lapsed_runs, result.problems) == (1, 1, [])
    remaining = {(v.key, v.version_id) for v in store.versions()}
    assert second_packs | {(second.key, second.version_id)} <= remaining
    assert any(key.startswith("index/") and second.run_id in key for key, _ in remaining)
    assert not (only_first & remaining)

    clock.advance(30 * DAY)  # everything lapsed: the bucket empties
    prune(store, clock=clock)
    assert store.versions() == []


def test_prune_refuses_a_bucket_without_object_lock(tmp_path: Path) -> None:
    import pytest

    from s3archive.errors import UsageError

    class Unlocked(MemoryStore):
        def bucket_lock_config(self):
            from s3archive.store.base import BucketLockConfig
            return BucketLockConfig(enabled=False)

    clock = FakeClock()
    store = Unlocked(clock)
    store.put("packs/aa/" + "a" * 62, b"data", None)
    with pytest.raises(UsageError, match="has no Object Lock"):
        prune(store, clock=clock)
    assert len(store.versions()) == 1
