"""Archive benchmark: s3archive against restic on the same tree, each on its own fresh RGW.

    python bench/bench_archive.py [--scale 1.0] [--workdir DIR] [--no-restic] [--encrypt]
                                  [--json OUT] [--profile DIR [--profile-sample MS]]
    python bench/bench_archive.py --encrypt-compare --repeat 3 [--scale 1.0]

Builds the deterministic tree of ``bench/dataset.py`` once, then for each tool
runs three steps as subprocesses: the initial run, a run with no change, and a
run after a ~1 % mutation (``dataset.mutate``).  Each tool gets its own
single-node Ceph RGW (``tests/support/rgw.py``) with the usage log switched on,
so requests and bytes are counted *by the server* the same way for both tools.

Measured per step: wall seconds; the child's user+sys CPU seconds and peak RSS
(``os.wait4`` of that child, which includes its reaped children); CPU
utilisation (CPU seconds / wall / cores); the whole machine's CPU busy share
(``/proc/stat``, RGW included) and the RGW daemons' CPU seconds; requests by
RGW usage category and bytes received by RGW (``radosgw-admin usage show``
deltas); plus each tool's own summary (s3archive ``archive --json``: requests
by operation, bytes and packs uploaded; restic ``backup --json``: files and
data added).  See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dataset import make_tree, mutate  # noqa: E402
from harness import (BUSY, CORES, CountingRGW, Restic, S3Archive, Step,  # noqa: E402
                     median_runs, repeats,
                     fresh_cluster as _fresh_cluster, log as _log, prepare, profile_args,
                     warm_page_cache)

STEPS = ("initial", "no-change", "mutation")


# ------------------------------------------------------------------ report

def _fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "s":
        return f"{value:.2f}"
    if kind == "pct":
        return f"{100 * value:.0f} %"
    if kind == "mb":
        return f"{value / 1e6:.1f}"
    if kind == "mib":
        return f"{value:.0f}"
    return str(value)


def table(results: list[Step]) -> str:
    columns = [(r.tool, r.step) for r in results]
    by = {(r.tool, r.step): r for r in results}
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, getter, kind: str = "") -> None:
        rows.append((label, [_fmt(getter(by[c]), kind) for c in columns]))

    row("wall s", lambda r: r.wall_s, "s")
    row("CPU s (user+sys)", lambda r: r.cpu_s, "s")
    row("  user s", lambda r: r.user_s, "s")
    row("  sys s", lambda r: r.sys_s, "s")
    row("  minor page faults (k)", lambda r: round(r.minor_faults / 1000), "")
    row(f"CPU util (of {CORES} cores)", lambda r: r.cpu_util, "pct")
    row("machine busy (incl. RGW)", lambda r: r.machine_busy, "pct")
    row("all cores >=75 % (share)", lambda r: r.both_cores_busy_share, "pct")
    row("tool+RGW >=75 % (share)", lambda r: r.own_busy_share, "pct")
    row("RGW CPU s", lambda r: r.rgw_cpu_s, "s")
    row("other processes' CPU s", lambda r: r.other_cpu_s, "s")
    row("load avg at start", lambda r: r.load_before, "s")
    row("peak RSS MiB", lambda r: r.peak_rss_mib, "mib")
    row("  with children, RSS summed", lambda r: r.peak_rss_all_mib, "mib")
    row("  with children, PSS summed", lambda r: r.peak_pss_all_mib, "mib")
    row("files read (new/changed)", lambda r: r.files_changed)
    row("MB uploaded (RGW received)", lambda r: r.bytes_received_rgw, "mb")
    row("MB uploaded (tool says)", lambda r: r.bytes_uploaded_tool, "mb")
    row("packs uploaded", lambda r: r.packs_uploaded)
    row("requests (RGW)", lambda r: r.requests_total_rgw)
    row("  PUT-like (RGW)", lambda r: r.put_requests_rgw)
    categories = sorted({cat for r in results for cat in r.requests_rgw})
    for cat in categories:
        row(f"  {cat}", lambda r, cat=cat: r.requests_rgw.get(cat, 0))
    ops = sorted({op for r in results for op in r.requests_tool})
    if ops:
        rows.append(("s3archive says:", ["" for _ in columns]))
        for op in ops:
            row(f"  {op}", lambda r, op=op: r.requests_tool.get(op) if r.tool.startswith("s3archive")
                else None)
    width = max(len(label) for label, _ in rows)
    heads = [f"{tool[:13]} {step[:9]}" for tool, step in columns]
    cell = max(11, *(len(h) for h in heads))
    lines = [" " * width + " | " + " | ".join(h.rjust(cell) for h in heads)]
    lines.append("-" * len(lines[0]))
    for label, cells in rows:
        lines.append(label.ljust(width) + " | " + " | ".join(c.rjust(cell) for c in cells))
    return "\n".join(lines)


def targets(results: list[Step]) -> list[tuple[str, bool | None, str]]:
    by = {(r.tool, r.step): r for r in results}
    checks: list[tuple[str, bool | None, str]] = []
    for step in ("initial", "no-change"):
        ours, theirs = by.get(("s3archive", step)), by.get(("restic", step))
        if ours and theirs:
            checks.append((f"{step} wall <= restic", ours.wall_s <= theirs.wall_s,
                           f"{ours.wall_s:.2f}s vs {theirs.wall_s:.2f}s"))
    for step in STEPS:
        ours = by.get(("s3archive", step))
        if ours and ours.packs_uploaded is not None:
            puts = max(ours.put_requests_tool or 0, ours.put_requests_rgw)
            limit = 2 * ours.packs_uploaded + 10
            checks.append((f"{step} PUTs < 2 x packs + 10", puts < limit,
                           f"{puts} PUTs (s3archive {ours.put_requests_tool}, RGW "
                           f"{ours.put_requests_rgw}), limit {limit}"))
    # s3archive with its content workers: their summed PSS (the interpreter's pages they
    # share counted once), or the largest process alone (exact, wait4), as for restic
    ours_rss = max((r.peak_mib for r in results if r.tool == "s3archive"), default=None)
    theirs_rss = max((r.peak_mib for r in results if r.tool == "restic"), default=None)
    if ours_rss is not None and theirs_rss is not None:
        checks.append(("peak RSS < restic", ours_rss < theirs_rss,
                       f"{ours_rss:.0f} MiB vs {theirs_rss:.0f} MiB"))
    checks.extend(encryption_overhead(by))
    ours = by.get(("s3archive", "initial"))
    if ours:
        own = (ours.cpu_s + ours.rgw_cpu_s) / ours.wall_s / CORES  # not other jobs' CPU
        checks.append(("both cores busy (initial)", own >= 0.8,
                       f"s3archive + its RGW {100 * own:.0f} % of {CORES} cores "
                       f"(machine {100 * ours.machine_busy:.0f} % busy), s3archive alone "
                       f"{100 * ours.cpu_util:.0f} % of {CORES} cores, all cores >=75 % in "
                       f"{100 * ours.both_cores_busy_share:.0f} % of samples"))
    return checks


WALL_RATIO = 0.7  # issue 15 item 1: initial archive at most 0.7x restic's wall time ...
BUSY_SHARE = 0.8  # ... both cores >= BUSY for at least this share of the run ...
SMALL_RUN_RATIOS = {"no-change": 0.6, "mutation": 0.7}  # item 2: at most this x restic's wall


def speed_targets(results: list[Step], tree_bytes: int) -> list[tuple[str, bool | None, str]]:
    """Issue 15 items 1 and 2, on the medians of the repetitions of each step."""
    def median_of(tool: str, value: Callable[[Step], float],
                  step: str = "initial") -> float | None:
        values = [value(r) for r in results if (r.tool, r.step) == (tool, step)]
        return statistics.median(values) if values else None

    checks: list[tuple[str, bool | None, str]] = []
    runs = sum(1 for r in results if (r.tool, r.step) == ("s3archive", "initial"))
    ours_wall = median_of("s3archive", lambda r: r.wall_s)
    theirs_wall = median_of("restic", lambda r: r.wall_s)
    if ours_wall is None:
        return checks
    if theirs_wall is not None:
        checks.append((f"initial wall <= {WALL_RATIO} x restic (median of {runs})",
                       ours_wall <= WALL_RATIO * theirs_wall,
                       f"{ours_wall:.2f}s vs {theirs_wall:.2f}s ({ours_wall / theirs_wall:.2f}x)"))
    for step, ratio in SMALL_RUN_RATIOS.items():  # item 2, on the medians likewise
        ours_small = median_of("s3archive", lambda r: r.wall_s, step)
        theirs_small = median_of("restic", lambda r: r.wall_s, step)
        if ours_small is not None and theirs_small is not None:
            checks.append((f"{step} wall <= {ratio} x restic (median of {runs})",
                           ours_small <= ratio * theirs_small,
                           f"{ours_small:.2f}s vs {theirs_small:.2f}s "
                           f"({ours_small / theirs_small:.2f}x)"))
    share = median_of("s3archive", lambda r: r.own_busy_share)
    assert share is not None
    checks.append((f"initial: both cores >= {BUSY:.0%} busy (s3archive + its RGW) for "
                   f">= {BUSY_SHARE:.0%} of the run", share >= BUSY_SHARE,
                   f"{100 * share:.0f} % of 0.5 s samples (median of {runs})"))
    mb = tree_bytes / 1e6
    ours_cpu = median_of("s3archive", lambda r: r.cpu_s)
    theirs_cpu = median_of("restic", lambda r: r.cpu_s)
    assert ours_cpu is not None
    with_rgw = median_of("s3archive", lambda r: r.cpu_s + r.rgw_cpu_s)
    detail = (f"s3archive {1000 * ours_cpu / mb:.2f} ms/MB ({ours_cpu:.2f}s; with its RGW "
              f"{1000 * (with_rgw or 0) / mb:.2f} ms/MB)")
    if theirs_cpu is not None:
        theirs_rgw = median_of("restic", lambda r: r.cpu_s + r.rgw_cpu_s)
        detail += (f" vs restic {1000 * theirs_cpu / mb:.2f} ms/MB ({theirs_cpu:.2f}s; with its "
                   f"RGW {1000 * (theirs_rgw or 0) / mb:.2f} ms/MB)")
    checks.append(("initial: CPU s per MB <= restic's", ours_cpu <= theirs_cpu
                   if theirs_cpu is not None else None, detail))
    return checks


ENCRYPTED = "s3archive-enc"
WALL_OVERHEAD = 0.10  # issue 11 item 5: encryption under 10 % of archive wall time ...
BYTES_OVERHEAD = 0.02  # ... and under 2 % of stored bytes


def encryption_overhead(by: dict[tuple[str, str], Step]) -> list[tuple[str, bool | None, str]]:
    """Encrypted against plain s3archive (``--encrypt``), step by step: wall time of
    the archive runs and bytes stored (what RGW received)."""
    checks: list[tuple[str, bool | None, str]] = []
    for step in STEPS:
        plain, sealed = by.get(("s3archive", step)), by.get((ENCRYPTED, step))
        if not (plain and sealed):
            continue
        if step != "no-change":  # a no-change run takes ~1 s: noise, not encryption
            extra = sealed.wall_s / plain.wall_s - 1
            checks.append((f"{step}: encryption adds < {WALL_OVERHEAD:.0%} wall",
                           extra < WALL_OVERHEAD,
                           f"{sealed.wall_s:.2f}s vs {plain.wall_s:.2f}s plain ({extra:+.1%}); "
                           f"CPU {sealed.cpu_s:.2f}s vs {plain.cpu_s:.2f}s"))
        if plain.bytes_received_rgw > 1_000_000:
            extra = sealed.bytes_received_rgw / plain.bytes_received_rgw - 1
            checks.append((f"{step}: encryption adds < {BYTES_OVERHEAD:.0%} stored bytes",
                           extra < BYTES_OVERHEAD,
                           f"{sealed.bytes_received_rgw / 1e6:.2f} MB vs "
                           f"{plain.bytes_received_rgw / 1e6:.2f} MB plain ({extra:+.2%})"))
    return checks


# ------------------------------------------------------------------ main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="dataset scale (1.0 = ~700 MB; 0.05 for a quick run)")
    parser.add_argument("--seed", type=int, default=1, help="dataset seed")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="tree, caches, RGW data and logs (default: a new temp dir, "
                             "removed at the end unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    parser.add_argument("--no-restic", action="store_true", help="benchmark s3archive only")
    parser.add_argument("--encrypt-compare", action="store_true",
                        help="plain against encrypted s3archive only (no restic), --repeat "
                             "times, each on a fresh tree and fresh buckets, the order of the "
                             "two alternating; prints the median overhead of each step and "
                             "PASS/FAIL against issue 11's targets")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="run s3archive's archive steps under bench/profile_run.py: "
                             "DIR/TOOL-STEP.prof (timings are then not comparable)")
    parser.add_argument("--profile-cpu", action="store_true",
                        help="with --profile: per-thread CPU time instead of wall time")
    parser.add_argument("--profile-sample", type=float, default=None, metavar="MS",
                        help="with --profile: sample every thread's stack every MS ms "
                             "(DIR/TOOL-STEP.txt) instead of cProfile")
    parser.add_argument("--encrypt", action="store_true",
                        help="also run s3archive with [encryption] (its own RGW) and print "
                             "the encryption overhead against plain s3archive")
    parser.add_argument("--json", type=Path, default=None, help="write all results as JSON")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every step this many times (fresh tree, RGWs and caches "
                             "each time; tools interleaved); targets use the medians")
    return parser.parse_args(argv)


def overhead_summary(rounds: list[dict[tuple[str, str], Step]]
                     ) -> tuple[list[str], list[tuple[str, bool | None, str]]]:
    """Per step, the encrypted run against the plain one of the same repeat: every
    repeat's overhead and their median (lines to print), and the targets checked on
    the medians: wall < 10 % (initial, mutation), stored bytes < 2 %."""
    lines: list[str] = []
    checks: list[tuple[str, bool | None, str]] = []
    for step in STEPS:
        pairs = [(by[("s3archive", step)], by[(ENCRYPTED, step)]) for by in rounds
                 if ("s3archive", step) in by and (ENCRYPTED, step) in by]
        if not pairs:
            continue
        median = statistics.median
        wall = [e.wall_s / p.wall_s - 1 for p, e in pairs]
        cpu = [e.cpu_s / p.cpu_s - 1 for p, e in pairs]
        stored = [e.bytes_received_rgw / p.bytes_received_rgw - 1 for p, e in pairs
                  if p.bytes_received_rgw > 1_000_000]

        def each(values: list[float]) -> str:
            return ", ".join(f"{v:+.1%}" for v in values)

        line = (f"{step:9s} wall {median(p.wall_s for p, _ in pairs):6.2f} -> "
                f"{median(e.wall_s for _, e in pairs):6.2f} s, median {median(wall):+.1%} "
                f"({each(wall)}); CPU {median(p.cpu_s for p, _ in pairs):6.2f} -> "
                f"{median(e.cpu_s for _, e in pairs):6.2f} s, median {median(cpu):+.1%} "
                f"({each(cpu)}); PUTs "
                + ", ".join(f"{p.put_requests_rgw}->{e.put_requests_rgw}" for p, e in pairs))
        if stored:
            line += f"; stored median {median(stored):+.2%}"
        lines.append(line + "; load " + ", ".join(f"{p.load_before:.1f}" for p, _ in pairs))
        if step != "no-change":  # a no-change run takes ~1 s: noise, not encryption
            checks.append((f"{step}: encryption adds < {WALL_OVERHEAD:.0%} wall (median of "
                           f"{len(wall)})", median(wall) < WALL_OVERHEAD,
                           f"{median(wall):+.1%}; CPU {median(cpu):+.1%}"))
        if stored:
            checks.append((f"{step}: encryption adds < {BYTES_OVERHEAD:.0%} stored bytes "
                           f"(median of {len(stored)})", median(stored) < BYTES_OVERHEAD,
                           f"{median(stored):+.2%}"))
    return lines, checks


def compare_encryption(args: argparse.Namespace, workdir: Path, temporary: bool) -> int:
    """``--encrypt-compare``: plain and encrypted s3archive, ``--repeat`` times.

    Each repeat builds the tree afresh (the mutation changed it), gives both tools a
    fresh bucket and cache on their own long-lived RGW, and runs the three steps
    interleaved: plain first in even repeats, encrypted first in odd ones."""
    logdir = workdir / "logs"
    tree = workdir / "tree"
    clusters: dict[str, CountingRGW] = {}
    rounds: list[dict[tuple[str, str], Step]] = []
    report: dict[str, Any] = {"scale": args.scale, "seed": args.seed, "cores": CORES,
                              "repeat": args.repeat, "workdir": str(workdir),
                              "load_at_start": os.getloadavg(), "rounds": []}
    try:
        for number in range(args.repeat):
            shutil.rmtree(tree, ignore_errors=True)
            dataset = make_tree(tree, args.scale, args.seed)
            report["dataset"] = dataset
            if not clusters:
                for name in ("s3archive", ENCRYPTED):
                    clusters[name] = _fresh_cluster(workdir, name, dataset["bytes"])
            tools = [S3Archive(workdir, tree, clusters["s3archive"],
                               bucket=f"bench-s3archive-{number}"),
                     S3Archive(workdir, tree, clusters[ENCRYPTED], encrypt=True, name=ENCRYPTED,
                               bucket=f"bench-s3archive-{number}")]
            if number % 2:
                tools.reverse()
            by: dict[tuple[str, str], Step] = {}
            for step in STEPS:
                if step == "mutation":
                    mutate(tree, seed=args.seed + 1000)
                for tool in tools:
                    warm_page_cache(tree)
                    # logs (and profiles) of each repeat apart: STEP, STEP-1, STEP-2, ...
                    result = tool.run(step if number == 0 else f"{step}-{number}", logdir)
                    result.step = step
                    by[(tool.name, step)] = result
                    _log(f"repeat {number + 1}/{args.repeat} {tool.name} {step}: "
                         f"{result.wall_s:.2f}s wall, {result.cpu_s:.2f}s CPU, "
                         f"{result.bytes_received_rgw / 1e6:.2f} MB received, "
                         f"load {result.load_before:.2f}")
            rounds.append(by)
            report["rounds"].append([asdict(r) for r in by.values()])
    finally:
        for cluster in clusters.values():
            cluster.stop()
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    dataset = report["dataset"]
    print(f"\nscale {args.scale}: {dataset['files']} files, {dataset['bytes'] / 1e6:.0f} MB; "
          f"{CORES} cores; {args.repeat} repeats; plain -> encrypted, per step:\n")
    lines, checks = overhead_summary(rounds)
    print("\n".join(lines))
    print("\ntargets (issue 11 item 5, on the medians):")
    for label, ok, detail in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {label}: {detail}")
    report["summary"] = lines
    report["targets"] = [{"target": label, "ok": ok, "detail": detail}
                         for label, ok, detail in checks]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(ok for _, ok, _ in checks) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repeat < 1:
        print("bench: --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.encrypt_compare:  # plain against encrypted s3archive alone
        args.encrypt, args.no_restic = True, True
    if args.profile is not None:
        S3Archive.profile_dir = args.profile.resolve()
        S3Archive.profile_dir.mkdir(parents=True, exist_ok=True)
        S3Archive.profile_args = profile_args(args.profile_sample, args.profile_cpu)
    workdir, temporary, use_restic = prepare(args, "s3archive-bench-")
    if workdir is None:
        return 2
    if args.encrypt_compare:
        return compare_encryption(args, workdir, temporary)
    logdir = workdir / "logs"
    tree = workdir / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    clusters: list[CountingRGW] = []
    results: list[Step] = []
    report: dict[str, Any] = {"scale": args.scale, "seed": args.seed, "cores": CORES,
                              "workdir": str(workdir)}
    try:
        for repeat in range(args.repeat):
            for cluster in clusters:  # every repetition starts from empty buckets and caches
                cluster.stop()
            clusters.clear()
            shutil.rmtree(tree, ignore_errors=True)  # the mutation step changed it
            began = time.monotonic()
            report["dataset"] = make_tree(tree, args.scale, args.seed)
            report["dataset"]["build_s"] = round(time.monotonic() - began, 2)
            _log(f"repeat {repeat + 1}/{args.repeat}: tree: {report['dataset']['files']} files, "
                 f"{report['dataset']['bytes'] / 1e6:.0f} MB in {report['dataset']['build_s']}s")
            size = report["dataset"]["bytes"]
            tools: list[Any] = []
            cluster = _fresh_cluster(workdir, "s3archive", size)
            clusters.append(cluster)
            tools.append(S3Archive(workdir, tree, cluster))
            if args.encrypt:
                cluster = _fresh_cluster(workdir, ENCRYPTED, size)
                clusters.append(cluster)
                tools.append(S3Archive(workdir, tree, cluster, encrypt=True, name=ENCRYPTED))
            if use_restic:
                cluster = _fresh_cluster(workdir, "restic", size)
                clusters.append(cluster)
                tools.append(Restic(workdir, tree, cluster))
            for step in STEPS:
                if step == "mutation":
                    report["mutation"] = mutate(tree, seed=args.seed + 1000)
                    _log(f"mutated: {report['mutation']}")
                for tool in tools:
                    warm_page_cache(tree)  # both tools start from the same, cached tree
                    _log(f"{tool.name} {step} ...")
                    result = tool.run(step, logdir)
                    result.repeat = repeat
                    results.append(result)
                    _log(f"{tool.name} {step}: {result.wall_s:.2f}s wall, {result.cpu_s:.2f}s CPU, "
                         f"{result.peak_rss_mib:.0f} MiB peak RSS, "
                         f"{result.requests_total_rgw} requests")
    finally:
        for cluster in clusters:
            cluster.stop()
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    order = [(t, s) for t in ("s3archive", ENCRYPTED, "restic") for s in STEPS]
    results.sort(key=lambda r: (order.index((r.tool, r.step)), r.repeat))
    print(f"\nscale {args.scale}: {report['dataset']['files']} files, "
          f"{report['dataset']['bytes'] / 1e6:.0f} MB; {CORES} cores; "
          f"mutation {report.get('mutation')}\n")
    if args.repeat > 1:
        print(repeats(results) + "\n")
        print(f"the run of median wall time of each step, of {args.repeat}:")
    print(table(median_runs(results)))
    checks = targets(median_runs(results)) + speed_targets(results, report["dataset"]["bytes"])
    print("\ntargets:")
    for label, ok, detail in checks:
        print(f"  [{'INFO' if ok is None else 'PASS' if ok else 'FAIL'}] {label}: {detail}")
    report["results"] = [asdict(r) for r in results]
    report["targets"] = [{"target": label, "ok": ok, "detail": detail}
                         for label, ok, detail in checks]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
