"""find, history and diff at scale, through the real CLI against one RGW.

Two ways to get the runs:

* default (``--files 1000000 --runs 30``): a daily series built directly
  (bench/synthetic_runs.py: the metadata of R runs of an N-file host, ~1 %
  of the files changed per run, written in minutes instead of hours).  Then,
  each in a fresh process (cache cold: nothing of an earlier command is
  kept), ``find NAME`` over all runs (a name pattern: every run's tree
  walked), over the newest 5, ``find '*.conf'`` (a match in every 500th
  file), an anchored ``find /bench/t000/.../fNNN.txt`` and ``history`` of
  that path.  Each prints wall time, CPU seconds and peak RSS of the process
  (``os.wait4``, ``VmHWM``), and ``find NAME`` over all runs is held to
  ``--target`` CPU seconds (PASS/FAIL; 30 s at 1M x 30).  CPU, not wall:
  on a shared machine the wall time measures the others' load; on an idle
  one it is the CPU time plus the GETs of the metadata (a few seconds).

      python bench/bench_find.py [--files 1000000] [--runs 30] [--target 30]
      python bench/bench_find.py --files 200000 --compare /work/main   # before/after

* ``--archive``: N small files archived R times by the CLI (a few files
  changed between runs), then find, history and diff in process — the
  shape of the suite's 100,000-file test (tests/test_find_scale_rgw.py).

      python bench/bench_find.py --archive [--files 100000] [--runs 3] [--per-dir 1000]

Needs the Ceph packages of /work/shared/RGW.md.  restic is not compared (it
has no ``history``; ``restic find`` over one archived tree can be timed by hand).
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
sys.path.insert(0, str(HERE))

from harness import run_child
from support.manifest_builder import invoke, make_bucket_env
from support.rgw import RGWCluster, rgw_available
from synthetic_runs import RunWriter, Series, Shape


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


def run_cli(label: str, config: Path, *args: str, code: Path = HERE.parent
            ) -> tuple[float, float, str]:
    """The CLI in a fresh process (cache cold); prints wall, CPU and peak RSS.

    The peak is the child's own (``run_child`` starts it from a small process:
    ``ru_maxrss`` of a child forked from this one would count this process's
    memory, the runs' builder, too)."""
    command = [sys.executable, "-m", "s3archive", "--config", str(config), *args]
    env = {**os.environ, "PYTHONPATH": str(code)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # run from the checkout: ``python -m`` puts the working directory first
        child = run_child(command, stdout=out, stderr=err, env=env, cwd=code)
        out.seek(0)
        err.seek(0)
        text, problems = out.read().decode(), err.read().decode()
    matches = ""
    if args[-1] == "--json" and text.strip():
        document = json.loads(text)
        if "matches" in document:
            matches = f", {len(document['matches'])} matches in " \
                      f"{len({m['run_id'] for m in document['matches']})} runs"
    print(f"{label}: exit {child.exit_code}{matches}, {child.wall_s:.1f} s wall, "
          f"{child.cpu_s:.1f} s CPU, peak RSS {child.peak_rss_mib:.0f} MiB", flush=True)
    if problems.strip():
        print("  " + problems.strip().replace("\n", "\n  ")[:2000], flush=True)
    return child.wall_s, child.cpu_s, text


def synthetic(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="s3archive-bench-find-"))
    try:
        with RGWCluster(work / "rgw") as rgw:
            env = make_bucket_env(rgw, work, host="bench")
            shape = Shape(args.files)
            series = Series(shape)
            writer = RunWriter(env.store, "bench")
            began = time.monotonic()
            for run in range(args.runs):
                changed = series.advance() if run else args.files
                run_id, nodes = writer.commit(series)
                print(f"run {run + 1} {run_id}: {changed} files changed, {nodes} new nodes, "
                      f"{time.monotonic() - began:.0f} s so far", flush=True)
            print(f"load: {os.getloadavg()[0]:.2f} (1-minute average)", flush=True)
            name, path = shape.middle()
            took, cpu, _ = run_cli(f"find {name} over {args.runs} runs", env.config_path,
                                   "find", name, "--json")
            if args.compare:  # the same, by another checkout (e.g. main), interleaved
                for _ in range(2):
                    run_cli(f"  the same by {args.compare}", env.config_path, "find", name,
                            "--json", code=args.compare)
                    run_cli("  the same by this checkout", env.config_path, "find", name,
                            "--json")
            run_cli(f"find {name} over the newest 5", env.config_path,
                    "find", name, "--newest", "5", "--json")
            run_cli(f"find '*.conf' over {args.runs} runs", env.config_path,
                    "find", "*.conf", "--json")
            run_cli(f"find {path} over {args.runs} runs", env.config_path,
                    "find", path, "--json")
            run_cli(f"history {path}", env.config_path, "history", path, "--json")
            print(f"load: {os.getloadavg()[0]:.2f} (1-minute average)", flush=True)
            # judged on CPU seconds: on a shared machine the wall time measures the load
            verdict = "PASS" if cpu <= args.target else "FAIL"
            print(f"{verdict}: find NAME over {args.files} files x {args.runs} runs took "
                  f"{cpu:.1f} s CPU, {took:.1f} s wall (target {args.target:.0f} s CPU)")
            return 0 if verdict == "PASS" else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def archived(args: argparse.Namespace) -> int:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=None,
                        help="files of the host (default 1,000,000; --archive: 100,000)")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs (default 30; --archive: 3)")
    parser.add_argument("--target", type=float, default=30.0,
                        help="CPU seconds find NAME over all runs may take (PASS/FAIL)")
    parser.add_argument("--compare", type=Path, default=None,
                        help="also time find NAME by the s3archive checkout at this path "
                             "(e.g. /work/main), interleaved with this one")
    parser.add_argument("--archive", action="store_true",
                        help="archive a real tree by the CLI instead (slow: small sizes)")
    parser.add_argument("--per-dir", type=int, default=1000, help="--archive: files a directory")
    parser.add_argument("--tree-dir", type=Path, default=None,
                        help="--archive: where to make the tree (e.g. /dev/shm)")
    args = parser.parse_args(argv)
    if reason := rgw_available():
        print(f"bench: {reason}", file=sys.stderr)
        return 2
    if args.archive:
        args.files = args.files or 100_000
        args.runs = args.runs or 3
        return archived(args)
    args.files = args.files or 1_000_000
    args.runs = args.runs or 30
    return synthetic(args)


if __name__ == "__main__":
    sys.exit(main())
