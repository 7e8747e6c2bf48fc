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
from typing import TextIO


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


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


class TerminalProgress(Progress):
    """A single line on a terminal, redrawn at most ``rate`` times a second."""

    def __init__(self, stream: TextIO = sys.stderr, rate: float = 4.0):
        self.stream = stream
        self.interval = 1.0 / rate
        self.files = 0
        self.bytes = 0
        self.path = b""
        self.started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._phase = ""

    def phase(self, text: str) -> None:
        self._phase = text
        self._draw(force=True)

    def file(self, path: bytes, size: int) -> None:
        self.files += 1
        self.path = path
        self._draw()

    def read(self, count: int) -> None:
        self.bytes += count
        self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        with self._lock:
            self._last = now
            rate = self.bytes / max(now - self.started, 1e-6)
            width = max(os.get_terminal_size(self.stream.fileno()).columns, 40) \
                if self.stream.isatty() else 120
            head = (f"{self._phase}: {self.files} files, {human_bytes(self.bytes)} read, "
                    f"{human_bytes(rate)}/s ")
            tail = self.path.decode("utf-8", "replace")
            room = width - len(head) - 1
            if room < len(tail):
                tail = "…" + tail[-max(room - 1, 0):] if room > 1 else ""
            self.stream.write("\r\x1b[K" + head + tail)
            self.stream.flush()

    def done(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()


class LogProgress(Progress):
    """Plain lines for the journal: one per phase."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream

    def phase(self, text: str) -> None:
        self.stream.write(f"{text}\n")
        self.stream.flush()


def progress_for(stream: TextIO, quiet: bool) -> Progress:
    if quiet:
        return Progress()
    if stream.isatty() and not os.environ.get("JOURNAL_STREAM"):
        return TerminalProgress(stream)
    return LogProgress(stream)
