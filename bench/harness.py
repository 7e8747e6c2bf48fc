"""What the benchmarks share: the server, the measured child, the two tools.

* ``CountingRGW``/``fresh_cluster``: a single-node Ceph RGW of its own per tool
  (``tests/support/rgw.py``) with the usage log on, so requests and bytes are
  counted *by the server* the same way for every tool; ``stored_by_prefix``:
  the bytes of a bucket's object versions by first key component.
* ``run_child``: a child process timed to its end: wall seconds, user and
  system CPU and peak RSS (``os.wait4``: the largest of the child and its
  reaped children), taken by a small process that starts it, so that this
  process's own size never shows as the child's peak.
* ``MemorySampler``: the peak of the child's process tree's summed PSS (and
  RSS), from ``/proc/PID/smaps_rollup`` every 0.1 s: with content workers a
  step's memory is the sum over its processes, which ``ru_maxrss`` is not.
  ``Step.peak_mib`` is the figure the tools are compared on.
* ``measure``: ``run_child`` plus the server's side of one step (requests and
  bytes by RGW usage category, RGW's CPU) and the machine's (``CoreSampler``:
  per-core busy share, the tool and its RGW against the other processes), as
  one ``Step``.
* ``S3Archive``/``Restic``: each tool set up against its cluster (bucket,
  credentials, configuration or repository, cache) with an archive step.
* ``prepare``/``open_workdir``, ``warm_page_cache``, ``log``.

Used by ``bench_archive.py``, ``bench_scale.py``, ``bench_restore.py``,
``bench_fleet.py`` and ``bench_find.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from support.rgw import RGWCluster, rgw_available  # noqa: E402

CORES = os.cpu_count() or 1
TICK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
_TAG = Path(sys.argv[0]).stem.replace("_", "-") or "bench"


def log(message: str) -> None:
    """A progress line on stderr: ``[bench-archive 03:15:00] message``."""
    print(f"[{_TAG} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the server side

class CountingRGW(RGWCluster):
    """An RGW cluster whose usage log counts every request (flushed each second)."""

    def _config_text(self) -> str:
        usage = ("rgw enable usage log = true\n"
                 "rgw usage log tick interval = 1\n"
                 "rgw usage log flush threshold = 1\n")
        text = super()._config_text()
        if "[global]\n" in text:  # rgw options under [global] reach radosgw too
            return text.replace("[global]\n", "[global]\n" + usage, 1)
        return text + "\n[global]\n" + usage

    def usage(self) -> dict[str, dict[str, int]]:
        """Cumulative {category: {ops, bytes_received, bytes_sent}} over all users."""
        raw = json.loads(self.admin("usage", "show", "--show-log-entries=false"))
        totals: dict[str, dict[str, int]] = {}
        for user in raw.get("summary", []):
            for cat in user.get("categories", []):
                slot = totals.setdefault(cat["category"],
                                         {"ops": 0, "bytes_received": 0, "bytes_sent": 0})
                for key in slot:
                    slot[key] += int(cat.get(key, 0))
        return totals

    def settled_usage(self, timeout: float = 15.0) -> dict[str, dict[str, int]]:
        """Usage once two reads a flush interval apart agree (the log lags ~1 s)."""
        deadline = time.monotonic() + timeout
        previous = self.usage()
        while True:
            time.sleep(1.2)
            current = self.usage()
            if current == previous or time.monotonic() > deadline:
                return current
            previous = current

    def daemon_cpu_seconds(self) -> float:
        return sum(_proc_cpu_seconds(pid) for pid in self.pids)


def _usage_delta(before: dict, after: dict) -> dict[str, dict[str, int]]:
    delta = {}
    for cat, now in after.items():
        old = before.get(cat, {})
        d = {k: v - old.get(k, 0) for k, v in now.items()}
        if d["ops"]:
            delta[cat] = d
    return dict(sorted(delta.items()))


def stored_by_prefix(cluster: RGWCluster, bucket: str) -> dict[str, int]:
    """Bytes of every object version in the bucket by first key component
    (s3archive: data/, meta/, runs/; restic: data/, index/, snapshots/, ...)."""
    totals: dict[str, int] = {}
    pages = cluster.client().get_paginator("list_object_versions").paginate(Bucket=bucket)
    for page in pages:
        for version in page.get("Versions", []):
            prefix = version["Key"].split("/", 1)[0] if "/" in version["Key"] else "(top)"
            totals[prefix] = totals.get(prefix, 0) + int(version["Size"])
    return totals


# ------------------------------------------------------------------ CPU accounting

def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (None: gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _proc_cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK if fields else 0.0  # utime, stime


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (s3archive's content workers)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children")
                          .read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return found


def _tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid``, its live children and the children it waited for."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    waited = (int(fields[13]) + int(fields[14])) / TICK  # cutime, cstime
    return (_proc_cpu_seconds(pid) + waited
            + sum(_proc_cpu_seconds(child) for child in _children(pid)))


@dataclass
class TreeMemory:
    """One reading of a process tree's resident memory (MiB), summed over the
    processes: RSS (pages they share, the interpreter's and its libraries',
    counted once per process) and PSS (each shared page divided among the
    processes mapping it)."""

    rss_mib: float = 0.0
    pss_mib: float = 0.0
    processes: int = 0


def _tree_memory(pid: int) -> TreeMemory:
    """``pid`` and its live children (s3archive's content workers), from
    ``/proc/PID/smaps_rollup``."""
    rss = pss = 0
    processes = 0
    for each in [pid, *_children(pid)]:
        try:
            text = Path(f"/proc/{each}/smaps_rollup").read_text()
        except OSError:
            continue
        processes += 1
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return TreeMemory(rss / 1024, pss / 1024, processes)


class MemorySampler(threading.Thread):
    """The peak of a process tree's summed RSS and PSS, read every ``interval``
    seconds while a step runs (the tool's process is given by ``watch`` once
    started).  Peaks shorter than the interval can be missed; the largest
    single process's exact high-water mark is ``wait4``'s ``ru_maxrss``, and
    ``Step.peak_mib`` takes the larger of the two."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval = interval
        self.pid: int | None = None
        self.peak_rss_all_mib = 0.0
        self.peak_pss_all_mib = 0.0
        self.most_processes = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def watch(self, pid: int) -> None:
        self.pid = pid

    def run(self) -> None:
        while True:
            if self.pid is not None:
                now = _tree_memory(self.pid)
                if now.processes:
                    self.samples += 1
                    self.peak_rss_all_mib = max(self.peak_rss_all_mib, now.rss_mib)
                    self.most_processes = max(self.most_processes, now.processes)
                    self.peak_pss_all_mib = max(self.peak_pss_all_mib, now.pss_mib)
            if self._stop_event.wait(self.interval):
                return

    def finish(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class ThreadUse:
    """One thread of the tool's process, as last sampled: CPU seconds (utime,
    stime) and the seconds it waited runnable for a core (``schedstat``)."""

    tid: int
    main: bool
    user_s: float = 0.0
    sys_s: float = 0.0
    run_wait_s: float = 0.0


class ThreadSampler(threading.Thread):
    """The CPU of each thread of the tool's main process, read from
    ``/proc/PID/task/*`` every ``interval`` s (a thread that ends between two
    samples loses its last interval's CPU)."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval = interval
        self.pid: int | None = None
        self.threads: dict[int, ThreadUse] = {}
        self._stop_event = threading.Event()

    def watch(self, pid: int) -> None:
        self.pid = pid

    def _sample(self, pid: int) -> None:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            return
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                sched = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            except (OSError, IndexError):
                continue
            use = self.threads.setdefault(tid, ThreadUse(tid, tid == pid))
            use.user_s, use.sys_s = int(stat[11]) / TICK, int(stat[12]) / TICK
            use.run_wait_s = int(sched[1]) / 1e9

    def run(self) -> None:
        while True:
            if self.pid is not None:
                self._sample(self.pid)
            if self._stop_event.wait(self.interval):
                return

    def finish(self) -> list[ThreadUse]:
        self._stop_event.set()
        self.join()
        return sorted(self.threads.values(), key=lambda t: (not t.main, -(t.user_s + t.sys_s)))


def _cpu_times() -> list[tuple[int, int]]:
    """(busy, total) jiffies for each core from /proc/stat."""
    result = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            total = sum(values[:8])
            result.append((total - idle, total))
    return result


BUSY = 0.75  # issue 15: "both cores at least 75 % busy ..."


class CoreSampler(threading.Thread):
    """Samples per-core busy share every ``interval`` s while a step runs, and the
    CPU the tool and its RGW used in each interval (``own``: their CPU seconds
    over interval x cores; the tool's process is given by ``watch`` once started)."""

    def __init__(self, interval: float = 0.5, daemons: list[int] | None = None):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[list[float]] = []
        self.own: list[float] = []  # (tool + its RGW) CPU / interval / cores, per sample
        self.daemons = list(daemons or [])
        self.pid: int | None = None
        self._stop_event = threading.Event()
        self.first = _cpu_times()
        self.last = self.first

    def watch(self, pid: int) -> None:
        self.pid = pid

    def _own_cpu(self) -> float:
        own = _tree_cpu_seconds(self.pid) if self.pid is not None else 0.0
        return own + sum(_proc_cpu_seconds(pid) for pid in self.daemons)

    def run(self) -> None:
        previous, began, used = self.first, time.monotonic(), self._own_cpu()
        while not self._stop_event.wait(self.interval):
            now, moment, cpu = _cpu_times(), time.monotonic(), self._own_cpu()
            self.samples.append([(b1 - b0) / max(1, t1 - t0)
                                 for (b0, t0), (b1, t1) in zip(previous, now)])
            # a process that just ended reads as 0: never a negative interval
            self.own.append(max(0.0, cpu - used) / max(1e-9, moment - began) / CORES)
            previous, began, used = now, moment, cpu

    def finish(self) -> dict[str, Any]:
        self._stop_event.set()
        self.join()
        self.last = _cpu_times()
        busy = sum(b1 - b0 for (b0, _), (b1, _) in zip(self.first, self.last))
        total = sum(t1 - t0 for (_, t0), (_, t1) in zip(self.first, self.last))
        both = [s for s in self.samples if s and min(s) >= BUSY]
        # the last sample ends while the process exits (its CPU is no longer readable)
        own = self.own[:-1] if len(self.own) > 1 else self.own
        return {
            "machine_busy": busy / max(1, total),
            "machine_cpu_s": busy / TICK,
            "both_cores_busy_share": len(both) / len(self.samples) if self.samples else 0.0,
            "own_busy_share": sum(1 for v in own if v >= BUSY) / len(own) if own else 0.0,
            "own_busy": [round(v, 3) for v in own],
        }


# ------------------------------------------------------------------ one child process

@dataclass
class ChildUsage:
    """A finished child process: its exit code, wall time and what it used."""

    exit_code: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mib: float
    minor_faults: int = 0  # pages first touched (fresh memory): system time robust to load
    voluntary_switches: int = 0  # the process waited (I/O, locks, the GIL's condition)
    involuntary_switches: int = 0  # the process was preempted (a core was wanted elsewhere)

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


# Started by ``run_child`` (``python -S``, no site: about 9 MiB): spawns the
# command, waits for it and reports on fd ARGV[1] its pid, then its exit code,
# wall seconds, user and system CPU and peak RSS (KiB) as ``wait4`` gives them.
# A process started straight from the benchmark would report the benchmark's
# own RSS as its peak if that were larger: a child shares (vfork) or copies
# (fork) its parent's memory until it execs, and its ``ru_maxrss`` keeps that
# high-water mark across exec.
_SPAWNER = """\
import json, os, sys, time
fd = int(sys.argv[1])
began = time.monotonic()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
os.write(fd, b"%d\\n" % pid)
_, status, usage = os.wait4(pid, 0)
wall = time.monotonic() - began
os.write(fd, json.dumps([os.waitstatus_to_exitcode(status), wall, usage.ru_utime,
                         usage.ru_stime, usage.ru_maxrss, usage.ru_minflt, usage.ru_nvcsw,
                         usage.ru_nivcsw]).encode())
"""


def run_child(command: list[str], *, stdout: IO[bytes], stderr: IO[bytes],
              env: dict[str, str] | None = None, cwd: Path | None = None,
              started: Callable[[int], None] | None = None) -> ChildUsage:
    """Run ``command`` (stdin empty) to its end.  Wall, CPU seconds and peak RSS
    are ``os.wait4``'s for the command (its CPU includes the children it
    reaped; its peak RSS is the largest of it and them), taken by a small
    process that starts it (``_SPAWNER``), so that the peak is the command's
    own and never this process's.  ``started`` is told the command's pid."""
    read_end, write_end = os.pipe()
    try:
        spawner = subprocess.Popen([sys.executable, "-S", "-c", _SPAWNER, str(write_end),
                                    *command], stdin=subprocess.DEVNULL, stdout=stdout,
                                   stderr=stderr, env=env, cwd=cwd, pass_fds=(write_end,))
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        pid = report.readline()
        if pid and started is not None:
            started(int(pid))
        last = report.read()
    if spawner.wait() != 0 or not last:
        raise RuntimeError(f"could not run {' '.join(command)} (spawner exited with "
                           f"{spawner.returncode})")
    exit_code, wall, user, system, peak_kib, minor_faults, voluntary, involuntary = (
        json.loads(last))
    return ChildUsage(exit_code, wall, user, system, peak_kib / 1024, minor_faults, voluntary,
                      involuntary)


# ------------------------------------------------------------------ one measured step

@dataclass
class Step:
    tool: str
    step: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    minor_faults: int = 0  # the process and its children (wait4)
    voluntary_switches: int = 0  # (wait4)
    involuntary_switches: int = 0  # (wait4)
    threads: list[ThreadUse] = field(default_factory=list)  # the main process's (sampled)
    peak_rss_mib: float = 0.0  # the largest single process (wait4: exact high-water mark)
    peak_rss_all_mib: float = 0.0  # the process and its children, RSS summed (sampled)
    peak_pss_all_mib: float = 0.0  # the same, PSS: shared pages divided among the processes
    processes: int = 0  # the most processes of the tool alive at once (sampled)
    cpu_util: float = 0.0  # cpu_s / wall / cores
    machine_busy: float = 0.0  # all processes, RGW included
    both_cores_busy_share: float = 0.0  # share of 0.5 s samples with every core >= 75 %
    own_busy_share: float = 0.0  # share of 0.5 s samples with tool + its RGW >= 75 % of the cores
    own_busy: list[float] = field(default_factory=list)  # tool + RGW busy share per 0.5 s
    repeat: int = 0  # which repetition (--repeat)
    rgw_cpu_s: float = 0.0
    other_cpu_s: float = 0.0  # everything else on the machine (noise: other jobs)
    load_before: float = 0.0  # 1-minute load average when the step started
    exit_code: int = 0
    requests_rgw: dict[str, int] = field(default_factory=dict)
    requests_total_rgw: int = 0
    put_requests_rgw: int = 0
    bytes_received_rgw: int = 0
    requests_tool: dict[str, int] = field(default_factory=dict)
    put_requests_tool: int | None = None
    bytes_uploaded_tool: int | None = None
    packs_uploaded: int | None = None
    files_changed: int | None = None  # read again (new or changed)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_mib(self) -> float:
        """The step's memory, as the tools are compared: the summed PSS of the
        process tree at its sampled peak, or the largest process's exact peak
        RSS if that is higher (always, for a tool of one process: a process's
        PSS is at most its RSS)."""
        return max(self.peak_rss_mib, self.peak_pss_all_mib)


def _is_put(category: str) -> bool:
    return category.startswith(("put_", "create_", "init_multipart", "complete_multipart",
                                "post_", "copy_obj"))


def median_runs(results: list[Step]) -> list[Step]:
    """Of each tool's step, the repetition of median wall time (all of it, one real run)."""
    chosen: list[Step] = []
    for key in dict.fromkeys((r.tool, r.step) for r in results):
        runs = sorted((r for r in results if (r.tool, r.step) == key), key=lambda r: r.wall_s)
        chosen.append(runs[(len(runs) - 1) // 2])
    return chosen


def repeats(results: list[Step]) -> str:
    """One line per run: wall, CPU (user/sys), busy shares, the noise, the load."""
    lines = []
    for r in results:
        lines.append(f"  {r.tool:13s} {r.step:9s} #{r.repeat + 1}: {r.wall_s:6.2f}s wall, "
                     f"{r.cpu_s:6.2f}s CPU ({r.user_s:.2f} user, {r.sys_s:.2f} sys), RGW "
                     f"{r.rgw_cpu_s:.2f}s, tool+RGW >=75 % in {100 * r.own_busy_share:.0f} % "
                     f"of samples, other CPU {r.other_cpu_s:.1f}s, load {r.load_before:.1f}")
    return "\n".join(lines)


def warm_page_cache(tree: Path) -> None:
    """Read every file once, so neither tool pays for the other's cold cache."""
    buffer = bytearray(1 << 20)
    for directory, _, names in os.walk(tree):
        for name in names:
            try:
                with open(os.path.join(directory, name), "rb", buffering=0) as handle:
                    while handle.readinto(buffer):
                        pass
            except OSError:
                pass


def measure(tool: str, step: str, command: list[str], env: dict[str, str], cluster: CountingRGW,
            logdir: Path, cwd: Path | None = None,
            allow_failure: bool = False) -> tuple[Step, str]:
    """Run ``command`` once; return its measurements and its stdout.  A non-zero
    exit raises, unless ``allow_failure`` (then ``exit_code`` and ``summary["error"]``
    say it)."""
    result = Step(tool, step)
    stem = f"{tool}-{step}"
    usage_before = cluster.settled_usage()
    rgw_before = cluster.daemon_cpu_seconds()
    result.load_before = os.getloadavg()[0]
    sampler = CoreSampler(daemons=list(cluster.pids))
    memory = MemorySampler()
    threads = ThreadSampler()
    out_path, err_path = logdir / f"{stem}.stdout", logdir / f"{stem}.stderr"

    def started(pid: int) -> None:
        sampler.watch(pid)
        memory.watch(pid)
        threads.watch(pid)

    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        sampler.start()
        memory.start()
        threads.start()
        child = run_child(command, stdout=out, stderr=err, env=env, cwd=cwd, started=started)
    cores = sampler.finish()
    memory.finish()
    result.threads = threads.finish()
    result.voluntary_switches = child.voluntary_switches
    result.involuntary_switches = child.involuntary_switches
    result.rgw_cpu_s = cluster.daemon_cpu_seconds() - rgw_before
    result.wall_s, result.exit_code = child.wall_s, child.exit_code
    result.user_s, result.sys_s, result.cpu_s = child.user_s, child.sys_s, child.cpu_s
    result.peak_rss_mib, result.minor_faults = child.peak_rss_mib, child.minor_faults
    result.cpu_util = result.cpu_s / result.wall_s / CORES
    result.machine_busy = cores["machine_busy"]
    result.both_cores_busy_share = cores["both_cores_busy_share"]
    result.own_busy_share, result.own_busy = cores["own_busy_share"], cores["own_busy"]
    result.peak_rss_all_mib = memory.peak_rss_all_mib
    result.peak_pss_all_mib = memory.peak_pss_all_mib
    result.processes = memory.most_processes
    result.other_cpu_s = max(0.0, cores["machine_cpu_s"] - result.cpu_s - result.rgw_cpu_s)
    delta = _usage_delta(usage_before, cluster.settled_usage())
    result.requests_rgw = {cat: d["ops"] for cat, d in delta.items()}
    result.requests_total_rgw = sum(result.requests_rgw.values())
    result.put_requests_rgw = sum(n for cat, n in result.requests_rgw.items() if _is_put(cat))
    result.bytes_received_rgw = sum(d["bytes_received"] for d in delta.values())
    stdout = out_path.read_text(errors="replace")
    if child.exit_code != 0:
        tail = err_path.read_text(errors="replace")[-3000:]
        if allow_failure:
            result.summary["error"] = tail.strip().splitlines()[-1] if tail.strip() else ""
            log(f"{stem} exited with {child.exit_code}: {result.summary['error']}")
            return result, stdout
        raise RuntimeError(f"{stem}: {' '.join(command)} exited with {child.exit_code}\n{tail}")
    return result, stdout


# ------------------------------------------------------------------ the two tools

class Target:
    """Where one restore goes: a plain directory, or a fresh ext4 filesystem.

    Deleting a restored tree (or any large tree: other benchmarks, tests) and
    restoring again into the same filesystem makes ext4's inode allocator
    crawl (``recently_deleted``: sys time grew from 2 s to 13 s over three
    restores here); a new loop-mounted ext4 per restore, like restoring onto a
    new disk, keeps the runs comparable.
    """

    def __init__(self, path: Path, fresh_fs: bool, size: int, files: int = 0):
        self.path = path
        self.image = path.with_suffix(".ext4")
        self.fresh_fs = fresh_fs
        self.size = size
        self.files = files  # inodes wanted beyond mkfs's default (one per 16 KiB)

    def prepare(self) -> None:
        self.cleanup()
        self.path.mkdir(parents=True)
        if self.fresh_fs:
            inode_count = self.files + self.files // 4 + 4096
            # every small file takes a whole 4 KiB block and a 256-byte inode:
            # at 1M files of 1.7 KB that is 4.1 GB, more than twice the bytes
            room = max(2 * self.size, self.size + self.files * 4096 + inode_count * 256)
            with open(self.image, "wb") as handle:
                handle.truncate(room + (1 << 30))
            inodes = ["-N", str(inode_count)] if self.files else []
            subprocess.run(["mkfs.ext4", "-q", "-F", *inodes, str(self.image)], check=True)
            subprocess.run(["mount", "-o", "loop", str(self.image), str(self.path)], check=True)
            (self.path / "lost+found").rmdir()

    def cleanup(self) -> None:
        if self.fresh_fs and os.path.ismount(self.path):
            subprocess.run(["umount", str(self.path)], check=True)
        shutil.rmtree(self.path, ignore_errors=True)
        self.image.unlink(missing_ok=True)


def fresh_cluster(workdir: Path, name: str, tree_bytes: int) -> CountingRGW:
    directory = workdir / f"rgw-{name}"
    shutil.rmtree(directory, ignore_errors=True)
    memstore = max(4 << 30, 8 * tree_bytes)  # memstore holds ~2x the live data, in RAM
    began = time.monotonic()
    cluster = CountingRGW(directory, memstore_bytes=memstore).start()
    log(f"RGW for {name} up at {cluster.endpoint_url} in {time.monotonic() - began:.1f}s")
    return cluster


def base_env() -> dict[str, str]:
    """The tools' environment: no credentials of ours, and Python writes and uses
    bytecode (``PYTHONDONTWRITEBYTECODE`` dropped), as an installed package does."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "RESTIC_", "S3ARCHIVE_"))
            and k != "PYTHONDONTWRITEBYTECODE"}


_compiled = False


def compile_tool() -> None:
    """Compile s3archive's modules once, before any step is timed: an installed
    package has its ``.pyc`` files, and without them every command would spend
    ~0.4 s of CPU compiling (this machine sets ``PYTHONDONTWRITEBYTECODE``)."""
    global _compiled
    if not _compiled:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "s3archive")],
                       env=base_env(), check=True, stdin=subprocess.DEVNULL)
        _compiled = True


def profile_args(sample_ms: float | None, cpu: bool) -> list[str]:
    """``profile_run.py``'s options for a script's ``--profile-sample MS`` / ``--profile-cpu``."""
    return ["--sample", str(sample_ms)] if sample_ms else ["--cpu"] if cpu else []


class S3Archive:
    """s3archive against its cluster: bucket (Object Lock on), credentials file, a
    picker naming the tree, ``config.toml`` (``[encryption]`` with ``encrypt``),
    all under ``workdir/NAME``."""

    name = "s3archive"
    bucket = "bench-s3archive"
    # a script's --profile DIR: archive steps run under bench/profile_run.py with
    # profile_args, writing DIR/NAME-STEP.prof
    profile_dir: Path | None = None
    profile_args: list[str] = []

    def __init__(self, workdir: Path, tree: Path, cluster: CountingRGW, *, encrypt: bool = False,
                 name: str | None = None, bucket: str | None = None):
        self.name = name or self.name
        self.bucket = bucket or self.bucket
        self.cluster = cluster
        self.home = workdir / self.name
        shutil.rmtree(self.home, ignore_errors=True)
        (self.home / "pickers.d").mkdir(parents=True)
        self.env = base_env()
        self.env["PYTHONPATH"] = str(REPO) + os.pathsep + self.env.get("PYTHONPATH", "")
        compile_tool()
        # readers of an encrypted bucket take the restore key (--key FILE)
        self.key_args: list[str] = []
        encryption = self._encryption() if encrypt else ""
        cluster.client().create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)
        credentials = self.home / "credentials"
        credentials.write_text(f"[default]\naws_access_key_id = {cluster.access_key}\n"
                               f"aws_secret_access_key = {cluster.secret_key}\n")
        credentials.chmod(0o600)
        picker = self.home / "pickers.d" / "10-bench-tree"
        picker.write_text(f"#!/bin/sh\necho '{tree}'\n")
        picker.chmod(0o755)
        self.config = self.home / "config.toml"
        self.config.write_text(
            f'[s3]\nbucket = "{self.bucket}"\nendpoint_url = "{cluster.endpoint_url}"\n'
            f'region = "{cluster.region}"\ncredentials_file = "{credentials}"\n'
            f'\n[host]\nname = "bench"\n'
            f'\n[local]\ncache_dir = "{self.home / "cache"}"\n'
            f'state_file = "{self.home / "state" / "last-run.json"}"\n' + encryption)

    def _encryption(self) -> str:
        """A restore key (``key generate``, as an operator would) and a dedup secret
        beside the config (what ``write-config --recipient`` installs); the
        ``[encryption]`` section naming both."""
        key = self.home / "restore.key"
        done = subprocess.run([sys.executable, "-m", "s3archive", "key", "generate",
                               "--out", str(key)], env=self.env, cwd=REPO, check=True,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        recipient = done.stdout.splitlines()[0].strip()  # age1...: the first line
        secret = self.home / "dedup.key"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(subprocess.run(
                [sys.executable, "-c", "import sys; from s3archive.config import "
                 "dedup_secret_file_text; from s3archive.crypto.dedup import DedupSecret; "
                 "sys.stdout.write(dedup_secret_file_text(DedupSecret.generate()))"],
                env=self.env, cwd=REPO, check=True, capture_output=True, text=True).stdout)
        self.key_args = ["--key", str(key)]
        return (f'\n[encryption]\nrecipients = ["{recipient}"]\n'
                f'dedup_secret_file = "{secret}"\n')

    def cli(self, step: str) -> list[str]:
        """How the s3archive command of ``step`` starts (``--profile`` wraps it)."""
        if self.profile_dir is None:
            return [sys.executable, "-m", "s3archive"]
        out = self.profile_dir / f"{self.name}-{step}.prof"
        return [sys.executable, str(HERE / "profile_run.py"), *self.profile_args, str(out), "--"]

    def run(self, step: str, logdir: Path) -> Step:
        command = self.cli(step) + ["--config", str(self.config), "archive", "--json"]
        result, stdout = measure(self.name, step, command, self.env, self.cluster, logdir,
                                 cwd=REPO)
        summary = json.loads(stdout.strip().splitlines()[-1])
        result.summary = {k: v for k, v in summary.items() if k != "warnings"}
        result.summary["warnings"] = len(summary.get("warnings", []))
        result.requests_tool = dict(summary.get("requests", {}))
        result.put_requests_tool = sum(n for op, n in result.requests_tool.items()
                                       if op.startswith("Put"))
        result.bytes_uploaded_tool = summary.get("bytes_uploaded")
        result.packs_uploaded = summary.get("packs_uploaded")
        result.files_changed = summary.get("files", 0) - summary.get("files_unchanged", 0)
        return result


class Restic:
    """restic against its cluster: a bucket, an initialised repository, a cache kept
    across steps (fresh per benchmark)."""

    name = "restic"
    bucket = "bench-restic"
    password = "bench-password"

    def __init__(self, workdir: Path, tree: Path, cluster: CountingRGW):
        self.cluster = cluster
        self.tree = tree
        self.cache = workdir / "restic-cache"
        shutil.rmtree(self.cache, ignore_errors=True)  # fresh per benchmark, kept across steps
        self.repo = f"s3:{cluster.endpoint_url}/{self.bucket}"
        cluster.client().create_bucket(Bucket=self.bucket)
        self.env = base_env()
        self.env.update(AWS_ACCESS_KEY_ID=cluster.access_key,
                        AWS_SECRET_ACCESS_KEY=cluster.secret_key,
                        AWS_DEFAULT_REGION=cluster.region,
                        RESTIC_PASSWORD=self.password)
        began = time.monotonic()
        subprocess.run(["restic", "-r", self.repo, "--cache-dir", str(self.cache), "init"],
                       env=self.env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
        log(f"restic init in {time.monotonic() - began:.1f}s")

    def run(self, step: str, logdir: Path) -> Step:
        command = ["restic", "-r", self.repo, "--cache-dir", str(self.cache), "backup",
                   "--json", "--host", "bench", str(self.tree)]
        result, stdout = measure(self.name, step, command, self.env, self.cluster, logdir)
        summary: dict[str, Any] = {}
        for line in stdout.splitlines():
            if '"summary"' in line:
                summary = json.loads(line)
        result.summary = summary
        result.bytes_uploaded_tool = summary.get("data_added")
        result.files_changed = summary.get("files_new", 0) + summary.get("files_changed", 0)
        return result


# ------------------------------------------------------------------ the work directory

def prepare(args: argparse.Namespace, prefix: str) -> tuple[Path | None, bool, bool]:
    """Check RGW is installed, decide on restic, open the work directory:
    (work directory or None to give up, whether it is temporary, use restic)."""
    if reason := rgw_available():
        print(f"bench: {reason}", file=sys.stderr)
        return None, False, False
    use_restic = not args.no_restic and shutil.which("restic") is not None
    if not args.no_restic and not use_restic:
        log("restic is not installed: benchmarking s3archive only")
    workdir, temporary = open_workdir(args.workdir, prefix)
    return workdir, temporary, use_restic


def open_workdir(given: Path | None, prefix: str) -> tuple[Path | None, bool]:
    """The work directory (a new temporary one unless given) with logs/ in it;
    None when the given one lies inside the repository."""
    temporary = given is None
    workdir = Path(tempfile.mkdtemp(prefix=prefix)) if given is None else given.resolve()
    if workdir == REPO or REPO in workdir.parents:
        print(f"bench: --workdir {workdir} is inside the repository; choose another",
              file=sys.stderr)
        return None, temporary
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    return workdir, temporary
