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
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Callable

from s3archive.clock import utc_now

log = logging.getLogger(__name__)
RESTORE_MARKER = "::restore-through::"
SEEKABLE_MARKER = b"s3archive: seekable"


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
    """Run one snapshotter; ``consume`` reads its data and returns the byte count."""
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
    try:
        pid = _spawn(path, data_write, out_write, err_write)
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
    timed_out = threading.Event()

    def kill() -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def time_out() -> None:
        timed_out.set()
        kill()

    timer = threading.Timer(timeout, time_out)
    timer.daemon = True
    timer.start()
    outputs: dict[str, bytes] = {}
    readers = [threading.Thread(target=_slurp, args=(fd, name, outputs), daemon=True)
               for name, fd in (("out", out_read), ("err", err_read))]
    for thread in readers:
        thread.start()
    size = 0
    problem = None
    returncode: int | None = None
    try:
        if spool is None:
            assert data_read is not None
            with open(data_read, "rb", buffering=0) as pipe:
                size = consume(pipe)
            returncode = _wait(pid)
        else:
            returncode = _wait(pid)
            spool.seek(0)
            size = consume(spool)
    except OSError as err:
        problem = f"reading its data failed: {err}"
        kill()
        returncode = _wait(pid)
    except BaseException:  # e.g. an upload failed: the run ends, the child must too
        kill()
        _wait(pid)
        raise
    finally:
        timer.cancel()
        if spool is not None:
            spool.close()
        for thread in readers:
            thread.join(timeout=5)
    description, restore = parse_description(outputs.get("out", b""))
    stderr_tail = " ".join(outputs.get("err", b"").decode("utf-8", "replace").split())[-300:]
    duration = time.monotonic() - clock0
    if timed_out.is_set():
        status = "timeout"
        problem = problem or f"timed out after {timeout:g} s and was killed ({size} bytes kept)"
    elif returncode != 0 or problem:
        status = "failed"
        problem = problem or f"exited with status {returncode}"
    elif size == 0:
        status = "empty"
        problem = "wrote no data"
    else:
        status = "ok"
    if problem and stderr_tail:
        problem += f"; stderr: {stderr_tail}"
    return SnapshotOutcome(path.name, status, returncode if not timed_out.is_set() else None,
                           started, duration, description, restore, problem)


DATA_FD = 3


def _spawn(path: Path, data_fd: int, out_fd: int, err_fd: int) -> int:
    """posix_spawn in a new session with the data on fd 3 (thread-safe, unlike preexec_fn)."""
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.posix_spawn(str(path), [str(path), str(DATA_FD)], os.environ,
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


def _slurp(fd: int, name: str, outputs: dict[str, bytes]) -> None:
    with open(fd, "rb") as stream:
        outputs[name] = stream.read()
