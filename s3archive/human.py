"""Terminal output: human sizes, dates and durations, aligned tables, paths.

Everything here formats; nothing decides.  ``--json`` output never goes
through this module except :func:`json_path`, which gives a non-UTF-8 path
as ``path`` (lossy, for reading) plus an exact ``path_b64``.
"""

from __future__ import annotations

import base64
import stat
from datetime import datetime, timezone
from typing import Any, Sequence

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(n: int | float | None) -> str:
    """``1.5 MiB``; bytes below 1 KiB as ``512 B``; ``-`` for None."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def date(moment: datetime | None) -> str:
    """``2026-11-21 23:58:00`` in UTC (the bucket's dates are UTC)."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def day(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d")


def mtime(ns: int) -> str:
    """An mtime in ns; years outside datetime's range are shown as seconds."""
    try:
        return date(datetime.fromtimestamp(ns / 1e9, timezone.utc))
    except (OverflowError, OSError, ValueError):
        return f"@{ns // 1_000_000_000}"


def duration(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``2h01m``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def path(raw: bytes) -> str:
    """A path for a terminal: undecodable bytes and control characters escaped."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def json_path(raw: bytes, name: str = "path") -> dict[str, str]:
    """``{"path": ...}``, plus ``path_b64`` (exact) when not valid UTF-8."""
    try:
        return {name: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {name: raw.decode("utf-8", "backslashreplace"),
                f"{name}_b64": base64.b64encode(raw).decode("ascii")}


_KIND_CHAR = {"file": "-", "dir": "d", "symlink": "l", "hardlink": "h", "fifo": "p",
              "chardev": "c", "blockdev": "b"}


def mode_string(kind: str, mode: int) -> str:
    """``drwxr-sr-t`` as ``ls -l`` shows it (``h`` marks another hardlink name)."""
    return _KIND_CHAR.get(kind, "?") + stat.filemode(mode)[1:]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
          right: Sequence[int] = ()) -> str:
    """An aligned plain-text table; columns in ``right`` are right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for number, row in enumerate(cells):
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                 for i, c in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
