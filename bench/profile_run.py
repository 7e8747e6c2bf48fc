"""Run the s3archive CLI under cProfile, every thread included, or report a profile.

    python bench/profile_run.py OUT.prof [--cpu] -- --config CONFIG archive --json
    python bench/profile_run.py OUT --sample 5 -- --config CONFIG archive --json
    python bench/profile_run.py --report OUT.prof [--top 15]
    python bench/profile_run.py --phases OUT.folded [OTHER.folded]   # CPU by archive phase

cProfile alone sees only the thread that enabled it; s3archive hashes,
compresses and uploads in thread pools.  Here ``threading.Thread.run`` is
wrapped so every thread started by the command gets its own profiler, and all
of them are merged into OUT.prof (``pstats`` format) when the command ends.
The main thread's profile alone is written to OUT.main.prof, so its
cumulative times read as the phases of the run.

Times are wall clock by default: a worker waiting for work shows up as time in
``acquire``/``wait``.  ``--cpu`` uses each thread's CPU time instead
(``time.thread_time``), so waiting costs nothing and the merged tottime column
adds up to the CPU the process spent in Python-visible functions.

cProfile slows pure-Python code (about 4x on an archive run here) and not C
code (zstd, syscalls), so its shares overstate small Python functions.
``--sample MS`` instead samples every thread's stack every MS milliseconds,
weighted by the CPU that thread used since its previous sample (OUT.txt: self
and inclusive CPU per function; OUT.folded: flamegraph input, in ms): a few
per cent of overhead, C work at its true weight.  Each sample's system time
(from ``/proc/self/task/TID/stat``, in clock ticks: coarse per sample, right
on the sum) goes to OUT.sys.folded, so ``--phases`` splits every phase's CPU
into user and system time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import threading
import time
from pathlib import Path
from types import FrameType


def profiled(out: Path, cli_args: list[str], cpu: bool) -> int:
    timer = time.thread_time if cpu else time.perf_counter
    finished: list[cProfile.Profile] = []
    guard = threading.Lock()
    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile(timer)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()
            with guard:
                finished.append(profile)

    threading.Thread.run = run  # type: ignore[method-assign]
    sys.argv = ["s3archive", *cli_args]
    main_profile = cProfile.Profile(timer)
    code: int | str | None = 0
    # imported before profiling starts: import time is not the run's
    from s3archive.cli.main import main

    main_profile.enable()
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        main_profile.disable()
        main_profile.dump_stats(str(out.with_suffix(".main.prof")))
        stats = pstats.Stats(main_profile)
        with guard:
            for profile in finished:
                stats.add(profile)
        stats.dump_stats(str(out))
        print(f"profile_run: {len(finished)} threads besides the main one merged into {out}",
              file=sys.stderr)
    return code if isinstance(code, int) else (0 if code is None else 1)


SWITCH_INTERVAL = 0.0002  # s; Python's default is 0.005
TICKS = os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """Every ``interval`` s, the stack of every other thread (``sys._current_frames``),
    weighted by the CPU time that thread used since the previous sample (its
    own clock, ``pthread_getcpuclockid``): self and inclusive CPU seconds per
    function.  A thread inside a C call that released the GIL (zstd, SHA-256,
    a read) is seen at the Python line that called it, so unlike cProfile this
    gives C work its true weight and adds almost no overhead; a thread waiting
    (for a lock, a queue, a socket, the GIL) uses no CPU and weighs nothing."""

    def __init__(self, interval: float):
        super().__init__(daemon=True, name="sampler")
        self.interval = interval
        self.cpu = 0.0
        self.own: dict[str, float] = {}
        self.inclusive: dict[str, float] = {}
        self.stacks: dict[str, float] = {}
        self.sys_stacks: dict[str, float] = {}  # system time per stack (clock ticks)
        self.threads: dict[str, float] = {}
        self._last: dict[int, float] = {}
        self._last_sys: dict[int, int] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        me = threading.get_ident()
        while not self._stop_event.wait(self.interval):
            threads = {thread.ident: thread for thread in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                try:
                    now = time.clock_gettime(time.pthread_getcpuclockid(ident))
                except OSError:  # the thread just ended
                    continue
                used = now - self._last.get(ident, now)
                self._last[ident] = now
                thread = threads.get(ident)
                system = self._system_ticks(ident, thread.native_id if thread else None)
                if used > 0:
                    self._take(frame, used, (thread.name if thread else "?").split("_")[0],
                               system)

    def _system_ticks(self, ident: int, native_id: int | None) -> float:
        """System seconds the thread used since its previous sample (whole clock ticks)."""
        if native_id is None:
            return 0.0
        try:
            with open(f"/proc/self/task/{native_id}/stat", "rb") as handle:
                ticks = int(handle.read().rsplit(b")", 1)[1].split()[12])  # stime
        except (OSError, IndexError, ValueError):
            return 0.0
        previous = self._last_sys.get(ident, ticks)
        self._last_sys[ident] = ticks
        return (ticks - previous) / TICKS

    def _take(self, frame: FrameType | None, used: float, thread: str,
              system: float = 0.0) -> None:
        names: list[str] = []
        while frame is not None:
            code = frame.f_code
            names.append(f"{Path(code.co_filename).name}:{code.co_firstlineno}({code.co_name})")
            frame = frame.f_back
        if not names:
            return
        self.cpu += used
        self.threads[thread] = self.threads.get(thread, 0.0) + used
        self.own[names[0]] = self.own.get(names[0], 0.0) + used
        for name in set(names):
            self.inclusive[name] = self.inclusive.get(name, 0.0) + used
        folded = ";".join(reversed(names))
        self.stacks[folded] = self.stacks.get(folded, 0.0) + used
        if system:
            self.sys_stacks[folded] = self.sys_stacks.get(folded, 0.0) + system

    def finish(self, out: Path, top: int) -> None:
        self._stop_event.set()
        self.join()
        for suffix, stacks in ((".folded", self.stacks), (".sys.folded", self.sys_stacks)):
            with open(out.with_suffix(suffix), "w") as handle:  # flamegraph.pl input (ms)
                for stack, used in sorted(stacks.items()):
                    handle.write(f"{stack} {round(used * 1000)}\n")
        total = max(self.cpu, 1e-9)
        lines = [f"{self.cpu:.2f} CPU seconds sampled every {self.interval * 1000:.0f} ms; "
                 "by thread: " + ", ".join(f"{name} {used:.2f}s" for name, used in
                                           sorted(self.threads.items(), key=lambda kv: -kv[1]))]
        for title, counts in (("self", self.own), ("inclusive", self.inclusive)):
            lines.append(f"\n==== top {top} by {title} CPU")
            shown = top if title == "self" else 3 * top  # the phases sit below click's frames
            for name, used in sorted(counts.items(), key=lambda kv: -kv[1])[:shown]:
                lines.append(f"{100 * used / total:6.1f} %  {used:8.2f}s  {name}")
        out.with_suffix(".txt").write_text("\n".join(lines) + "\n")


def sampled(out: Path, cli_args: list[str], interval: float, top: int) -> int:
    sys.argv = ["s3archive", *cli_args]
    from s3archive.cli.main import main

    sampler = Sampler(interval)
    # The sampler runs only when it gets the GIL: at the switch interval, or at
    # once when the busy thread releases the GIL itself (a syscall, zstd, a
    # large hash).  With the default 5 ms interval, samples land mostly at
    # those calls and overstate them; a short interval makes them uniform.
    sys.setswitchinterval(SWITCH_INTERVAL)
    code: int | str | None = 0
    sampler.start()
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sampler.finish(out, top)
        print(f"profile_run: {sampler.cpu:.1f} CPU s sampled into {out.with_suffix('.txt')}",
              file=sys.stderr)
    return code if isinstance(code, int) else (0 if code is None else 1)


# The archive's phases, by the innermost frame that names one (file name and
# function as profile_run writes them; the first rule that matches wins).
PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("hash (SHA-256)", ("(chunk_hash)",)),
    ("compress (zstd)", ("chunk_codec.py:", "(encode)")),
    ("compress (zstd)", ("chunk_codec.py:", "(encode_probed)")),
    ("compress (zstd)", ("chunk_codec.py:", "(_looks_incompressible)")),
    ("chunk (FastCDC)", ("chunker.py:", "(blocks)")),
    ("upload (PUT, MD5, chunk rows)", ("(_upload)",)),
    ("pack (packer.add)", ("packer.py:",)),
    ("file-cache lookup", ("(get_file)",)),
    ("file-cache writes", ("(put_files)",)),
    ("entry metadata (describe_entry)", ("(describe_entry)",)),
    ("read (open, fstat, flock, pread)", ("(read_file)",)),
    ("walk (lstat, listdir)", ("walker.py:",)),
    ("tree building", ("tree_builder.py:",)),
    ("spool (entry lines)", ("(_spool_ready)",)),
    ("dedup (writer.add, claim)", ("chunk_writer.py:",)),
    ("threads (pools, locks, GIL hand-overs)", ("thread.py:",)),
    ("threads (pools, locks, GIL hand-overs)", ("threading.py:",)),
]


def phase_of(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for phase, needles in PHASES:
            if all(needle in frame for needle in needles):
                return phase
    return "start-up and other"


def _by_phase(path: Path) -> dict[str, float]:
    totals: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            stack, _, ms = line.rpartition(" ")
            phase = phase_of(stack)
            totals[phase] = totals.get(phase, 0.0) + int(ms) / 1000
    return totals


def phases(paths: list[Path]) -> str:
    """CPU seconds (and system seconds) per phase of each ``.folded`` file, side by side."""
    columns = [(_by_phase(path), _by_phase(path.with_suffix("").with_suffix(".sys.folded")))
               for path in paths]
    order = sorted({phase for cpu, _ in columns for phase in cpu},
                   key=lambda phase: -max(cpu.get(phase, 0.0) for cpu, _ in columns))
    lines = ["phase".ljust(40) + "".join(f" | {path.stem[:24]:>24}" for path in paths),
             " " * 40 + " | CPU s (   %), of it sys" * len(paths)]
    for phase in order + ["total"]:
        cells = []
        for cpu, system in columns:
            total = sum(cpu.values()) or 1e-9
            used = total if phase == "total" else cpu.get(phase, 0.0)
            sys_used = sum(system.values()) if phase == "total" else system.get(phase, 0.0)
            cells.append(f" | {used:6.2f} ({100 * used / total:4.1f} %) {sys_used:5.2f}")
        lines.append(phase.ljust(40) + "".join(cells))
    return "\n".join(lines)


def report(path: Path, top: int) -> str:
    """The ``top`` functions by tottime and by cumulative time."""
    text = io.StringIO()
    stats = pstats.Stats(str(path), stream=text)
    stats.strip_dirs()
    for order in ("tottime", "cumulative"):
        text.write(f"==== {path.name}: top {top} by {order}\n")
        stats.sort_stats(order).print_stats(top)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        split = argv.index("--")
        own, cli_args = argv[:split], argv[split + 1:]
    else:
        own, cli_args = argv, []
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, nargs="?", help="profile to write (pstats format)")
    parser.add_argument("--cpu", action="store_true", help="per-thread CPU time, not wall")
    parser.add_argument("--sample", type=float, default=None, metavar="MS",
                        help="sample every thread's stack every MS milliseconds instead of "
                             "cProfile; writes OUT.txt (self and inclusive shares) and "
                             "OUT.folded (flamegraph input)")
    parser.add_argument("--report", type=Path, default=None, help="print a profile's top lists")
    parser.add_argument("--phases", type=Path, nargs="+", default=None, metavar="FOLDED",
                        help="CPU (and system) seconds by archive phase of sampled profiles "
                             "(OUT.folded), side by side")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(own)
    if args.report:
        print(report(args.report, args.top))
        return 0
    if args.phases:
        print(phases(args.phases))
        return 0
    if args.out is None or not cli_args:
        parser.error("give OUT.prof and, after --, the s3archive arguments")
    if args.sample:
        return sampled(args.out, cli_args, args.sample / 1000, args.top)
    return profiled(args.out, cli_args, args.cpu)


if __name__ == "__main__":
    sys.exit(main())
