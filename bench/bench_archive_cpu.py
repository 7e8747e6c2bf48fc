"""CPU seconds and peak RSS of archive runs without S3 (the in-memory store).

    python bench/bench_archive_cpu.py [--files 20000] [--per-dir 100] [--workdir DIR]

Builds ``--files`` small text files, then in this process: the initial run, a
no-change run, a run after the local cache is deleted, and one more no-change
run, each timed with ``time.process_time`` (every thread of the process).  No
RGW, no network: the figures are the archiver's own CPU, steadier than wall
time on a shared machine.  The script runs the code of the checkout it is
in: to compare two, run each one's copy, interleaved, on the same ``--workdir``
(the tree is built once and kept).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from s3archive.archive.archiver import Archiver  # noqa: E402
from s3archive.config import parse_config  # noqa: E402
from support.memory_store import FakeClock, MemoryStore  # noqa: E402


def make_tree(root: Path, files: int, per_dir: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for n in range(files):
        directory = root / f"d{n // per_dir:05d}"
        directory.mkdir(parents=True, exist_ok=True)
        line = b"line %d %d\n" % (n, rng.randrange(10**9))
        (directory / f"f{n:07d}.txt").write_bytes(line * rng.randrange(20, 200))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--per-dir", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="s3archive-bench-cpu-"))
    tree = work / "tree"
    if not tree.exists():
        make_tree(tree, args.files, args.per_dir)
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    (home / "pickers.d").mkdir(parents=True)
    picker = home / "pickers.d" / "10-tree"
    picker.write_text(f"#!/bin/sh\necho '{tree}'\n")
    picker.chmod(0o755)
    clock = FakeClock(datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc))
    store = MemoryStore(clock)
    config = parse_config(
        {"s3": {"bucket": "bench-cpu"}, "host": {"name": "bench"},
         "local": {"cache_dir": str(home / "cache"), "state_file": str(home / "state.json")}},
        home / "config.toml", clock=clock)

    def run() -> float:
        clock.advance(timedelta(days=1))
        began = time.process_time()
        summary = Archiver(config, store, clock=clock).run()
        if summary.exit_code != 0:
            raise SystemExit(f"archive exited {summary.exit_code}: {summary.warnings[:3]}")
        return round(time.process_time() - began, 2)

    figures: dict[str, float | int] = {"initial_cpu_s": run(), "no_change_cpu_s": run()}
    shutil.rmtree(home / "cache")
    figures["lost_cache_cpu_s"] = run()
    figures["no_change_again_cpu_s"] = run()
    figures["cache_bytes"] = sum(f.stat().st_size for f in (home / "cache").iterdir())
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps({"files": args.files, "per_dir": args.per_dir, **figures}))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
