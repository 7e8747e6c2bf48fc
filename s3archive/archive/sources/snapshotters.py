"""Run the executables of snapshots.d, streaming their data through a pipe.

Each snapshotter is called with one argument: the number of the file
descriptor to write its data to (always 3, so that every shell can
redirect to it: ``pg_dumpall >&"$1"``).  Its stdout is the description; a line
``::restore-through:: CMD`` records the command that restores the data from
stdin.  A snapshotter whose file contains the marker ``s3archive: seekable``
gets a spooled temporary file instead of a pipe (for tools that seek).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Callable

from s3archive.archive.sources.supervision import Capture, PipeReader, Supervision, spawn
from s3archive.clock import utc_now

log = logging.getLogger(__name__)
RESTORE_MARKER = "::restore-through::"
SEEKABLE_MARKER = b"s3archive: seekable"
DESCRIPTION_LIMIT = 64 * 1024  # stdout kept as the description; the rest is drained and counted
STDERR_KEPT = 4096  # the end of stderr, for the warning


@dataclass
class SnapshotOutcome:
    name: str
    status: str  # "ok" | "failed" | "timeout" | "empty"
    exit_status: int | None
    started: datetime
    duration_s: float
    description: str
    restore_through: str | None
    problem: str | None  # a warning for the manifest, or None


def parse_description(stdout: bytes) -> tuple[str, str | None]:
    text = stdout.decode("utf-8", "replace")
    restore = None
    lines = []
    for line in text.splitlines():
        if line.startswith(RESTORE_MARKER):
            restore = line[len(RESTORE_MARKER):].strip() or None
        else:
            lines.append(line.rstrip())
    return "\n".join(lines).strip(), restore


def _wants_seekable(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return SEEKABLE_MARKER in handle.read(8192)
    except OSError:
        return False


def run_snapshotter(path: Path, timeout: float,
                    consume: Callable[[BinaryIO], int]) -> SnapshotOutcome:
    """Run one snapshotter; ``consume`` reads its data and returns the byte count.

    Never blocks past the time-out plus the grace of supervision.py, whatever
    its descendants do; its stdout is kept up to DESCRIPTION_LIMIT bytes.
    """
    started = utc_now()
    clock0 = time.monotonic()
    seekable = _wants_seekable(path)
    spool = tempfile.TemporaryFile(prefix="s3archive-snapshot-") if seekable else None
    if spool is not None:
        data_read, data_write = None, spool.fileno()
    else:
        data_read, data_write = os.pipe()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    watch = Supervision(timeout)
    try:
        pid = spawn(lambda: _spawn(path, data_write, out_write, err_write, watch.environment()))
    except OSError as err:
        pid = None
        spawn_error = err.strerror or str(err)
    finally:
        for fd in (out_write, err_write) + ((data_write,) if spool is None else ()):
            os.close(fd)
    if pid is None:
        for fd in (out_read, err_read) + ((data_read,) if data_read is not None else ()):
            os.close(fd)
        if spool is not None:
            spool.close()
        return SnapshotOutcome(path.name, "failed", None, started, 0.0, "", None,
                               f"cannot run: {spawn_error}")
    pipes = {"stdout": out_read, "stderr": err_read}
    if data_read is not None:
        pipes["data (fd 3)"] = data_read
    watch.start(pid, lambda: _wait(pid), pipes)
    out = Capture(out_read, watch, DESCRIPTION_LIMIT).start()
    err = Capture(err_read, watch, STDERR_KEPT, tail=True).start()
    size = 0
    problem = None
    try:
        if data_read is not None:
            size = consume(PipeReader(data_read, watch))  # type: ignore[arg-type]
            returncode = watch.finish()
        else:
            assert spool is not None
            returncode = watch.finish()
            spool.seek(0)
            size = consume(spool)
    except OSError as error:
        problem = f"reading its data failed: {error}"
        watch.kill()
        returncode = watch.finish()
    except BaseException:  # e.g. an upload failed: the run ends, the child must too
        watch.kill()
        watch.finish()
        raise
    finally:
        if data_read is not None:
            os.close(data_read)
        if spool is not None:
            spool.close()
        stdout, stderr = out.join(), err.join()
    description, restore = parse_description(stdout)
    stderr_tail = " ".join(stderr.decode("utf-8", "replace").split())[-300:]
    duration = time.monotonic() - clock0
    if watch.timed_out:
        status = "timeout"
        problem = problem or f"timed out after {timeout:g} s and was killed ({size} bytes kept)"
    elif returncode != 0 or problem:
        status = "failed"
        problem = problem or f"exited with status {returncode}"
    elif watch.held("data (fd 3)"):
        status = "failed"
        problem = "its data may be incomplete"
    elif size == 0:
        status = "empty"
        problem = "wrote no data"
    else:
        status = "ok"
    if problem and stderr_tail:
        problem += f"; stderr: {stderr_tail}"
    notes = [problem] if problem else []
    if out.truncated:
        notes.append(f"its stdout (the description) was truncated: {out.total} bytes "
                     f"written, the first {DESCRIPTION_LIMIT} kept")
    straggling = watch.straggler_note()
    if straggling:
        notes.append(straggling)
    return SnapshotOutcome(path.name, status, returncode if not watch.timed_out else None,
                           started, duration, description, restore, "; ".join(notes) or None)


DATA_FD = 3


def _spawn(path: Path, data_fd: int, out_fd: int, err_fd: int, env: dict[str, str]) -> int:
    """posix_spawn in a new session with the data on fd 3 (thread-safe, unlike preexec_fn)."""
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.posix_spawn(str(path), [str(path), str(DATA_FD)], env,
                              file_actions=[(os.POSIX_SPAWN_DUP2, null, 0),
                                            (os.POSIX_SPAWN_DUP2, out_fd, 1),
                                            (os.POSIX_SPAWN_DUP2, err_fd, 2),
                                            (os.POSIX_SPAWN_DUP2, data_fd, DATA_FD)],
                              setsid=True)
    finally:
        os.close(null)


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
