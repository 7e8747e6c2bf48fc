"""Restore benchmark: s3archive restore against restic restore of the same tree, on RGW.

    python bench/bench_restore.py [--scale 1.0] [--repeat 3] [--steps whole,one]
                                  [--workdir DIR] [--no-restic] [--workers N]
                                  [--no-check] [--profile DIR] [--json OUT]

Builds the deterministic tree of ``bench/dataset.py`` (~700 MB at scale 1),
backs it up once with each tool (each on its own fresh single-node RGW with
the usage log on, as in ``bench_archive.py``), then, ``--repeat`` times
(default 3), interleaved tool by tool (the first tool alternating), two steps:
``whole`` restores the whole backup, ``one`` restores ``big/dump.sql`` alone
(128 MiB of compressible text at scale 1), each into a fresh loop-mounted ext4
(when root) as a subprocess.  Per step and tool: wall seconds, MB/s, CPU seconds
(user and system) and peak RSS (``wait4``), requests counted by RGW and by
s3archive, bytes sent by RGW, and the load average when it started.  The
medians count (peak RSS: the largest); the first restore of each step is
compared with the source (``rsync -naHAXS -c``, ``cmp``) unless ``--no-check``.
s3archive's modules are compiled once, as an installed package's are
(``harness.compile_tool``).  Issue 15's targets are printed PASS/FAIL and the exit code is 1
when one fails: whole-tree MB/s at least 1.3x restic's with a peak RSS below
restic's, and the single file at least as fast as restic.  ``--profile DIR``
runs s3archive's restores under ``profile_run.py --sample 5``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
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

from harness import (CORES, CountingRGW, Restic, S3Archive, Step, Target,  # noqa: E402
                     prepare, fresh_cluster as _fresh_cluster, log as _log, measure)
from dataset import make_tree  # noqa: E402


def _check(tree: Path, restored: Path) -> str:
    """rsync's itemized differences (empty when the trees agree)."""
    done = subprocess.run(["rsync", "-naHAXS", "--numeric-ids", "-c", "--delete",
                           f"{tree}/", f"{restored}/", "--itemize-changes"],
                          capture_output=True, text=True, errors="replace")
    return done.stdout + (done.stderr if done.returncode else "")


# the single large file restored in its own step (128 MiB of text at scale 1: compressible)
ONE_FILE = Path("big") / "dump.sql"


def restore_s3archive(tool: S3Archive, target: Path, logdir: Path, workers: int,
                      step: str = "restore", paths: list[str] | None = None,
                      profile: Path | None = None) -> tuple[Step, dict[str, Any]]:
    """``profile``: run under ``profile_run.py --sample 5`` writing ``profile.txt``/``.folded``."""
    launcher = ([sys.executable, "-m", "s3archive"] if profile is None else
                [sys.executable, str(HERE / "profile_run.py"), "--sample", "5", str(profile),
                 "--"])
    command = [*launcher, "--config", str(tool.config), "restore",
               "latest", *(paths or []), "--target", str(target), "--workers", str(workers),
               "--json"]
    # (``-m`` imports from the working directory first: the checkout's own)
    result, stdout = measure("s3archive", step, command, tool.env, tool.cluster, logdir,
                             cwd=Path(tool.env.get("S3ARCHIVE_CODE", REPO)))
    summary = json.loads(stdout.strip().splitlines()[-1])
    result.requests_tool = dict(summary.get("store", {}).get("requests", {}))
    result.summary = {k: summary[k] for k in ("ok", "entries", "files", "bytes", "seconds",
                                              "mb_per_s")}
    if not summary.get("ok"):
        raise RuntimeError(f"s3archive {step} not ok: {summary}")
    return result, summary


def restore_restic(tool: Restic, target: Path, logdir: Path, step: str = "restore",
                   include: str | None = None) -> Step:
    command = ["restic", "-r", tool.repo, "--cache-dir", str(tool.cache), "restore", "latest",
               "--target", str(target)]
    if include is not None:
        command += ["--include", include]
    result, _ = measure("restic", step, command, tool.env, tool.cluster, logdir)
    return result


_CALIBRATION = bytes(range(256)) * (128 << 10)  # 32 MiB


