"""Restore benchmark: s3archive restore against restic restore of the same tree, on RGW.

    python bench/bench_restore.py [--scale 1.0] [--workdir DIR] [--no-restic]
                                  [--workers N] [--repeat N] [--no-check] [--json OUT]

Builds the deterministic tree of ``bench/dataset.py`` (~700 MB at scale 1),
backs it up once with each tool (each on its own fresh single-node RGW with
the usage log on, as in ``bench_archive.py``), then measures the restore of
that backup into an empty directory as a subprocess: wall seconds, MB/s
(tree bytes / wall), requests counted by RGW and by s3archive itself, bytes
sent by RGW, CPU seconds and peak RSS of the restoring process (``wait4``).
With ``--repeat N`` each tool restores N times and the median counts (the
machine is small and shared: single runs are noisy).  The (median) restored
tree is compared with the source (``rsync -naHAXS -c``) unless ``--no-check``.  Target: s3archive at least as fast as restic.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "support"))

from bench_archive import (CORES, CountingRGW, Restic, S3Archive, Step, prepare,  # noqa: E402
                           _fresh_cluster, measure)
from dataset import make_tree  # noqa: E402


def _log(message: str) -> None:
    print(f"[bench-restore {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _check(tree: Path, restored: Path) -> str:
    """rsync's itemized differences (empty when the trees agree)."""
    done = subprocess.run(["rsync", "-naHAXS", "--numeric-ids", "-c", "--delete",
                           f"{tree}/", f"{restored}/", "--itemize-changes"],
                          capture_output=True, text=True, errors="replace")
    return done.stdout + (done.stderr if done.returncode else "")


class Target:
    """Where one restore goes: a plain directory, or a fresh ext4 filesystem.

    Deleting a restored tree and restoring again into the same filesystem
    makes ext4's inode allocator crawl (``recently_deleted``: sys time grew
    from 2 s to 13 s over three restores here); a new loop-mounted ext4 per
    restore, like restoring onto a new disk, keeps the runs comparable.
    """

    def __init__(self, path: Path, fresh_fs: bool, size: int):
        self.path = path
        self.image = path.with_suffix(".ext4")
        self.fresh_fs = fresh_fs
        self.size = size

    def prepare(self) -> None:
        self.cleanup()
        self.path.mkdir(parents=True)
        if self.fresh_fs:
            with open(self.image, "wb") as handle:
                handle.truncate(2 * self.size + (1 << 30))
            subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
            subprocess.run(["mount", "-o", "loop", str(self.image), str(self.path)], check=True)
            (self.path / "lost+found").rmdir()

    def cleanup(self) -> None:
        if self.fresh_fs and os.path.ismount(self.path):
            subprocess.run(["umount", str(self.path)], check=True)
        shutil.rmtree(self.path, ignore_errors=True)
        self.image.unlink(missing_ok=True)


def restore_s3archive(tool: S3Archive, target: Path, logdir: Path,
                      workers: int) -> tuple[Step, dict[str, Any]]:
    command = [sys.executable, "-m", "s3archive", "--config", str(tool.config), "restore",
               "latest", "--target", str(target), "--workers", str(workers), "--json"]
    result, stdout = measure("s3archive", "restore", command, tool.env, tool.cluster, logdir,
                             cwd=REPO)
    summary = json.loads(stdout.strip().splitlines()[-1])
    result.requests_tool = dict(summary.get("store", {}).get("requests", {}))
    result.summary = {k: summary[k] for k in ("ok", "entries", "files", "bytes", "seconds",
                                              "mb_per_s")}
    return result, summary


def restore_restic(tool: Restic, target: Path, logdir: Path) -> Step:
    command = ["restic", "-r", tool.repo, "--cache-dir", str(tool.cache), "restore", "latest",
               "--target", str(target)]
    result, _ = measure("restic", "restore", command, tool.env, tool.cluster, logdir)
    return result



