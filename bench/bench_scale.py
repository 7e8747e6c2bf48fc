"""Scale benchmark: many small files, s3archive against restic, on RGW.

    python bench/bench_scale.py [--files 1000000] [--per-dir 1000] [--workdir DIR]
                                [--no-restic] [--keep] [--json OUT] [--repeat N]

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

Reported per step: wall, CPU, memory, requests and bytes the server received
(RGW usage log), plus each tool's local cache size after the no-change run.
Memory is the peak RSS of the largest process (``wait4``, exact) and the
sampled peak of the summed PSS of the tool's processes (s3archive's content
workers are processes of their own); the tools are compared on the larger of
the two (``Step.peak_mib``: for restic, one process, its peak RSS).  Targets (issue 10, "Speed at scale" and "Random access") are
printed as PASS/FAIL.  The numbers scale with ``--files``; the same ratios are
meant to hold at 20 000, 200 000 and 1 000 000 files.  ``--repeat N`` runs the
steps N times (fresh buckets, caches and RGWs each time, the tools taking turns
going first) and judges each step by its run of median wall time, printing every
repetition's ratio too: on a machine whose speed drifts, one pair of runs is a
sample, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import (CORES, REPO, CountingRGW, Restic, S3Archive, Step, Target,  # noqa: E402
                     fresh_cluster as _fresh_cluster, log as _log, measure, median_runs,
                     prepare, repeats,
                     stored_by_prefix, warm_page_cache)
from dataset import _Text  # noqa: E402
from profile_run import report as profile_report  # noqa: E402

STEPS = ("initial", "no-change", "ls-dir", "restore-one", "restore-all", "cache-rebuild",
         "mutation", "diff", "verify-all")
ARCHIVE_STEPS = ("initial", "no-change", "cache-rebuild", "mutation")


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
    """s3archive with reader commands; ``--encrypt`` gives the host [encryption]
    and the readers ``--key``.  Cold reads use a second config whose cache
    directory is new and empty every time (a fresh host, a lost cache)."""

    def __init__(self, workdir: Path, tree: Path, cluster: CountingRGW, *, encrypt: bool,
                 profile: Path | None, timeline: Path | None = None,
                 content_workers: int | None = None):
        super().__init__(workdir, tree, cluster, encrypt=encrypt)
        self.profile = profile
        self.timeline = timeline
        self.cold_cache = self.home / "cold-cache"
        text = self.config.read_text()
        if content_workers is not None:  # (an experiment: the default is one per core)
            text += f"\n[content]\nworkers = {content_workers}\n"
            self.config.write_text(text)
        self.cold_config = self.home / "config-cold.toml"
        self.cold_config.write_text(
            text.replace(str(self.home / "cache"), str(self.cold_cache))
                .replace(str(self.home / "state"), str(self.home / "cold-state")))

    def cli(self, step: str) -> list[str]:
        if self.timeline is not None:
            daemons = ",".join(str(pid) for pid in self.cluster.pids)
            stacks = ["--stacks", os.environ["TIMELINE_STACKS"]] if os.environ.get(
                "TIMELINE_STACKS") else []  # the main thread's stack every MS ms, waits too
            return [sys.executable, str(HERE / "timeline.py"), str(self.timeline / f"{step}.tsv"),
                    "--daemons", daemons, *stacks, "--"]
        if self.profile is None:
            return super().cli(step)
        return [sys.executable, str(HERE / "profile_run.py"), *PROFILE_ARGS,
                str(self.profile / f"{step}.prof"), "--"]

    def cache_dir(self) -> Path:
        return self.home / "cache"

    def lose_cache(self) -> None:
        shutil.rmtree(self.cache_dir())

    def read(self, step: str, args: list[str], logdir: Path) -> tuple[Step, str]:
        """A reader command in a fresh process with a cold (new, empty) local cache."""
        shutil.rmtree(self.cold_cache, ignore_errors=True)
        command = [sys.executable, "-m", "s3archive", "--config", str(self.cold_config), *args,
                   *self.key_args]
        return measure(self.name, step, command, self.env, self.cluster, logdir, cwd=REPO,
                       allow_failure=step in MAY_FAIL)

    def ls_dir(self, directory: str, logdir: Path) -> Step:
        result, stdout = self.read("ls-dir", ["ls", "latest", directory], logdir)
        result.summary = {"lines": len(stdout.splitlines())}
        return result

    def restore(self, step: str, paths: list[str], target: Path, logdir: Path) -> Step:
        return self.read(step, ["restore", "latest", *paths, "--target", str(target)],
                         logdir)[0]

    def verify_all(self, logdir: Path) -> Step:
        result, stdout = self.read("verify-all", ["verify", "--all", "--read-data"], logdir)
        result.summary["output_lines"] = len(stdout.splitlines())
        problems = [line.strip() for line in stdout.splitlines() if line.startswith("  - ")]
        if problems:  # the first problem says more than "N runs with problems"
            result.summary["error"] = f"{result.summary.get('error', '')}; {problems[0]}"
        return result

    def diff(self, first: str, second: str, logdir: Path) -> Step:
        result, stdout = self.read("diff", ["diff", first, second], logdir)
        result.summary["lines"] = len(stdout.splitlines())
        return result

    @staticmethod
    def run_id(result: Step) -> str:
        return str(result.summary["run_id"])


class ScaleRestic(Restic):
    """restic with the same reader steps; cold reads get a new, empty --cache-dir."""

    def cache_dir(self) -> Path:
        return self.cache

    def lose_cache(self) -> None:
        shutil.rmtree(self.cache)

    def read(self, step: str, args: list[str], logdir: Path) -> tuple[Step, str]:
        cold = logdir.parent / "restic-cold-cache"
        shutil.rmtree(cold, ignore_errors=True)
        command = ["restic", "-r", self.repo, "--cache-dir", str(cold), *args]
        return measure(self.name, step, command, self.env, self.cluster, logdir,
                       allow_failure=step in MAY_FAIL)

    def ls_dir(self, directory: str, logdir: Path) -> Step:
        result, stdout = self.read("ls-dir", ["ls", "latest", directory], logdir)
        result.summary = {"lines": len(stdout.splitlines())}
        return result

    def restore(self, step: str, paths: list[str], target: Path, logdir: Path) -> Step:
        include = [arg for path in paths for arg in ("--include", path)]
        return self.read(step, ["restore", "latest", "--target", str(target), *include],
                         logdir)[0]

    def verify_all(self, logdir: Path) -> Step:
        # restic check uses a temporary cache of its own unless --with-cache
        result, stdout = self.read("verify-all", ["check", "--read-data"], logdir)
        result.summary["output_lines"] = len(stdout.splitlines())
        return result

    def diff(self, first: str, second: str, logdir: Path) -> Step:
        result, stdout = self.read("diff", ["diff", first, second], logdir)
        result.summary["lines"] = len(stdout.splitlines())
        return result

    @staticmethod
    def run_id(result: Step) -> str:
        return str(result.summary["snapshot_id"])


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(after.keys() | before.keys())
            if after.get(k, 0) != before.get(k, 0)}


MAY_FAIL = ("diff", "verify-all")  # read-only and last: a failure is reported, not fatal
METADATA = {"s3archive": ("meta", "runs"), "restic": ("index", "snapshots")}
RSS_BOUND_MB = 300  # issue 10 item 2, at 1M files
RANDOM_ACCESS = (3.0, 150)  # issue 10 item 1: seconds, MB, cache cold
MUTATION_SHARE = 0.01


def metadata_stored(result: Step) -> int:
    """Bytes of new s3archive metadata objects (meta/ packs and runs/ roots)."""
    stored = result.summary.get("stored", {})
    return sum(v for k, v in stored.items() if k in METADATA["s3archive"])


def targets(by: dict[tuple[str, str], Step], cache: dict[str, int],
            dataset: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """Issue 10's targets; ``None`` marks a figure shown without a target."""
    checks: list[tuple[str, bool | None, str]] = []
    for (tool, step), result in by.items():
        if result.exit_code:
            checks.append((f"{tool} {step} succeeds", False,
                           f"exit {result.exit_code}: {result.summary.get('error', '')}"))

    def ratio(step: str, limit: float | None, label: str) -> None:
        ours, theirs = by.get(("s3archive", step)), by.get(("restic", step))
        if ours and theirs:
            checks.append((label, None if limit is None else ours.wall_s <= limit * theirs.wall_s,
                           f"{ours.wall_s:.2f}s vs {theirs.wall_s:.2f}s "
                           f"({ours.wall_s / theirs.wall_s:.2f}x"
                           + (f", limit {limit}x)" if limit else ")")))

    ratio("initial", 1.0, "initial archive no slower than restic")
    ratio("no-change", 0.8, "no-change archive <= 0.8x restic")
    ratio("ls-dir", 1.0, "ls one directory no slower than restic (cache cold)")
    ratio("restore-one", 1.0, "restore one file no slower than restic (cache cold)")
    for step, label in (("mutation", "archive after 1 % change"),
                        ("cache-rebuild", "archive with a lost cache"),
                        ("restore-all", "restore the whole run"),
                        ("verify-all", "verify --all --read-data / restic check --read-data"),
                        ("diff", "diff of two runs")):
        ratio(step, None, f"{label}: wall vs restic")
    for step in STEPS:
        ours, theirs = by.get(("s3archive", step)), by.get(("restic", step))
        if ours and theirs:
            checks.append((f"{step} peak memory <= restic", ours.peak_mib <= theirs.peak_mib,
                           f"{ours.peak_mib:.0f} vs {theirs.peak_mib:.0f} MiB"
                           + _memory_detail(ours)))
    for step in ("initial", "no-change", "cache-rebuild", "mutation", "restore-all",
                 "verify-all", "diff"):
        ours = by.get(("s3archive", step))
        if ours:
            checks.append((f"{step} peak memory < {RSS_BOUND_MB} MB",
                           ours.peak_mib * 1.048576 < RSS_BOUND_MB,
                           f"{ours.peak_mib * 1.048576:.0f} MB"))
    seconds, megabytes = RANDOM_ACCESS
    for step in ("ls-dir", "restore-one"):
        ours = by.get(("s3archive", step))
        if ours:
            checks.append((f"{step} under {seconds:.0f} s and {megabytes} MB (cache cold)",
                           ours.wall_s < seconds and ours.peak_mib * 1.048576 < megabytes,
                           f"{ours.wall_s:.2f}s, {ours.peak_mib * 1.048576:.0f} MB"))
    for step in ("no-change", "cache-rebuild"):
        ours = by.get(("s3archive", step))
        if ours and "stored" in ours.summary:
            stored = sum(ours.summary["stored"].values())
            theirs = by.get(("restic", step))
            restic = (f"; restic {sum(theirs.summary['stored'].values()) / 1e3:.1f} kB"
                      if theirs and "stored" in theirs.summary else "")
            checks.append((f"{step} run stores at most 1 MB of new objects",
                           stored <= 1_000_000,
                           f"{stored / 1e3:.1f} kB ({_fmt_prefixes(ours.summary['stored'])}; "
                           f"RGW received {ours.bytes_received_rgw / 1e3:.1f} kB){restic}"))
    first, changed = by.get(("s3archive", "initial")), by.get(("s3archive", "mutation"))
    if first and changed and "stored" in first.summary and "stored" in changed.summary:
        # the changed leaf directories plus the directory holding them all
        share = (dataset["dirs_changed"] + 1) / dataset["dirs"]
        expected = share * metadata_stored(first)
        limit = 2 * expected + 64 * 1024
        checks.append(("1 % change stores metadata proportional to the changed directories",
                       metadata_stored(changed) <= limit,
                       f"{metadata_stored(changed) / 1e3:.1f} kB of metadata "
                       f"(initial run {metadata_stored(first) / 1e3:.1f} kB x "
                       f"{dataset['dirs_changed']}+1 of {dataset['dirs']} dirs = "
                       f"{expected / 1e3:.1f} kB; limit 2x + 64 KiB = {limit / 1e3:.1f} kB)"))
    if "s3archive" in cache and "restic" in cache:
        checks.append(("local cache <= 2x restic's", cache["s3archive"] <= 2 * cache["restic"],
                       f"{cache['s3archive'] / 1e6:.1f} MB vs {cache['restic'] / 1e6:.1f} MB"))
    return checks


