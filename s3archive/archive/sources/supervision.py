"""Watching one picker or snapshotter: its time-out, its pipes, and descendants that escape.

A child runs in a session of its own, so killing its process group kills
what it started -- unless a descendant left the group (``setsid``, a
daemon).  Such an escapee may hold our pipes open for ever, and a read that
waits for end-of-file would hold the run with it.  So:

* every child gets a token in its environment (``S3ARCHIVE_JOB``), which its
  descendants inherit (the technique of Jenkins' ProcessTreeKiller);
* on time-out the process group is killed, and every process carrying the
  token;
* pipes are read with a deadline: ``GRACE_S`` after the child exited or was
  killed, every process still holding one of its pipes (found through
  ``/proc/*/fd``) is killed, whatever its session or environment; and
  ``ABANDON_S`` later a pipe still open is given up -- the run never blocks
  on a pipe.  Each such process is named in a warning.

A descendant that left the group but holds none of our pipes is left alone
after a normal exit: it may be a service the snapshotter restarted.

Cgroups would confine more tightly, but are not used: creating one needs a
writable, delegated cgroup v2 hierarchy (under systemd, only inside the
unit's own subtree, and not at all in most containers), and a child can be
moved into it only after it started (or with ``clone3``, which Python does
not offer) -- the /proc tracking above works everywhere s3archive runs.
"""

from __future__ import annotations

import errno
import os
import secrets
import select
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

ENV_TOKEN = "S3ARCHIVE_JOB"
GRACE_S = 2.0  # after the child's exit (or kill): how long its pipes may stay open
ABANDON_S = 1.0  # after killing the holders: how long before a pipe is given up
POLL_S = 0.1


@dataclass(frozen=True)
class Straggler:
    """A process that still held a child's pipe after the grace period."""

    pid: int
    command: str
    pipe: str  # which of the child's pipes it held: "stdout", "data", ...

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command}, holding its {self.pipe})"


