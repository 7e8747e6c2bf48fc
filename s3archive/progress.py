"""Progress and summaries for people; the archiver and the restorer print nothing.

Both report through :class:`Progress`: phases, totals when known, the file
being read or written now (``begin``/``end``), each entry done (files,
directories and other kinds counted apart) and the bytes moved.  On a
terminal a status line is refreshed a few times a second on stderr (lines
listed with ``-v`` are printed above it); under systemd (or with stderr
redirected) plain lines, without control characters: one per phase, and a
progress line every ``S3ARCHIVE_PROGRESS_INTERVAL`` seconds (default 60).

With totals the line shows done of total and an ETA from the byte rate;
without them the time elapsed.  Restore knows its totals from the plan
before writing; archive learns them when the walk is over, which is at most
a bounded queue of entries (1,024) before the reading ends: a walk ahead of
the reading would stat every file twice.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, TextIO

from s3archive import human
from s3archive.errors import UsageError

INTERVAL_VARIABLE = "S3ARCHIVE_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 60.0  # seconds between plain progress lines


class Progress:
    """The interface the archiver and the restorer report through (this one
    shows nothing; :meth:`note` still prints, it carries output such as ``-v``)."""

    def phase(self, text: str, totals: tuple[int, int] | None = None) -> None:
        """A new phase, with its totals (entries, bytes to move) when known."""

    def totals(self, entries: int, size: int) -> None:
        """The totals of the current phase, learnt while it runs."""

    def begin(self, path: bytes) -> None:
        """Reading (or writing) ``path`` starts now."""

    def end(self, path: bytes) -> None:
        """... and is over."""

    def entry(self, kind: str, path: bytes, size: int = 0) -> None:
        """One entry done (``kind`` as in the manifest: file, dir, symlink ...)."""

    def file(self, path: bytes, size: int) -> None:
        self.entry("file", path, size)

    def read(self, count: int) -> None:
        """``count`` more bytes read (archive) or written (restore)."""

    def note(self, line: str, stream: TextIO) -> None:
        """Print ``line`` on ``stream`` (above a live status line, if any)."""
        stream.write(line + "\n")
        stream.flush()

    def done(self) -> None:
        pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()  # the status line is cleared whatever happened


def printable(path: bytes) -> str:
    """A path for one line of output: never a control character (a file
    name may hold ESC or a newline), non-UTF-8 bytes escaped."""
    text = path.decode("utf-8", "backslashreplace")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
        text = "".join(c if not (ord(c) < 32 or 127 <= ord(c) < 160)
                       else f"\\x{ord(c):02x}" for c in text)
    return text


def entry_line(kind: str, path: bytes, size: int) -> str:
    """``file /etc/passwd (2.1 KiB)``, ``dir /etc``: one entry for ``-v``."""
    return f"{kind} {printable(path)}" + (f" ({human.size(size)})" if kind == "file" else "")


class _Tally(Progress):
    """Counts what happened and formats the status; the renderers below show it."""

    def __init__(self, stream: TextIO, verb: str, verbose: bool,
                 clock: Callable[[], float], by_kind: bool = True):
        self.stream = stream
        self.verb = verb  # "read" or "written"
        self.by_kind = by_kind  # with totals too: files, dirs and others counted apart
        self.verbose = verbose  # list each entry on ``stream``
        self.clock = clock
        self.files = 0
        self.dirs = 0
        self.others = 0
        self.bytes = 0
        self.total_entries: int | None = None
        self.total_bytes: int | None = None
        self.path = b""  # the last entry done
        self._now: dict[bytes, None] = {}  # being read or written, oldest first
        self.started = clock()
        self._since = (self.started, 0)  # (time, bytes) the rate is measured from
        self._lock = threading.RLock()
        self._phase = ""

    # -- events
    def _start_phase(self, text: str, totals: tuple[int, int] | None) -> None:
        with self._lock:
            self._phase = text
            self.total_entries, self.total_bytes = totals if totals else (None, None)
            if totals:  # the phase's own rate: what came before does not predict it
                self._since = (self.clock(), self.bytes)

    def totals(self, entries: int, size: int) -> None:
        with self._lock:
            self.total_entries, self.total_bytes = entries, size

    def begin(self, path: bytes) -> None:
        with self._lock:
            self._now[path] = None
        self._changed()

    def end(self, path: bytes) -> None:
        with self._lock:
            self._now.pop(path, None)

    def entry(self, kind: str, path: bytes, size: int = 0) -> None:
        with self._lock:
            if kind == "file":
                self.files += 1
            elif kind == "dir":
                self.dirs += 1
            else:
                self.others += 1
            self.path = path
        if self.verbose:
            self.note(entry_line(kind, path, size), self.stream)
        self._changed()

    def read(self, count: int) -> None:
        with self._lock:
            self.bytes += count
        self._changed()

    def _changed(self) -> None:
        pass

    def note(self, line: str, stream: TextIO) -> None:
        with self._lock:  # not inside a line another thread is writing
            super().note(line, stream)

    # -- text
    @property
    def current(self) -> bytes:
        """The file being read or written now (the newest begun), else the last done."""
        with self._lock:
            return next(reversed(self._now), self.path) if self._now else self.path

    def status(self) -> str:
        """Without totals ``10 files, 2 dirs, 1.0 MiB read, 2.0 MiB/s, 5.0s elapsed``;
        with them ``12/40 entries, 1.0 MiB of 4.0 MiB written, 2.0 MiB/s, ETA 2s``
        (``by_kind``: ``10 files, 2 dirs of 40 entries, ...``)."""
        with self._lock:
            now = self.clock()
            elapsed = max(now - self.started, 1e-6)
            rate = (self.bytes - self._since[1]) / max(now - self._since[0], 1e-6)
            kinds = f"{self.files} files, {self.dirs} dirs" + (
                f", {self.others} other" if self.others else "")
            if self.total_entries is None or self.total_bytes is None:
                return (f"{kinds}, {human.size(self.bytes)} {self.verb}, "
                        f"{human.size(rate)}/s, {human.duration(elapsed)} elapsed")
            done = self.files + self.dirs + self.others
            counts = (f"{kinds} of {self.total_entries} entries" if self.by_kind
                      else f"{done}/{self.total_entries} entries")
            left = max(self.total_bytes - self.bytes, 0)
            eta = (f"ETA {human.duration(left / rate)}" if self.bytes and rate
                   else "ETA -") if left else "ETA 0s"
            return (f"{counts}, {human.size(self.bytes)} of {human.size(self.total_bytes)} "
                    f"{self.verb}, {human.size(rate)}/s, {eta}")


class TerminalProgress(_Tally):
    """A single line on a terminal (counts, bytes, rate, ETA or elapsed, the
    file now), redrawn at most ``rate`` times a second."""

    def __init__(self, stream: TextIO = sys.stderr, rate: float = 4.0,
                 clock: Callable[[], float] = time.monotonic, verb: str = "read",
                 verbose: bool = False, by_kind: bool = True):
        super().__init__(stream, verb, verbose, clock, by_kind)
        self.interval = 1.0 / rate
        self._last = float("-inf")
        self._shown = False

    def phase(self, text: str, totals: tuple[int, int] | None = None) -> None:
        self._start_phase(text, totals)
        self._draw(force=True)

    def _changed(self) -> None:
        self._draw()

    def line(self, width: int) -> str:
        """The status, then as much of the current path's end as fits: never
        wider than ``width`` - 1 (a wrapped line could not be redrawn)."""
        head = f"{self._phase}: {self.status()} "
        if len(head) > width - 1:
            return head[:max(width - 2, 0)] + "…"
        tail = printable(self.current)
        room = width - len(head) - 1
        if room < len(tail):
            tail = "…" + tail[-max(room - 1, 0):] if room > 1 else ""
        return head + tail

    def _width(self) -> int:
        try:
            return max(os.get_terminal_size(self.stream.fileno()).columns, 40)
        except (OSError, ValueError, AttributeError):
            return 120

    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last < self.interval:
            return
        with self._lock:
            if not force and now - self._last < self.interval:
                return
            self._last = now
            self.stream.write("\r\x1b[K" + self.line(self._width()))
            self.stream.flush()
            self._shown = True

    def note(self, line: str, stream: TextIO) -> None:
        """Clear the status line, print ``line``, draw the status again."""
        with self._lock:
            if self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            stream.write(line + "\n")
            stream.flush()
            self._last = float("-inf")
            self._draw()

    def done(self) -> None:
        with self._lock:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


class LogProgress(_Tally):
    """Plain lines for the journal: one per phase (with the totals when known),
    a progress line every ``every`` seconds, and (verbose) one per entry.
    No control characters."""

    def __init__(self, stream: TextIO = sys.stderr, verbose: bool = False,
                 every: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic,
                 verb: str = "read", by_kind: bool = True):
        super().__init__(stream, verb, verbose, clock, by_kind)
        self.every = every
        self._last = self.started

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def phase(self, text: str, totals: tuple[int, int] | None = None) -> None:
        self._start_phase(text, totals)
        self._write(printable(text.encode()) + (f": {self.status()}" if totals else ""))

    def totals(self, entries: int, size: int) -> None:
        super().totals(entries, size)
        self._write(f"progress: {self.status()}")  # e.g. the walk is over

    def _changed(self) -> None:
        now = self.clock()
        if now - self._last < self.every:
            return
        with self._lock:
            if now - self._last < self.every:
                return
            self._last = now
            current = self.current
            self._write(f"progress: {self.status()}"
                        + (f", now {printable(current)}" if current else ""))


def progress_interval() -> float:
    """Seconds between plain progress lines: ``$S3ARCHIVE_PROGRESS_INTERVAL`` or 60."""
    raw = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise UsageError(f"{INTERVAL_VARIABLE}={raw!r}: not a number of seconds (0 or more)")
    return value


def progress_for(stream: TextIO, quiet: bool, verbose: bool = False,
                 verb: str = "read", by_kind: bool = True) -> Progress:
    """Nothing when quiet; a live line on a terminal; log lines otherwise
    (systemd sets JOURNAL_STREAM for a service whose output is the journal).
    ``verbose`` lists every entry on ``stream``; ``verb`` names the bytes
    counted (``read`` by archive, ``written`` by restore); ``by_kind`` keeps
    files, dirs and others apart once totals are known (archive), else
    entries done of the total (restore)."""
    if quiet:
        return Progress()
    if stream.isatty() and not os.environ.get("JOURNAL_STREAM"):
        return TerminalProgress(stream, verb=verb, verbose=verbose, by_kind=by_kind)
    return LogProgress(stream, verbose=verbose, every=progress_interval(), verb=verb,
                       by_kind=by_kind)