def calibrate() -> tuple[float, float]:
    """The machine's speed just now: CPU and wall milliseconds of one SHA-256 over
    32 MiB in this process.  CPU time per hash rises when the core itself runs
    slower (another VM on the host's sibling thread, caches shared with the
    load); wall time rises too when the core is shared (the load)."""
    cpu, wall = time.thread_time(), time.monotonic()
    hashlib.sha256(_CALIBRATION).digest()
    return (time.thread_time() - cpu) * 1e3, (time.monotonic() - wall) * 1e3


def _detail(result: Step) -> str:
    """What tells one repeat from another: faults, context switches, RGW's and the
    others' CPU, and the main thread's CPU, its wait for a core (runnable-wait,
    ``schedstat``) and the rest of the wall time (blocked: waiting for GETs, or
    before and after its sampled life), against the other threads'."""
    main = next((t for t in result.threads if t.main), None)
    rest = [t for t in result.threads if not t.main]
    busiest = ", ".join(f"{t.user_s + t.sys_s:.2f}" for t in rest[:4])
    return (f"{result.minor_faults} minor faults, {result.voluntary_switches} voluntary / "
            f"{result.involuntary_switches} involuntary switches, RGW CPU {result.rgw_cpu_s:.2f}s, "
            f"other CPU {result.other_cpu_s:.2f}s; main thread "
            + (f"{main.user_s:.2f} user {main.sys_s:.2f} sys {main.run_wait_s:.2f} runnable-wait "
               f"{result.wall_s - main.user_s - main.sys_s - main.run_wait_s:.2f} blocked"
               if main else "?")
            + f"; {len(rest)} other threads {sum(t.user_s + t.sys_s for t in rest):.2f}s CPU "
            f"(busiest {busiest}), {sum(t.run_wait_s for t in rest):.2f}s runnable-wait")


def table(rows: list[dict[str, Any]]) -> str:
    heads = ["step", "tool", "wall s", "MB/s", "best MB/s", "requests (RGW)", "GET (RGW)",
             "MB sent (RGW)", "CPU s", "user s", "sys s", "RGW CPU s", "other CPU s",
             "peak RSS MiB", "load", "check"]
    lines = [[r["step"], r["tool"], f"{r['wall_s']:.2f}", f"{r['mb_per_s']:.1f}",
              f"{r['best_mb_per_s']:.1f}", str(r["requests"]),
              str(r["gets"]), f"{r['mb_sent'] / 1e6:.1f}", f"{r['cpu_s']:.2f}",
              f"{r['user_s']:.2f}", f"{r['sys_s']:.2f}", f"{r['rgw_cpu_s']:.2f}",
              f"{r['other_cpu_s']:.2f}",
              f"{r['peak_rss_mib']:.0f}", f"{r['load']:.1f}", r["check"]] for r in rows]
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
    parser.add_argument("--repeat", type=int, default=3,
                        help="restore this many times per tool, interleaved; the medians count")
    parser.add_argument("--steps", default="whole,one",
                        help="comma-separated: whole (the tree), one (big/dump.sql alone)")
    parser.add_argument("--same-fs", action="store_true",
                        help="restore into the workdir's filesystem instead of a fresh "
                             "loop-mounted ext4 per restore (the default when root)")
    parser.add_argument("--compare-code", type=Path, default=None, metavar="DIR",
                        help="also restore s3archive's backup with the s3archive package in "
                             "DIR (another checkout, e.g. main's), interleaved, as tool "
                             "'s3archive@DIR-name' (an A/B of two versions on the same load)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the rsync comparison of the restored trees")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run s3archive's restores under bench/profile_run.py --sample 5 "
                             "and write DIR/restore-STEP-N.txt (timings then not comparable)")
    parser.add_argument("--json", type=Path, default=None, help="write all results as JSON")
    return parser.parse_args(argv)


