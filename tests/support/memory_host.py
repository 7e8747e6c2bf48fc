"""A host archiving one tree into the in-memory store, for tests that compare runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from s3archive.archive.archiver import Archiver
from s3archive.config import parse_config
from s3archive.repo.catalog import RunRef, list_runs
from support.memory_store import FakeClock, MemoryStore


class MemoryHost:
    def __init__(self, root: Path, bucket: str):
        etc = root / "etc"
        (etc / "pickers.d").mkdir(parents=True)
        self.tree = root / "tree"
        self.tree.mkdir()
        picker = etc / "pickers.d" / "10-tree"
        picker.write_text(f"#!/bin/sh\necho '{self.tree}'\n")
        picker.chmod(0o755)
        self.clock = FakeClock(datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc))
        self.store = MemoryStore(self.clock)
        self.config = parse_config(
            {"s3": {"bucket": bucket}, "host": {"name": "h"}, "content": {"pack_size_mib": 1},
             "local": {"cache_dir": str(root / "cache"), "state_file": str(root / "s.json")}},
            etc / "config.toml", clock=self.clock)

    def archive(self, **options) -> RunRef:
        """One run, a day after the last; returns its ref."""
        summary = Archiver(self.config, self.store, clock=self.clock, **options).run()
        assert summary.exit_code == 0, summary.warnings
        self.clock.advance(timedelta(days=1))
        return max(list_runs(self.store, "h"), key=lambda r: r.run_id)

    def gets(self) -> int:
        return self.store.usage().requests.get("GetObject", 0)
