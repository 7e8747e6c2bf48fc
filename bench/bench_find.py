"""find, history and diff at scale: N small files, R runs, one RGW (no restic:
it has no equivalent of ``history``; ``restic find`` is compared by hand if wanted).

    python bench/bench_find.py [--files 100000] [--runs 3] [--per-dir 1000] [--tree-dir DIR]

Between runs, a few files change (one in a different directory each run, and
one file that changes every run); the tree is otherwise unchanged.  Prints
the wall time and peak RSS growth of each archive run, then of ``find NAME``
(a name pattern: every run's tree walked, shared directories once),
``find /DIR/f*99.txt`` (anchored: only that directory), ``history PATH`` and
``diff`` of the first and last runs — each through the real CLI, in
process, against a fresh RGW.  The test suite's 100,000-file test
(tests/test_find_scale_rgw.py) uses the same tree.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def make_tree(src: Path, files: int, per_dir: int) -> None:
    """``files`` small files, ``per_dir`` to a directory: d0000/f0000000.txt ..."""
    for i in range(files):
        if i % per_dir == 0:
            folder = src / f"d{i // per_dir:04d}"
            folder.mkdir(parents=True)
        fd = os.open(folder / f"f{i:07d}.txt", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"%d\n" % i)
        os.close(fd)


def change(src: Path, files: int, per_dir: int, run: int) -> None:
    """Before run ``run`` (1, 2, ...): one file in directory ``run`` rewritten,
    and d0000/f0000000.txt (the file whose history is asked) rewritten."""
    target = (run * 7919) % files  # spread over the tree, deterministic
    folder = src / f"d{target // per_dir:04d}"
    (folder / f"f{target:07d}.txt").write_bytes(b"changed in run %d\n" % run)
    (src / "d0000" / "f0000000.txt").write_bytes(b"version %d\n" % run)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, env, *args: str) -> object:
    before = peak_mib()
    began = time.monotonic()
    result = invoke(env, *args)
    took = time.monotonic() - began
    print(f"{label}: exit {result.exit_code}, {took:.1f} s, peak RSS {peak_mib():.0f} MiB "
          f"(+{peak_mib() - before:.0f})", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-dir", type=int, default=1000)
    parser.add_argument("--tree-dir", type=Path, default=None,
                        help="where to make the tree (e.g. /dev/shm: made in seconds)")
    args = parser.parse_args(argv)
    if reason := rgw_available():
        print(f"bench: {reason}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="s3archive-bench-find-"))
    tree_dir = work
    try:
        with RGWCluster(work / "rgw") as rgw:
            env = make_bucket_env(rgw, work)
            if args.tree_dir:
                tree_dir = Path(tempfile.mkdtemp(prefix="s3archive-bench-", dir=args.tree_dir))
            src = tree_dir / "src"
            began = time.monotonic()
            make_tree(src, args.files, args.per_dir)
            print(f"tree: {args.files} files in {time.monotonic() - began:.1f} s")
            picker = work / "pickers.d" / "10-src"
            picker.parent.mkdir()
            picker.write_text(f"#!/bin/sh\necho '{src}'\n")
            picker.chmod(0o755)
            run_ids = []
            for run in range(args.runs):
                if run:
                    change(src, args.files, args.per_dir, run)
                result = timed(f"archive {run + 1}", env, "archive", "--json")
                run_ids.append(json.loads(result.stdout.strip().splitlines()[-1])["run_id"])
            middle = args.files // 2
            name = f"f{middle:07d}.txt"
            folder = src / f"d{middle // args.per_dir:04d}"
            timed(f"find {name} over {args.runs} runs", env, "find", name, "--json")
            timed(f"find {folder}/f*99.txt over {args.runs} runs", env, "find",
                  f"{folder}/f*99.txt", "--json")
            timed(f"history {folder / name}", env, "history", str(folder / name))
            timed("history d0000/f0000000.txt (changes every run)", env, "history",
                  str(src / "d0000" / "f0000000.txt"))
            timed(f"diff of runs 1 and {args.runs}", env, "diff", run_ids[0], run_ids[-1],
                  "--json")
    finally:
        if args.tree_dir:
            shutil.rmtree(tree_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