def _memory_detail(ours: Step) -> str:
    """How s3archive's figure is made up when it ran more than one process."""
    if ours.processes <= 1:
        return ""
    return (f" (s3archive: {ours.processes} processes, PSS summed "
            f"{ours.peak_pss_all_mib:.0f}, largest process {ours.peak_rss_mib:.0f})")


def _fmt_prefixes(stored: dict[str, int]) -> str:
    return ", ".join(f"{k}/ {v / 1e3:.1f} kB" for k, v in stored.items()) or "nothing"


def each_repetition(results: list[Step]) -> list[tuple[str, bool | None, str]]:
    """With ``--repeat``: the wall ratio of every repetition of each step both ran."""
    checks: list[tuple[str, bool | None, str]] = []
    repetitions = sorted({r.repeat for r in results})
    if len(repetitions) < 2:
        return checks
    by = {(r.tool, r.step, r.repeat): r for r in results}
    for step in dict.fromkeys(r.step for r in results):
        ratios = [by[("s3archive", step, n)].wall_s / by[("restic", step, n)].wall_s
                  for n in repetitions
                  if ("s3archive", step, n) in by and ("restic", step, n) in by]
        if ratios:
            checks.append((f"{step}: wall vs restic, each repetition", None,
                           ", ".join(f"{ratio:.2f}x" for ratio in ratios)))
    return checks


