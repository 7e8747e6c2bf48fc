"""Run the s3archive CLI and write a timeline of where its CPU goes, every interval.

    python bench/timeline.py OUT.tsv [--interval 0.5] [--daemons PID,PID] -- --config C archive

Every thread the command starts gets its Python name as its Linux name
(``prctl(PR_SET_NAME)``, 15 bytes), so ``/proc/self/task/TID/stat`` tells them
apart; a sampler thread reads, every ``--interval`` seconds, the CPU (user +
system) of each thread of this process, grouped (main, upload, encode, read,
content-worker collectors, other), of its child processes (the content
workers), and of ``--daemons`` (the RGW cluster's mon, OSD and radosgw).
OUT.tsv has one row per interval: the seconds since the start and each
group's CPU over that interval in cores (1.0 = one core busy all of it).  A
last row ``total`` holds CPU seconds.  The sampler itself costs ~0.2 ms of
the main process's CPU per sample.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
GROUPS = ("main", "upload", "encode", "read", "collect", "other", "workers", "rgw")
PR_SET_NAME = 15


def _name_threads() -> None:
    """Each thread started from now on carries its Python name in the kernel."""
    libc = ctypes.CDLL(None, use_errno=True)
    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        libc.prctl(PR_SET_NAME, self.name.encode()[:15], 0, 0, 0)
        original_run(self)

    threading.Thread.run = run  # type: ignore[method-assign]


def _ticks(path: str) -> int:
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


def _group(name: str, tid: int, pid: int) -> str:
    if tid == pid:
        return "main"
    for prefix, group in (("upload", "upload"), ("encode", "encode"), ("read", "read"),
                          ("content-worker", "collect")):
        if name.startswith(prefix):
            return group
    return "other"


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(stat[1]) == pid:
                found.append(int(entry))
    return found


class Sampler(threading.Thread):
    def __init__(self, interval: float, daemons: list[int]):
        super().__init__(daemon=True, name="timeline")
        self.interval = interval
        self.daemons = daemons
        self.pid = os.getpid()
        self.rows: list[tuple[float, dict[str, float]]] = []
        self._halt = threading.Event()
        # last seen CPU ticks: threads by tid, children by pid (ended ones keep theirs)
        self._threads: dict[int, tuple[str, int]] = {}
        self._kids: dict[int, int] = {}

    def _read(self) -> dict[str, int]:
        pid = self.pid
        for tid_text in os.listdir(f"/proc/{pid}/task"):
            tid = int(tid_text)
            try:
                name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            except OSError:
                continue
            ticks = _ticks(f"/proc/{pid}/task/{tid}/stat")
            if ticks:
                self._threads[tid] = (_group(name, tid, pid), ticks)
        for kid in _children(pid):
            ticks = _ticks(f"/proc/{kid}/stat")
            if ticks:
                self._kids[kid] = ticks
        totals = dict.fromkeys(GROUPS, 0)
        for group, ticks in self._threads.values():
            totals[group] += ticks
        totals["workers"] = sum(self._kids.values())
        totals["rgw"] = sum(_ticks(f"/proc/{d}/stat") for d in self.daemons)
        return totals

    def run(self) -> None:
        began = time.monotonic()
        self.first = last = self._read()
        moment = began
        while not self._halt.wait(self.interval):
            now, at = self._read(), time.monotonic()
            span = at - moment
            self.rows.append((at - began, {g: (now[g] - last[g]) / TICK / span
                                           for g in GROUPS}))
            last, moment = now, at
        self.last = self._read()

    def finish(self, out: Path) -> None:
        self._halt.set()
        self.join()
        with out.open("w") as handle:
            handle.write("t\t" + "\t".join(GROUPS) + "\tall\n")
            for at, row in self.rows:
                handle.write(f"{at:.1f}\t" + "\t".join(f"{row[g]:.2f}" for g in GROUPS)
                             + f"\t{sum(row.values()):.2f}\n")
            total = {g: (self.last[g] - self.first[g]) / TICK for g in GROUPS}
            handle.write("total\t" + "\t".join(f"{total[g]:.2f}" for g in GROUPS)
                         + f"\t{sum(total.values()):.2f}\n")


class StackSampler(threading.Thread):
    """Where the main thread is, every ``interval`` s of wall time (its three
    innermost frames), counted."""

    def __init__(self, interval: float, ident: int | None):
        super().__init__(daemon=True, name="stacks")
        self.interval = interval
        self.watched = ident
        self.counts: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            frame = sys._current_frames().get(self.watched)  # type: ignore[arg-type]
            names = []
            while frame is not None and len(names) < 3:
                code = frame.f_code
                names.append(f"{Path(code.co_filename).stem}:{code.co_name}:{frame.f_lineno}")
                frame = frame.f_back
            key = " < ".join(names)
            self.counts[key] = self.counts.get(key, 0) + 1

    def finish(self, out: Path) -> None:
        self._halt.set()
        self.join()
        total = sum(self.counts.values()) or 1
        with out.open("w") as handle:
            for key, count in sorted(self.counts.items(), key=lambda kv: -kv[1]):
                handle.write(f"{count}\t{100 * count / total:.1f}%\t{key}\n")


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit(__doc__)
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--daemons", default="")
    parser.add_argument("--stacks", type=float, default=0.0, metavar="MS",
                        help="also sample the main thread's stack every MS ms of wall time "
                             "(waiting included) into OUT.stacks: its three innermost frames")
    args = parser.parse_args(argv[:split])
    _name_threads()
    if os.environ.get("TIMELINE_SWITCH_S"):  # (an experiment: the GIL's switch interval)
        sys.setswitchinterval(float(os.environ["TIMELINE_SWITCH_S"]))
    from s3archive.cli.main import main as cli_main  # (imported before sampling starts)

    sampler = Sampler(args.interval, [int(p) for p in args.daemons.split(",") if p])
    sampler.start()
    stacks = StackSampler(args.stacks / 1000, threading.main_thread().ident) if args.stacks else None
    if stacks is not None:
        stacks.start()
    sys.argv = ["s3archive", *argv[split + 1:]]
    code: int | str | None = 0
    try:
        cli_main()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sampler.finish(args.out)
        if stacks is not None:
            stacks.finish(args.out.with_suffix(".stacks"))
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(main())
