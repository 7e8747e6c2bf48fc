"""Progress and summaries for people; the archiver itself prints nothing.

On a terminal a status line is refreshed a few times a second on stderr;
under systemd (or with stderr redirected) plain log lines mark the phases,
without control characters.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, TextIO

from s3archive import human


class Progress:
    """The interface the archiver reports through (this one ignores everything)."""

    def phase(self, text: str) -> None:
        pass

    def file(self, path: bytes, size: int) -> None:
        pass

    def read(self, count: int) -> None:
        pass

    def done(self) -> None:
        pass


def printable(path: bytes) -> str:
    """A path for one line of output: never a control character (a file
    name may hold ESC or a newline), non-UTF-8 bytes escaped."""
    text = path.decode("utf-8", "backslashreplace")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
        text = "".join(c if not (ord(c) < 32 or 127 <= ord(c) < 160)
                       else f"\\x{ord(c):02x}" for c in text)
    return text


class TerminalProgress(Progress):
    """A single line on a terminal (files, bytes, rate, current path), redrawn
    at most ``rate`` times a second."""

    def __init__(self, stream: TextIO = sys.stderr, rate: float = 4.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.interval = 1.0 / rate
        self.clock = clock
        self.files = 0
        self.bytes = 0
        self.path = b""
        self.started = clock()
        self._last = float("-inf")
        self._lock = threading.Lock()
        self._phase = ""

    def phase(self, text: str) -> None:
        self._phase = text
        self._draw(force=True)

    def file(self, path: bytes, size: int) -> None:
        with self._lock:
            self.files += 1
            self.path = path
        self._draw()

    def read(self, count: int) -> None:
        with self._lock:
            self.bytes += count
        self._draw()

    def line(self, width: int) -> str:
        elapsed = max(self.clock() - self.started, 1e-6)
        head = (f"{self._phase}: {self.files} files, {human.size(self.bytes)} read, "
                f"{human.size(self.bytes / elapsed)}/s ")
        tail = printable(self.path)
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

    def done(self) -> None:
        with self._lock:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class LogProgress(Progress):
    """Plain lines for the journal: one per phase, a progress line every
    ``every`` seconds, and (verbose) one per file.  No control characters."""

    def __init__(self, stream: TextIO = sys.stderr, verbose: bool = False,
                 every: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.verbose = verbose
        self.every = every
        self.clock = clock
        self.files = 0
        self.bytes = 0
        self.started = clock()
        self._last = self.started
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def phase(self, text: str) -> None:
        self._write(printable(text.encode()))

    def file(self, path: bytes, size: int) -> None:
        with self._lock:
            self.files += 1
        if self.verbose:
            self._write(f"file {printable(path)} ({human.size(size)})")
        self._tick()

    def read(self, count: int) -> None:
        with self._lock:
            self.bytes += count
        self._tick()

    def _tick(self) -> None:
        now = self.clock()
        if now - self._last < self.every:
            return
        self._last = now
        rate = self.bytes / max(now - self.started, 1e-6)
        self._write(f"progress: {self.files} files, {human.size(self.bytes)} read, "
                    f"{human.size(rate)}/s")


def progress_for(stream: TextIO, quiet: bool, verbose: bool = False) -> Progress:
    """Nothing when quiet; a live line on a terminal; log lines otherwise
    (systemd sets JOURNAL_STREAM for a service whose output is the journal)."""
    if quiet:
        return Progress()
    if stream.isatty() and not os.environ.get("JOURNAL_STREAM"):
        return TerminalProgress(stream)
    return LogProgress(stream, verbose=verbose)