def _median_row(step: str, name: str, runs: list[tuple[Step, int]], size: int,
                check: str) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda item: item[0].wall_s)
    result, sent = ordered[len(ordered) // 2]
    cpu = sorted(r.cpu_s for r, _ in runs)[len(runs) // 2]
    gets = sum(n for cat, n in result.requests_rgw.items() if cat.startswith("get_obj"))
    return {"step": step, "tool": name, "wall_s": result.wall_s,
            "mb_per_s": size / result.wall_s / 1e6,
            "best_mb_per_s": size / ordered[0][0].wall_s / 1e6,
            "requests": result.requests_total_rgw, "gets": gets, "mb_sent": sent,
            "cpu_s": cpu, "user_s": sorted(r.user_s for r, _ in runs)[len(runs) // 2],
            "sys_s": sorted(r.sys_s for r, _ in runs)[len(runs) // 2],
            "peak_rss_mib": max(r.peak_rss_mib for r, _ in runs),
            # the median run's: its RGW's CPU, and every other process's (the load)
            "rgw_cpu_s": result.rgw_cpu_s, "other_cpu_s": result.other_cpu_s,
            "load": sorted(r.load_before for r, _ in runs)[len(runs) // 2],
            "check": check, "requests_rgw": result.requests_rgw,
            "requests_tool": result.requests_tool,
            "walls": [round(r.wall_s, 2) for r, _ in runs],
            "cpus": [round(r.cpu_s, 2) for r, _ in runs],
            "step_detail": asdict(result)}


def targets(by: dict[tuple[str, str], dict[str, Any]]) -> list[tuple[bool, str]]:
    """Issue 15 item 3 on the medians: (passed, line) for each target that was measured."""
    out: list[tuple[bool, str]] = []
    ours, theirs = by.get(("whole", "s3archive")), by.get(("whole", "restic"))
    if ours and theirs:
        ratio = ours["mb_per_s"] / theirs["mb_per_s"]
        out.append((ratio >= 1.3, f"whole-tree restore at least 1.3x restic's MB/s: "
                    f"{ours['mb_per_s']:.1f} vs {theirs['mb_per_s']:.1f} MB/s ({ratio:.2f}x)"))
        out.append((ours["peak_rss_mib"] < theirs["peak_rss_mib"],
                    f"whole-tree restore peak RSS below restic's: "
                    f"{ours['peak_rss_mib']:.0f} vs {theirs['peak_rss_mib']:.0f} MiB"))
    ours, theirs = by.get(("one", "s3archive")), by.get(("one", "restic"))
    if ours and theirs:
        out.append((ours["wall_s"] <= theirs["wall_s"],
                    f"one {ONE_FILE} restore at least as fast as restic's: "
                    f"{ours['wall_s']:.2f} vs {theirs['wall_s']:.2f} s "
                    f"({ours['mb_per_s']:.1f} vs {theirs['mb_per_s']:.1f} MB/s)"))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    if not steps or any(s not in ("whole", "one") for s in steps):
        print(f"bench: --steps {args.steps!r}: choose from whole, one", file=sys.stderr)
        return 2
    workdir, temporary, use_restic = prepare(args, "s3archive-bench-restore-")
    if workdir is None:
        return 2
    logdir = workdir / "logs"
    tree = workdir / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    report: dict[str, Any] = {"scale": args.scale, "seed": args.seed, "cores": CORES,
                              "workers": args.workers, "steps": steps}
    rows: list[dict[str, Any]] = []
    clusters: list[CountingRGW] = []
    target_dirs: dict[str, Target] = {}
    try:
        began = time.monotonic()
        report["dataset"] = make_tree(tree, args.scale, args.seed)
        size = report["dataset"]["bytes"]
        one_path = tree / ONE_FILE
        one_size = one_path.stat().st_size
        _log(f"tree: {report['dataset']['files']} files, {size / 1e6:.0f} MB in "
             f"{time.monotonic() - began:.1f}s; one file: {one_size / 1e6:.0f} MB")
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
        if args.compare_code is not None:
            other = copy.copy(tools["s3archive"])
            code = str(args.compare_code.resolve())
            other.env = dict(other.env, PYTHONPATH=code, S3ARCHIVE_CODE=code)
            subprocess.run([sys.executable, "-m", "compileall", "-q",
                            str(args.compare_code / "s3archive")], check=True,
                           stdin=subprocess.DEVNULL)
            tools[f"s3archive@{args.compare_code.name}"] = other
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        # restores alternate between the tools (and which goes first), so that noise
        # from other work on the machine falls on both alike; the medians count
        attempts: dict[tuple[str, str], list[tuple[Step, int]]] = {
            (step, name): [] for step in steps for name in tools}
        repeat = max(1, args.repeat)
        fresh_fs = (not args.same_fs and os.geteuid() == 0
                    and shutil.which("mkfs.ext4") is not None)
        report["fresh_fs"] = fresh_fs
        target_dirs = {name: Target(workdir / f"restore-{name}", fresh_fs, size)
                       for name in tools}
        checks: dict[tuple[str, str], str] = {}
        for attempt in range(repeat):
            order = list(tools.items())
            if attempt % 2:
                order.reverse()
            for step in steps:
                for name, tool in order:
                    place = target_dirs[name]
                    place.prepare()
                    target = place.path
                    usage_before = tool.cluster.settled_usage()
                    speed = calibrate()
                    _log(f"{name}: {step} restore ({attempt + 1}/{repeat}) ...")
                    label = f"restore-{step}-{attempt}"
                    paths = [str(one_path)] if step == "one" else None
                    if isinstance(tool, S3Archive):
                        profile = (None if args.profile is None
                                   else args.profile.resolve() / f"{name}-{label}")
                        result, _ = restore_s3archive(tool, target, logdir, args.workers,
                                                      label, paths, profile)
                    else:
                        result = restore_restic(tool, target, logdir, label,
                                                str(one_path) if step == "one" else None)
                    usage_after = tool.cluster.settled_usage()
                    sent = sum(now.get("bytes_sent", 0)
                               - usage_before.get(cat, {}).get("bytes_sent", 0)
                               for cat, now in usage_after.items())
                    bytes_ = size if step == "whole" else one_size
                    _log(f"{name}: {step} restore {result.wall_s:.2f}s, "
                         f"{bytes_ / result.wall_s / 1e6:.1f} MB/s, CPU {result.cpu_s:.2f}s "
                         f"({result.user_s:.2f} user, {result.sys_s:.2f} sys), "
                         f"{result.requests_total_rgw} requests, "
                         f"{result.peak_rss_mib:.0f} MiB peak RSS, load {result.load_before:.1f}")
                    _log(f"{name}:   {_detail(result)}; SHA-256 of 32 MiB before it: "
                         f"{speed[0]:.0f} ms CPU, {speed[1]:.0f} ms wall")
                    result.summary["sha256_32mib_ms"] = [round(v, 1) for v in speed]
                    attempts[(step, name)].append((result, sent))
                    if not args.no_check and attempt == 0:
                        if step == "whole":
                            differs = _check(tree, Path(f"{target}{tree}"))
                        else:
                            restored = Path(f"{target}{one_path}")
                            differs = "" if (restored.is_file() and subprocess.run(
                                ["cmp", "-s", str(one_path), str(restored)]).returncode == 0
                            ) else f"{restored} differs"
                        checks[(step, name)] = "identical" if not differs else "DIFFERS"
                        if differs:
                            _log(f"{name}: {step} restore DIFFERS:\n{differs[:2000]}")
                    place.cleanup()
        for step in steps:
            for name in tools:
                row = _median_row(step, name, attempts[(step, name)],
                                  size if step == "whole" else one_size,
                                  checks.get((step, name), "skipped"))
                rows.append(row)
                _log(f"{name}: {step} median {row['wall_s']:.2f}s of {row['walls']}, "
                     f"CPU {row['cpus']}, {row['check']}")
    finally:
        for place in target_dirs.values():
            place.cleanup()
        for cluster in clusters:
            cluster.stop()
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nscale {args.scale}: {report['dataset']['files']} files, "
          f"{report['dataset']['bytes'] / 1e6:.0f} MB; one file {ONE_FILE}; {CORES} cores; "
          f"s3archive --workers {args.workers}; median of {max(1, args.repeat)} interleaved "
          f"restore(s) into {'a fresh ext4 each' if report.get('fresh_fs') else 'the same filesystem'}"
          f"; load at start {os.getloadavg()[0]:.1f}\n")
    print(table(rows))
    verdicts = targets({(r["step"], r["tool"]): r for r in rows})
    if verdicts:
        print("\nIssue 15 item 3 (medians):")
    for passed, line in verdicts:
        print(f"target: [{'PASS' if passed else 'FAIL'}] {line}")
    report["results"] = rows
    report["targets"] = [{"passed": p, "target": line} for p, line in verdicts]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    failed = any(r["check"] == "DIFFERS" for r in rows) or not all(p for p, _ in verdicts)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