@dataclass
class Supervision:
    """The watch over one child: call ``start`` once it runs, ``finish`` at the end."""

    timeout: float
    token: str = field(default_factory=lambda: secrets.token_hex(12))
    timed_out: bool = False
    stragglers: list[Straggler] = field(default_factory=list)
    abandoned: set[str] = field(default_factory=set)  # pipes given up while still open
    returncode: int | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ended = threading.Event()  # the child exited, or was killed
        self._ended_at = 0.0
        self._holders_killed_at: float | None = None
        self._pid = 0
        self._pipes: dict[int, str] = {}  # pipe inode -> name
        self._names: dict[int, str] = {}  # our read end -> name
        self._timer: threading.Timer | None = None
        self._waiter: threading.Thread | None = None

    def environment(self) -> dict[str, str]:
        return dict(os.environ, **{ENV_TOKEN: self.token})

    def start(self, pid: int, wait: Callable[[], int], pipes: dict[str, int]) -> None:
        """Watch the child ``pid`` (reaped by ``wait``) and our read ends of its pipes."""
        self._pid = pid
        self._pipes = {os.fstat(fd).st_ino: name for name, fd in pipes.items()}
        self._names = {fd: name for name, fd in pipes.items()}
        self._timer = threading.Timer(self.timeout, self._time_out)
        self._timer.daemon = True
        self._timer.start()

        def reap() -> None:
            code = wait()
            with self._lock:  # the time-out checks this under the same lock
                self.returncode = code
            if self._timer is not None:
                self._timer.cancel()
            self._end()

        self._waiter = threading.Thread(target=reap, daemon=True, name=f"wait-{pid}")
        self._waiter.start()

    def _end(self) -> None:
        with self._lock:
            if not self._ended.is_set():
                self._ended_at = time.monotonic()
                self._ended.set()

    def _time_out(self) -> None:
        with self._lock:
            if self.returncode is not None:  # it exited just in time
                return
            self.timed_out = True
        self.kill()

    def kill(self) -> None:
        """Kill the child's process group and every process carrying its token.

        Once the child was reaped this does nothing: its process ID may belong
        to another process group by now, and what it left running on purpose
        (a database it restarted) is not ours to kill; pipe holders are dealt
        with by the pipe deadline instead.
        """
        with self._lock:
            reaped = self.returncode is not None
        if reaped:
            self._end()
            return
        try:
            os.killpg(self._pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in _processes_with_environ(f"{ENV_TOKEN}={self.token}".encode()):
            _kill(pid)
        self._end()

    def readinto(self, fd: int, buffer: memoryview) -> int:
        """Read from one of the child's pipes; 0 at its end, or when given up."""
        poller = select.poll()  # (select() fails on descriptors past 1023)
        poller.register(fd, select.POLLIN)
        while True:
            if poller.poll(POLL_S * 1000):
                try:
                    return os.readv(fd, [buffer])
                except BlockingIOError:
                    continue
            if self._give_up():
                self.abandoned.add(self._names.get(fd, str(fd)))
                return 0

    def _give_up(self) -> bool:
        if not self._ended.is_set():
            return False
        with self._lock:
            now = time.monotonic()
            if now < self._ended_at + GRACE_S:
                return False
            if self._holders_killed_at is None:
                self._holders_killed_at = now
                for straggler in _pipe_holders(self._pipes):
                    self.stragglers.append(straggler)
                    _kill(straggler.pid)
            return now >= self._holders_killed_at + ABANDON_S

    def finish(self) -> int | None:
        """The child's exit status, once it exited or the time-out killed it."""
        if self._waiter is not None:
            self._waiter.join()
        return self.returncode

    def held(self, pipe: str) -> bool:
        """Whether a straggler held this pipe (its output may be cut short)."""
        return pipe in self.abandoned or any(s.pipe == pipe for s in self.stragglers)

    def straggler_note(self) -> str | None:
        """A warning's words for the processes that held the pipes, or None."""
        if not self.stragglers and not self.abandoned:
            return None
        held = ", ".join(str(s) for s in self.stragglers) or "an unknown process"
        note = f"its pipes were still held open {GRACE_S:g} s after it ended, by {held} (killed)"
        if self.abandoned:
            note += f"; gave up reading its {', '.join(sorted(self.abandoned))}"
        return note


class PipeReader:
    """``readinto`` over a child's pipe, through its supervision's deadline."""

    def __init__(self, fd: int, supervision: Supervision):
        self.fd = fd
        self.supervision = supervision

    def readinto(self, buffer: memoryview) -> int:
        return self.supervision.readinto(self.fd, buffer)


class Capture:
    """Drains one pipe in a thread, keeping at most ``keep`` bytes (head or tail)."""

    def __init__(self, fd: int, supervision: Supervision, keep: int, tail: bool = False):
        self.fd = fd
        self.supervision = supervision
        self.keep = keep
        self.tail = tail
        self.kept = bytearray()
        self.total = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"capture-{fd}")

    def start(self) -> Capture:
        self._thread.start()
        return self

    def _run(self) -> None:
        buffer = memoryview(bytearray(64 * 1024))
        try:
            while True:
                count = self.supervision.readinto(self.fd, buffer)
                if count == 0:
                    return
                self.total += count
                if self.tail:
                    self.kept += buffer[:count]
                    del self.kept[:-self.keep]
                elif len(self.kept) < self.keep:
                    self.kept += buffer[:min(count, self.keep - len(self.kept))]
        except OSError:
            return
        finally:
            os.close(self.fd)

    def join(self) -> bytes:
        self._thread.join()
        return bytes(self.kept)

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)


def _kill(pid: int) -> None:
    if pid == os.getpid():
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _processes_with_environ(marker: bytes) -> list[int]:
    found = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if environ.startswith(marker + b"\0") or b"\0" + marker + b"\0" in environ:
            found.append(pid)
    return found


def _pipe_holders(pipes: dict[int, str]) -> list[Straggler]:
    """Other processes with an fd on one of these pipes (inode -> name)."""
    links = {f"pipe:[{inode}]": name for inode, name in pipes.items()}
    found = []
    me = os.getpid()
    for pid in _pids():
        if pid == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link in links:
                found.append(Straggler(pid, _command(pid), links[link]))
                break
    return found


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as handle:
            return handle.read().strip().decode("utf-8", "replace")
    except OSError:
        return "?"


_T = TypeVar("_T")
BUSY_RETRIES = 20  # x BUSY_WAIT_S: an executable written a moment ago may still be held
BUSY_WAIT_S = 0.05


def spawn(start: Callable[[], _T]) -> _T:
    """``start()`` (a fork and exec of an operator's executable), again while exec says
    "Text file busy": a process forked elsewhere between someone's writing the file and
    closing it holds it open for writing until that process execs (the race Go's
    os/exec and others retry).  Any other error, or a file still busy after about a
    second, is raised."""
    for _ in range(BUSY_RETRIES):
        try:
            return start()
        except OSError as err:
            if err.errno != errno.ETXTBSY:
                raise
        time.sleep(BUSY_WAIT_S)
    return start()