def table(results: list[Step]) -> str:
    lines = [f"{'tool':<10} {'step':<14} {'wall s':>8} {'CPU s':>8} {'user s':>7} "
             f"{'sys s':>6} {'RSS MiB':>8} {'PSS sum':>8} {'peak MiB':>8} {'other CPU':>9} "
             f"{'requests':>9} {'MB recv':>8}  stored (new objects)"]
    for r in results:
        stored = _fmt_prefixes(r.summary["stored"]) if "stored" in r.summary else ""
        lines.append(f"{r.tool:<10} {r.step:<14} {r.wall_s:>8.2f} {r.cpu_s:>8.2f} "
                     f"{r.user_s:>7.2f} {r.sys_s:>6.2f} {r.peak_rss_mib:>8.0f} "
                     f"{r.peak_pss_all_mib:>8.0f} {r.peak_mib:>8.0f} {r.other_cpu_s:>9.1f} {r.requests_total_rgw:>9} "
                     f"{r.bytes_received_rgw / 1e6:>8.3f}  {stored}")
    return "\n".join(lines)


def check_restored(target: Path, tree: Path, files: int, rng: random.Random) -> None:
    """The whole tree came back: as many files, and a sample of them byte for byte."""
    restored = target / str(tree).lstrip("/")
    count = 0
    for _, _, names in os.walk(restored):
        count += len(names)
    if count != files:
        raise RuntimeError(f"restored {count} files of {files} under {restored}")
    directories = sorted(tree.iterdir())
    for directory in rng.sample(directories, min(20, len(directories))):
        for path in list(directory.iterdir())[:10]:
            if (restored / path.relative_to(tree)).read_bytes() != path.read_bytes():
                raise RuntimeError(f"{path} restored wrongly")


