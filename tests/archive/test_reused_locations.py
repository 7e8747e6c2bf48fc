"""A no-change run locates its file-cache hits in SQL, reading the local cache's
committed rows through the run index (RunIndex.put_from_cache): none goes the
slow way (a ChunkLocation built per chunk, LocalCache.get_chunks)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from s3archive.archive import local_cache
from s3archive.archive.archiver import Archiver
from s3archive.config import parse_config
from support.memory_store import FakeClock, MemoryStore


def test_an_unchanged_run_locates_reused_chunks_in_sql(tmp_path: Path, monkeypatch) -> None:
    etc, tree = tmp_path / "etc", tmp_path / "tree"
    (etc / "pickers.d").mkdir(parents=True)
    picker = etc / "pickers.d" / "10-tree"
    picker.write_text(f"#!/bin/sh\necho '{tree}'\n")
    picker.chmod(0o755)
    for n in range(300):
        directory = tree / f"d{n // 40:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{n:04d}").write_bytes(b"%d " % n * (n + 1))
    clock = FakeClock(datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc))
    store = MemoryStore(clock)
    config = parse_config(
        {"s3": {"bucket": "reuse-test"}, "host": {"name": "h"},
         "local": {"cache_dir": str(tmp_path / "cache"), "state_file": str(tmp_path / "s.json")}},
        etc / "config.toml", clock=clock)
    first = Archiver(config, store, clock=clock).run()
    assert first.exit_code == 0 and first.files_unchanged == 0

    asked: list[int] = []
    slow = local_cache.LocalCache.get_chunks
    monkeypatch.setattr(local_cache.LocalCache, "get_chunks",
                        lambda self, digests: asked.append(len(list(digests))) or slow(self, []))
    clock.advance(timedelta(days=1))
    second = Archiver(config, store, clock=clock).run()
    assert second.exit_code == 0 and second.files_unchanged == 300
    assert second.chunks_reused >= 300 and second.chunks_new == 0
    assert asked == [], "every reused chunk was located in SQL"
