"""Run the s3archive CLI under cProfile, every thread included, or report a profile.

    python bench/profile_run.py OUT.prof [--cpu] -- --config CONFIG archive --json
    python bench/profile_run.py --report OUT.prof [--top 15]

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

Profiling slows pure-Python code (often 1.5-2x): compare shares, not seconds,
with an unprofiled run (``bench_scale.py``/``bench_archive.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import threading
import time
from pathlib import Path


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
    parser.add_argument("--report", type=Path, default=None, help="print a profile's top lists")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(own)
    if args.report:
        print(report(args.report, args.top))
        return 0
    if args.out is None or not cli_args:
        parser.error("give OUT.prof and, after --, the s3archive arguments")
    return profiled(args.out, cli_args, args.cpu)


if __name__ == "__main__":
    sys.exit(main())