PROFILE_ARGS: list[str] = []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000, help="number of small files")
    parser.add_argument("--per-dir", type=int, default=1000, help="files per directory")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated subset of {','.join(STEPS)} (in this order; "
                             "initial always runs)")
    parser.add_argument("--encrypt", action="store_true",
                        help="s3archive with [encryption] (readers get --key), as restic "
                             "always encrypts")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="run s3archive's archive steps under bench/profile_run.py and "
                             "write DIR/STEP.prof and DIR/STEP.txt (timings are then not "
                             "comparable: use with --no-restic)")
    parser.add_argument("--timeline", type=Path, default=None, metavar="DIR",
                        help="run s3archive's archive steps under bench/timeline.py, writing "
                             "DIR/STEP.tsv (CPU of its threads, workers and RGW every 0.5 s)")
    parser.add_argument("--content-workers", type=int, default=None, metavar="N",
                        help="s3archive's [content] workers (default: its own, one per core)")
    parser.add_argument("--profile-cpu", action="store_true",
                        help="with --profile: per-thread CPU time instead of wall time")
    parser.add_argument("--profile-sample", type=float, default=None, metavar="MS",
                        help="with --profile: sample every thread's stack every MS ms instead "
                             "of cProfile (true weights, little overhead): DIR/STEP.txt")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    parser.add_argument("--reuse-tree", action="store_true",
                        help="with --workdir: keep a tree an earlier run made there with the "
                        "same --files, --per-dir and --seed (A/B runs without remaking it)")
    parser.add_argument("--no-restic", action="store_true", help="benchmark s3archive only")
    parser.add_argument("--same-fs", action="store_true",
                        help="restore into the workdir's filesystem instead of a fresh "
                             "loop-mounted ext4 per restore (the default when root)")
    parser.add_argument("--json", type=Path, default=None, help="write all results as JSON")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the steps N times, each from empty buckets and caches, the "
                             "tools taking turns going first; targets use each step's run of "
                             "median wall time (this machine's speed drifts by up to 40 %%)")
    args = parser.parse_args(argv)
    args.steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        parser.error(f"--steps: unknown {', '.join(unknown)} (known: {', '.join(STEPS)})")
    if "initial" not in args.steps:
        args.steps.insert(0, "initial")
    if args.repeat < 1:
        parser.error("--repeat: at least 1")
    if args.repeat > 1 and "mutation" in args.steps:
        parser.error("--repeat: not with the mutation step (it changes the tree for good)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, temporary, use_restic = prepare(args, "s3archive-bench-scale-")
    if workdir is None:
        return 2
    if args.profile:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE_ARGS[:] = (["--sample", str(args.profile_sample)] if args.profile_sample
                           else ["--cpu"] if args.profile_cpu else [])
    if args.timeline:
        args.timeline = args.timeline.resolve()
        args.timeline.mkdir(parents=True, exist_ok=True)
    tree = workdir / "tree"
    made = workdir / "tree.json"  # (beside the tree: inside, it would be archived)
    wanted = {"files": args.files, "per_dir": args.per_dir, "seed": args.seed}
    reused = None
    if args.reuse_tree and made.is_file():
        recorded = json.loads(made.read_text())
        if recorded.get("made_with") == wanted and tree.is_dir():
            reused = recorded["dataset"]
    if reused is None:
        made.unlink(missing_ok=True)
        shutil.rmtree(tree, ignore_errors=True)
    clusters: list[CountingRGW] = []
    results: list[Step] = []
    cache: dict[str, int] = {}
    runs: dict[str, list[str]] = {}
    report: dict[str, Any] = {"files": args.files, "per_dir": args.per_dir, "cores": CORES,
                              "encrypt": args.encrypt, "steps": args.steps,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                              "load_at_start": os.getloadavg()}
    rng = random.Random(args.seed)
    try:
        began = time.monotonic()
        if reused is not None:
            report["dataset"] = reused
        else:
            report["dataset"] = make_many(tree, args.files, args.per_dir, args.seed)
            made.write_text(json.dumps({"made_with": wanted, "dataset": report["dataset"]}))
        os.sync()  # the tree's dirty pages written back now, not during the first step
        _log(f"tree: {args.files} files in {report['dataset']['dirs']} directories, "
             f"{report['dataset']['bytes'] / 1e6:.0f} MB in {time.monotonic() - began:.0f}s")
        size = report["dataset"]["bytes"]
        fresh_fs = (not args.same_fs and os.geteuid() == 0
                    and shutil.which("mkfs.ext4") is not None)
        report["fresh_fs"] = fresh_fs
        middle = f"{tree}/d{report['dataset']['dirs'] // 2:05d}"
        one_file = f"{middle}/f{(report['dataset']['dirs'] // 2) * args.per_dir + 7:07d}.txt"
        for repeat in range(args.repeat):
            for cluster in clusters:  # every repetition starts from empty buckets and caches
                cluster.stop()
            clusters.clear()
            runs.clear()
            # logs (and timelines) of each repetition apart: DIR, DIR/repeat-2, ...
            apart = f"repeat-{repeat + 1}" if repeat else ""
            logdir = workdir / "logs" / apart
            logdir.mkdir(parents=True, exist_ok=True)
            timeline = args.timeline and args.timeline / apart
            if timeline:
                timeline.mkdir(parents=True, exist_ok=True)
            tools: list[Any] = []
            for name in ("s3archive", "restic") if use_restic else ("s3archive",):
                cluster = _fresh_cluster(workdir, name, size)
                clusters.append(cluster)
                if name == "s3archive":
                    tools.append(ScaleS3Archive(workdir, tree, cluster, encrypt=args.encrypt,
                                                profile=args.profile, timeline=timeline,
                                                content_workers=args.content_workers))
                else:
                    tools.append(ScaleRestic(workdir, tree, cluster))
            if repeat % 2:  # the tools take turns going first
                tools.reverse()
            for step in args.steps:
                if step == "mutation":
                    made.unlink(missing_ok=True)  # (no longer the tree made: never reused)
                    report["mutation"] = mutate_dirs(tree, MUTATION_SHARE, args.seed + 1000)
                    os.sync()
                    report["dataset"]["dirs_changed"] = report["mutation"]["dirs_changed"]
                    _log(f"mutated: {report['mutation']}")
                for tool in tools:
                    _log(f"{tool.name} {step} ...")
                    if step in ARCHIVE_STEPS:
                        if step == "cache-rebuild":
                            tool.lose_cache()
                        warm_page_cache(tree)
                        before = stored_by_prefix(tool.cluster, tool.bucket)
                        result = tool.run(step, logdir)
                        result.summary["stored"] = _delta(
                            before, stored_by_prefix(tool.cluster, tool.bucket))
                        runs.setdefault(tool.name, []).append(tool.run_id(result))
                    elif step == "ls-dir":
                        result = tool.ls_dir(middle, logdir)
                    elif step == "diff":
                        result = tool.diff(runs[tool.name][0], runs[tool.name][-1], logdir)
                    elif step == "verify-all":
                        result = tool.verify_all(logdir)
                    else:
                        place = Target(workdir / f"{step}-{tool.name}", fresh_fs, size,
                                       args.files)
                        place.prepare()
                        target = place.path
                        paths = [one_file] if step == "restore-one" else []
                        result = tool.restore(step, paths, target, logdir)
                        if step == "restore-one":
                            restored = target / one_file.lstrip("/")
                            if restored.read_bytes() != Path(one_file).read_bytes():
                                raise RuntimeError(f"{tool.name} restored {one_file} wrongly")
                        else:
                            check_restored(target, tree, args.files, rng)
                        place.cleanup()
                    result.repeat = repeat
                    results.append(result)
                    if step == "no-change":
                        cache[tool.name] = tree_size(tool.cache_dir())  # (the last repetition's)
                    if args.json:  # after every step: a long run stopped early keeps its numbers
                        save(args.json, report, results, cache)
                    _log(f"{f'repeat {repeat + 1}/{args.repeat} ' if args.repeat > 1 else ''}"
                         f"{tool.name} {step}: {result.wall_s:.2f}s wall, {result.cpu_s:.2f}s CPU, "
                         f"{result.peak_mib:.0f} MiB (largest process {result.peak_rss_mib:.0f}, "
                         f"PSS summed {result.peak_pss_all_mib:.0f} over {result.processes}), "
                         f"{result.bytes_received_rgw / 1e6:.3f} MB "
                         f"received, {result.requests_total_rgw} requests, other processes "
                         f"{result.other_cpu_s:.1f}s CPU")
    finally:
        for cluster in clusters:
            cluster.stop()
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    chosen = median_runs(results)  # (with one repetition: every run)
    by = {(r.tool, r.step): r for r in chosen}
    print(f"\n{args.files} files, {args.per_dir} per directory, "
          f"{report['dataset']['bytes'] / 1e6:.0f} MB; {CORES} cores; s3archive "
          f"{'encrypted' if args.encrypt else 'plain'}; restores into "
          f"{'a fresh ext4 each' if report.get('fresh_fs') else 'the same filesystem'}; load at start "
          f"{report['load_at_start'][0]:.2f}; local cache after no-change: "
          + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in cache.items()) + "\n")
    if args.repeat > 1:
        print(repeats(results) + "\n")
        print(f"the run of median wall time of each step, of {args.repeat}:")
    print(table(chosen))
    print("\nRSS MiB: the largest process's peak (wait4); PSS sum: the sampled peak of the "
          "process tree's summed PSS; peak MiB, compared: the larger of the two")
    checks = targets(by, cache, report["dataset"]) + each_repetition(results)
    print("\ntargets:")
    for label, ok, detail in checks:
        print(f"  [{'INFO' if ok is None else 'PASS' if ok else 'FAIL'}] {label}: {detail}")
    if args.profile:
        for step in ARCHIVE_STEPS:
            profile = args.profile / f"{step}.prof"
            if profile.exists():
                profile.with_suffix(".txt").write_text(profile_report(profile, 30))
                profile.with_suffix(".main.txt").write_text(
                    profile_report(profile.with_suffix(".main.prof"), 30))
        print(f"\nprofiles: {args.profile}/*.prof, top lists in *.txt "
              f"(python bench/profile_run.py --report FILE.prof)")
    report["targets"] = [{"target": label, "ok": ok, "detail": detail}
                         for label, ok, detail in checks]
    if args.json:
        save(args.json, report, results, cache)
    return 0


def save(path: Path, report: dict[str, Any], results: list[Step], cache: dict[str, int]) -> None:
    report["cache_bytes"] = cache
    report["results"] = [asdict(r) for r in results]
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
