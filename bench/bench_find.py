"""find and history at scale: N small files, R runs, one RGW (no restic: it has
no equivalent of ``history``; ``restic find`` is compared by hand if wanted).

    python bench/bench_find.py [--files 100000] [--runs 2]

Prints the wall time of each archive run, of ``find NAME`` over every run and
of ``history PATH``.  Format 1 reads every run's whole manifest: these times
grow with files x runs; format 2's per-directory metadata is meant to fix that.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from support.manifest_builder import invoke, make_bucket_env  # noqa: E402
from support.rgw import RGWCluster, rgw_available  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    if reason := rgw_available():
        print(f"bench: {reason}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="s3archive-bench-find-"))
    try:
        with RGWCluster(work / "rgw") as rgw:
            env = make_bucket_env(rgw, work)
            src = work / "src"
            for i in range(args.files):
                if i % 1000 == 0:
                    (src / f"d{i // 1000:04d}").mkdir(parents=True)
                (src / f"d{i // 1000:04d}" / f"f{i:07d}.txt").write_bytes(b"%d\n" % i)
            picker = work / "pickers.d" / "10-src"
            picker.parent.mkdir()
            picker.write_text(f"#!/bin/sh\necho '{src}'\n")
            picker.chmod(0o755)
            for run in range(args.runs):
                began = time.monotonic()
                result = invoke(env, "archive", "--json")
                print(f"archive {run + 1}: exit {result.exit_code}, "
                      f"{time.monotonic() - began:.1f}s")
            middle = args.files // 2
            name = f"f{middle:07d}.txt"
            began = time.monotonic()
            result = invoke(env, "find", name, "--json")
            print(f"find {name} over {args.runs} runs: exit {result.exit_code}, "
                  f"{time.monotonic() - began:.1f}s")
            began = time.monotonic()
            result = invoke(env, "history", str(src / f"d{middle // 1000:04d}" / name))
            print(f"history: exit {result.exit_code}, {time.monotonic() - began:.1f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
