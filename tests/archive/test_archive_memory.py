"""An archive's memory does not grow with the file count (in-memory store, tracemalloc).

Issue 10: peak memory of an archive (no change, after a lost cache) is bounded by
the largest directory, not the run.  The same tree shape at two sizes (50 files a
directory), the Python heap's peak of each run measured: the larger run may need
only a small constant more.  Before the chunk locations moved to disk, a no-change
run held every chunk's location in a dict and a lost cache was rebuilt from a list
of every entry: at 2000 files against 300 they needed 340 KiB and 1.2 MiB more.
"""

from __future__ import annotations

import os
import shutil
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

from s3archive.archive import chunk_writer, file_stage, local_cache, packer, tree_builder
from s3archive.archive.archiver import Archiver
from s3archive.config import parse_config
from support.memory_store import FakeClock, MemoryStore

PER_DIR = 50
SMALL, LARGE = 300, 2000
GROWTH = 64 << 10  # bytes the larger run may need beyond the smaller one's peak
BATCH = 32  # spooled entries and file-cache hits handled at once (both runs fill them)


def peaks(root: Path, files: int) -> dict[str, int]:
    etc, tree = root / "etc", root / "tree"
    (etc / "pickers.d").mkdir(parents=True)
    picker = etc / "pickers.d" / "10-tree"
    picker.write_text(f"#!/bin/sh\necho '{tree}'\n")
    picker.chmod(0o755)
    for n in range(files):
        directory = tree / f"d{n // PER_DIR:04d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{n:06d}").write_bytes(b"%d " % n * 40)
    clock = FakeClock(datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc))
    store = MemoryStore(clock)
    config = parse_config(
        {"s3": {"bucket": "memory-test"}, "host": {"name": "h"},
         "local": {"cache_dir": str(root / "cache"), "state_file": str(root / "s.json")}},
        etc / "config.toml", clock=clock)

    def archive() -> int:
        clock.advance(timedelta(days=1))
        tracemalloc.start()
        try:
            summary = Archiver(config, store, clock=clock).run()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert summary.exit_code == 0 and summary.files == files

    def lost_cache() -> int:
        shutil.rmtree(root / "cache")
        return archive()

    Archiver(config, store, clock=clock).run()
    # the lowest of three peaks: threads (pickers, encoders, uploaders) make a single
    # peak vary by tens of KiB from run to run, whatever the file count (300 files,
    # six times: one run in four measured 70-300 KiB above its 1050 KiB; two of two
    # were high now and then, before and after this session's changes alike)
    return {step: min(measure() for _ in range(3))
            for step, measure in (("no-change", archive), ("lost cache", lost_cache))}


def test_peak_memory_does_not_grow_with_the_file_count(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tree_builder, "SPOOL_BLOCK", BATCH, raising=False)
    monkeypatch.setattr(chunk_writer, "REUSE_BATCH", BATCH, raising=False)
    monkeypatch.setattr(local_cache, "_ROWS_BATCH", BATCH, raising=False)
    # file-cache hits' chunk lists handed to the writer at once (~100 bytes a file)
    monkeypatch.setattr(file_stage, "HIT_CHUNKS_BYTES", BATCH * 100)
    # a pack's buffer is made at its full size at once (packer.Pack: not zero-filled,
    # untouched pages never resident) and tracemalloc counts all of it: 12 MiB of a
    # metadata pack alive at the end of a run moved the heap's peak there, where it
    # measured what else lives then (the chunk filter, the directory cache's rows) and
    # not the run's peak otherwise.  Here a pack's buffer grows with what is written
    # (Pack.write's other path), as before; that bodies alive are bounded is
    # test_packer's and test_chunk_writer's.
    monkeypatch.setattr(packer, "unzeroed", lambda size: bytearray())
    small = peaks(tmp_path / "small", SMALL)
    large = peaks(tmp_path / "large", LARGE)
    for step in small:
        assert large[step] < small[step] + GROWTH, (
            f"{step}: {large[step] >> 10} KiB for {LARGE} files, {small[step] >> 10} KiB "
            f"for {SMALL}")
    assert os.path.exists(tmp_path / "large" / "cache"), "the lost cache was rebuilt"
