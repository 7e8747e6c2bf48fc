"""Scale benchmark: many small files, s3archive against restic, on RGW.

    python bench/bench_scale.py [--files 1000000] [--per-dir 1000] [--workdir DIR]
                                [--no-restic] [--keep] [--json OUT]

Builds a deterministic tree of ``--files`` small text files (200 B - 3.2 KiB,
~1.7 KB on average, ``--per-dir`` to a directory: the shape of issue 10's
measurement), then, each tool on its own fresh RGW (as ``bench_archive.py``)
and interleaved step by step:

* ``initial`` and ``no-change`` archive runs (cache kept, like a real host);
* ``ls-dir``: list one directory of the newest run, **cache cold** (s3archive
  reads no local state for ``ls``; restic gets an empty ``--cache-dir``);
* ``restore-one``: restore one file of the newest run into an empty directory,
  cache cold the same way;
* ``mutation``: every file of 1 % of the directories edited, then an archive
  run (metadata stored should follow the changed directories, not the tree).

Reported per step: wall, CPU, peak RSS (``wait4``), requests and bytes the
server received (RGW usage log), plus each tool's local cache size after the
no-change run.  Targets (issue 10, "Speed at scale" and "Random access") are
printed as PASS/FAIL.  The numbers scale with ``--files``; the same ratios are
meant to hold at 20 000, 200 000 and 1 000 000 files.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_archive import (CORES, REPO, CountingRGW, Restic, S3Archive, Step,  # noqa: E402
                           _fresh_cluster, _log, measure, prepare, warm_page_cache)
from dataset import _Text  # noqa: E402

STEPS = ("initial", "no-change", "ls-dir", "restore-one", "mutation")


def make_many(root: Path, files: int, per_dir: int, seed: int = 1) -> dict[str, Any]:
    """``files`` small text files, ``per_dir`` to a directory, under ``root/dNNNN/``."""
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    rng = random.Random(seed)
    text = _Text(rng)
    pool = [text.text(rng.randint(200, 3200)) for _ in range(4096)]
    total = 0
    directory = root
    for i in range(files):
        if i % per_dir == 0:
            directory = root / f"d{i // per_dir:05d}"
            directory.mkdir()
        # a unique first line keeps every file distinct (no accidental whole-file dedup)
        data = b"%d\n" % i + pool[rng.randrange(len(pool))]
        with open(directory / f"f{i:07d}.txt", "wb") as handle:
            handle.write(data)
        total += len(data)
    return {"files": files, "dirs": -(-files // per_dir), "bytes": total, "per_dir": per_dir}


def mutate_dirs(root: Path, share: float, seed: int) -> dict[str, int]:
    """Append a line to every file of ``share`` of the directories."""
    rng = random.Random(seed)
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    chosen = rng.sample(dirs, max(1, round(len(dirs) * share)))
    edited = 0
    for directory in chosen:
        for path in directory.iterdir():
            with open(path, "ab") as handle:
                handle.write(b"changed %d\n" % rng.randrange(1 << 30))
            edited += 1
    return {"dirs_changed": len(chosen), "files_changed": edited}


def tree_size(path: Path) -> int:
    total = 0
    for directory, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                pass
    return total


class ScaleS3Archive(S3Archive):
    def cache_dir(self) -> Path:
        return self.home / "cache"

    def ls_dir(self, directory: str, logdir: Path) -> Step:
        command = [sys.executable, "-m", "s3archive", "--config", str(self.config), "ls",
                   "latest", directory]
        result, stdout = measure(self.name, "ls-dir", command, self.env, self.cluster, logdir,
                                 cwd=REPO)
        result.summary = {"lines": len(stdout.splitlines())}
        return result

    def restore_one(self, path: str, target: Path, logdir: Path) -> Step:
        command = [sys.executable, "-m", "s3archive", "--config", str(self.config), "restore",
                   "latest", path, "--target", str(target)]
        result, _ = measure(self.name, "restore-one", command, self.env, self.cluster, logdir,
                            cwd=REPO)
        return result


class ScaleRestic(Restic):
    def cache_dir(self) -> Path:
        return self.cache

    def _cold(self, workdir: Path) -> Path:
        cold = workdir / "restic-cold-cache"
        shutil.rmtree(cold, ignore_errors=True)
        return cold

    def ls_dir(self, directory: str, logdir: Path) -> Step:
        cold = self._cold(logdir.parent)
        command = ["restic", "-r", self.repo, "--cache-dir", str(cold), "ls", "latest",
                   directory]
        result, stdout = measure(self.name, "ls-dir", command, self.env, self.cluster, logdir)
        result.summary = {"lines": len(stdout.splitlines())}
        return result

    def restore_one(self, path: str, target: Path, logdir: Path) -> Step:
        cold = self._cold(logdir.parent)
        command = ["restic", "-r", self.repo, "--cache-dir", str(cold), "restore", "latest",
                   "--target", str(target), "--include", path]
        result, _ = measure(self.name, "restore-one", command, self.env, self.cluster, logdir)
        return result


def targets(by: dict[tuple[str, str], Step], cache: dict[str, int]) -> list[tuple[str, bool, str]]:
    checks: list[tuple[str, bool, str]] = []

    def ratio(step: str, limit: float, label: str) -> None:
        ours, theirs = by.get(("s3archive", step)), by.get(("restic", step))
        if ours and theirs:
            checks.append((label, ours.wall_s <= limit * theirs.wall_s,
                           f"{ours.wall_s:.2f}s vs {theirs.wall_s:.2f}s "
                           f"({ours.wall_s / theirs.wall_s:.2f}x, limit {limit}x)"))

    ratio("initial", 1.0, "initial archive no slower than restic")
    ratio("no-change", 0.8, "no-change archive <= 0.8x restic")
    ratio("ls-dir", 1.0, "ls one directory no slower than restic")
    ratio("restore-one", 1.0, "restore one file no slower than restic")
    for step in STEPS:
        ours, theirs = by.get(("s3archive", step)), by.get(("restic", step))
        if ours and theirs:
            checks.append((f"{step} peak RSS <= restic", ours.peak_rss_mib <= theirs.peak_rss_mib,
                           f"{ours.peak_rss_mib:.0f} vs {theirs.peak_rss_mib:.0f} MiB"))
    for step in ("ls-dir", "restore-one"):
        ours = by.get(("s3archive", step))
        if ours:
            checks.append((f"{step} under 3 s and 150 MB (cache cold)",
                           ours.wall_s < 3.0 and ours.peak_rss_mib * 1.048576 < 150,
                           f"{ours.wall_s:.2f}s, {ours.peak_rss_mib:.0f} MiB"))
    ours = by.get(("s3archive", "no-change"))
    if ours:
        checks.append(("no-change run stores at most 1 MB", ours.bytes_received_rgw <= 1_000_000,
                       f"{ours.bytes_received_rgw / 1e6:.3f} MB received by RGW"))
    if "s3archive" in cache and "restic" in cache:
        checks.append(("local cache <= 2x restic's", cache["s3archive"] <= 2 * cache["restic"],
                       f"{cache['s3archive'] / 1e6:.1f} MB vs {cache['restic'] / 1e6:.1f} MB"))
    return checks


def table(results: list[Step]) -> str:
    lines = [f"{'tool':<10} {'step':<12} {'wall s':>8} {'CPU s':>8} {'RSS MiB':>8} "
             f"{'requests':>9} {'MB recv':>8}"]
    for r in results:
        lines.append(f"{r.tool:<10} {r.step:<12} {r.wall_s:>8.2f} {r.cpu_s:>8.2f} "
                     f"{r.peak_rss_mib:>8.0f} {r.requests_total_rgw:>9} "
                     f"{r.bytes_received_rgw / 1e6:>8.3f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000, help="number of small files")
    parser.add_argument("--per-dir", type=int, default=1000, help="files per directory")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    parser.add_argument("--no-restic", action="store_true", help="benchmark s3archive only")
    parser.add_argument("--json", type=Path, default=None, help="write all results as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, temporary, use_restic = prepare(args, "s3archive-bench-scale-")
    if workdir is None:
        return 2
    logdir = workdir / "logs"
    tree = workdir / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    clusters: list[CountingRGW] = []
    results: list[Step] = []
    cache: dict[str, int] = {}
    report: dict[str, Any] = {"files": args.files, "per_dir": args.per_dir, "cores": CORES}
    try:
        began = time.monotonic()
        report["dataset"] = make_many(tree, args.files, args.per_dir, args.seed)
        _log(f"tree: {args.files} files in {report['dataset']['dirs']} directories, "
             f"{report['dataset']['bytes'] / 1e6:.0f} MB in {time.monotonic() - began:.0f}s")
        size = report["dataset"]["bytes"]
        tools: list[Any] = []
        kinds: list[Any] = [("s3archive", ScaleS3Archive)]
        if use_restic:
            kinds.append(("restic", ScaleRestic))
        for name, kind in kinds:
            cluster = _fresh_cluster(workdir, name, size)
            clusters.append(cluster)
            tools.append(kind(workdir, tree, cluster))
        middle = f"{tree}/d{report['dataset']['dirs'] // 2:05d}"
        one_file = f"{middle}/f{(report['dataset']['dirs'] // 2) * args.per_dir + 7:07d}.txt"
        for step in STEPS:
            if step == "mutation":
                report["mutation"] = mutate_dirs(tree, 0.01, args.seed + 1000)
                _log(f"mutated: {report['mutation']}")
            for tool in tools:
                _log(f"{tool.name} {step} ...")
                if step in ("initial", "no-change", "mutation"):
                    warm_page_cache(tree)
                    result = tool.run(step, logdir)
                elif step == "ls-dir":
                    result = tool.ls_dir(middle, logdir)
                else:
                    target = workdir / f"restore-one-{tool.name}"
                    shutil.rmtree(target, ignore_errors=True)
                    target.mkdir()
                    result = tool.restore_one(one_file, target, logdir)
                    restored = target / one_file.lstrip("/")
                    if restored.read_bytes() != Path(one_file).read_bytes():
                        raise RuntimeError(f"{tool.name} restored {one_file} wrongly")
                    shutil.rmtree(target)
                results.append(result)
                if step == "no-change":
                    cache[tool.name] = tree_size(tool.cache_dir())
                _log(f"{tool.name} {step}: {result.wall_s:.2f}s wall, {result.cpu_s:.2f}s CPU, "
                     f"{result.peak_rss_mib:.0f} MiB, {result.bytes_received_rgw / 1e6:.3f} MB "
                     f"received, {result.requests_total_rgw} requests")
    finally:
        for cluster in clusters:
            cluster.stop()
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    by = {(r.tool, r.step): r for r in results}
    print(f"\n{args.files} files, {args.per_dir} per directory, "
          f"{report['dataset']['bytes'] / 1e6:.0f} MB; {CORES} cores; "
          f"local cache after no-change: "
          + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in cache.items()) + "\n")
    print(table(results))
    checks = targets(by, cache)
    print("\ntargets:")
    for label, ok, detail in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {label}: {detail}")
    report["cache_bytes"] = cache
    report["results"] = [asdict(r) for r in results]
    report["targets"] = [{"target": label, "ok": ok, "detail": detail}
                         for label, ok, detail in checks]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