def table(rows: list[dict[str, Any]]) -> str:
    heads = ["tool", "wall s", "MB/s", "best MB/s", "requests (RGW)", "GET (RGW)", "MB sent (RGW)",
             "CPU s", "peak RSS MiB", "check"]
    lines = [[r["tool"], f"{r['wall_s']:.2f}", f"{r['mb_per_s']:.1f}",
              f"{r['best_mb_per_s']:.1f}", str(r["requests"]),
              str(r["gets"]), f"{r['mb_sent'] / 1e6:.1f}", f"{r['cpu_s']:.2f}",
              f"{r['peak_rss_mib']:.0f}", r["check"]] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(heads)]
    out = ["  ".join(h.rjust(w) for h, w in zip(heads, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="dataset scale (1.0 = ~700 MB; 0.05 for a quick run)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="tree, restores, RGW data and logs (default: a temp dir, removed "
                             "at the end unless --keep)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-restic", action="store_true")
    parser.add_argument("--workers", type=int, default=8, help="s3archive restore --workers")
    parser.add_argument("--repeat", type=int, default=1,
                        help="restore this many times per tool; the median wall time counts")
    parser.add_argument("--same-fs", action="store_true",
                        help="restore into the workdir's filesystem instead of a fresh "
                             "loop-mounted ext4 per restore (the default when root)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the rsync comparison of the restored trees")
    parser.add_argument("--json", type=Path, default=None, help="write all results as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, temporary, use_restic = prepare(args, "s3archive-bench-restore-")
    if workdir is None:
        return 2
    logdir = workdir / "logs"
    tree = workdir / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    report: dict[str, Any] = {"scale": args.scale, "seed": args.seed, "cores": CORES,
                              "workers": args.workers}
    rows: list[dict[str, Any]] = []
    clusters: list[CountingRGW] = []
    try:
        began = time.monotonic()
        report["dataset"] = make_tree(tree, args.scale, args.seed)
        size = report["dataset"]["bytes"]
        _log(f"tree: {report['dataset']['files']} files, {size / 1e6:.0f} MB in "
             f"{time.monotonic() - began:.1f}s")
        kinds: list[Any] = [("s3archive", S3Archive)]
        if use_restic:
            kinds.append(("restic", Restic))
        tools = {}
        for name, kind in kinds:
            cluster = _fresh_cluster(workdir, name, size)
            clusters.append(cluster)
            tools[name] = kind(workdir, tree, cluster)
            _log(f"{name}: backing up ...")
            backup = tools[name].run("initial", logdir)
            _log(f"{name}: backup took {backup.wall_s:.1f}s")
        # restores alternate between the tools, so that noise from other work on
        # the machine falls on both alike; the median of each tool's runs counts
        attempts: dict[str, list[tuple[Step, int]]] = {name: [] for name in tools}
        repeat = max(1, args.repeat)
        fresh_fs = (not args.same_fs and os.geteuid() == 0
                    and shutil.which("mkfs.ext4") is not None)
        report["fresh_fs"] = fresh_fs
        targets = {name: Target(workdir / f"restore-{name}", fresh_fs, size) for name in tools}
        for attempt in range(repeat):
            for name, tool in tools.items():
                target = targets[name].path
                targets[name].prepare()
                usage_before = tool.cluster.settled_usage()
                _log(f"{name}: restoring ({attempt + 1}/{repeat}) ...")
                if name == "s3archive":
                    result, summary = restore_s3archive(tool, target, logdir, args.workers)
                    if not summary.get("ok"):
                        raise RuntimeError(f"s3archive restore not ok: {summary}")
                else:
                    result = restore_restic(tool, target, logdir)
                usage_after = tool.cluster.settled_usage()
                sent = sum(now.get("bytes_sent", 0)
                           - usage_before.get(cat, {}).get("bytes_sent", 0)
                           for cat, now in usage_after.items())
                _log(f"{name}: restore {result.wall_s:.2f}s, {size / result.wall_s / 1e6:.1f} "
                     f"MB/s, {result.requests_total_rgw} requests, "
                     f"{result.peak_rss_mib:.0f} MiB peak RSS, load {result.load_before:.1f}")
                attempts[name].append((result, sent))
                if attempt < repeat - 1:
                    targets[name].cleanup()
        for name in tools:
            runs = sorted(attempts[name], key=lambda item: item[0].wall_s)
            result, sent = runs[len(runs) // 2]
            restored = Path(f"{targets[name].path}{tree}")
            gets = sum(n for cat, n in result.requests_rgw.items() if cat.startswith("get_obj"))
            check = "skipped" if args.no_check else ("identical" if not _check(tree, restored)
                                                     else "DIFFERS")
            row = {"tool": name, "wall_s": result.wall_s, "mb_per_s": size / result.wall_s / 1e6,
                   "best_mb_per_s": size / runs[0][0].wall_s / 1e6,
                   "requests": result.requests_total_rgw, "gets": gets, "mb_sent": sent,
                   "cpu_s": result.cpu_s, "peak_rss_mib": max(r.peak_rss_mib for r, _ in runs),
                   "check": check, "requests_rgw": result.requests_rgw,
                   "requests_tool": result.requests_tool,
                   "walls": [round(r.wall_s, 2) for r, _ in attempts[name]],
                   "step": asdict(result)}
            rows.append(row)
            _log(f"{name}: median restore {result.wall_s:.2f}s of {row['walls']}, {check}")
            targets[name].cleanup()
    finally:
        for target in locals().get("targets", {}).values():
            target.cleanup()
        for cluster in clusters:
            cluster.stop()
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nscale {args.scale}: {report['dataset']['files']} files, "
          f"{report['dataset']['bytes'] / 1e6:.0f} MB; {CORES} cores; "
          f"s3archive --workers {args.workers}; median of {max(1, args.repeat)} restore(s) "
          f"into {'a fresh ext4 each' if report.get('fresh_fs') else 'the same filesystem'}\n")
    print(table(rows))
    by = {r["tool"]: r for r in rows}
    if "restic" in by:
        ours, theirs = by["s3archive"], by["restic"]
        verdict = "PASS" if ours["wall_s"] <= theirs["wall_s"] else "FAIL"
        print(f"\ntarget: [{verdict}] restore at least as fast as restic: "
              f"{ours['mb_per_s']:.1f} vs {theirs['mb_per_s']:.1f} MB/s")
    report["results"] = rows
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if all(r["check"] != "DIFFERS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
