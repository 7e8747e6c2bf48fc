"""Run the executables of pickers.d and collect the paths they print."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from s3archive.archive.sources.supervision import Capture, Supervision, spawn
from s3archive.format.model import Warning_

log = logging.getLogger(__name__)
OUTPUT_LIMIT = 64 << 20  # a picker's stdout kept (paths); the rest is drained and counted
STDERR_KEPT = 4096  # the end of its stderr, for the warning
MAX_REFUSED_REPORTED = 20  # refused lines named one by one; the rest are counted


@dataclass
class PickResult:
    paths: list[bytes] = field(default_factory=list)
    warnings: list[Warning_] = field(default_factory=list)
    pickers_run: int = 0
    pickers_failed: int = 0  # could not run, exited non-zero or timed out, no path printed
    failures: list[str] = field(default_factory=list)

    @property
    def all_failed(self) -> bool:
        """Pickers ran, and every one failed without naming a path."""
        return self.pickers_run > 0 and self.pickers_failed == self.pickers_run


def executables(directory: Path) -> list[Path]:
    """Executable regular files of a .d directory, in name order.

    Names starting with '.' or ending in '~', '.dpkg-*', '.rpmnew' etc. are
    skipped, like run-parts does; a file that is not executable is disabled;
    so is one whose name is not UTF-8 (it could not be named in the manifest).
    """
    if not directory.is_dir():
        return []
    found = []
    for item in sorted(directory.iterdir(), key=lambda p: p.name):
        name = item.name
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            log.warning("ignoring %s: its name is not UTF-8", os.fsencode(item))
            continue
        if name.startswith(".") or name.endswith("~") or ".dpkg-" in name \
                or name.endswith((".rpmnew", ".rpmsave", ".disabled", ".example")):
            continue
        if item.is_file() and os.access(item, os.X_OK):
            found.append(item)
    return found


def run_pickers(directory: Path, timeout: float) -> PickResult:
    result = PickResult()
    for picker in executables(directory):
        result.pickers_run += 1
        output, problem = _run_one(picker, timeout)
        if problem:
            result.warnings.append(Warning_("picker", f"{picker.name}: {problem}"))
        named = 0
        for path, issue in parse_picker_output(output):
            if issue:
                result.warnings.append(Warning_("picker", f"{picker.name}: {issue}", path))
            elif path is not None:
                result.paths.append(path)
                named += 1
        if problem and not named:
            result.pickers_failed += 1
            result.failures.append(f"{picker.name}: {problem}")
    return result


def _run_one(picker: Path, timeout: float) -> tuple[bytes, str | None]:
    """Its stdout and what went wrong; never blocks past time-out + grace (supervision.py)."""
    log.debug("running picker %s", picker)
    watch = Supervision(timeout)
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        proc = spawn(lambda: subprocess.Popen(
            [str(picker)], stdin=subprocess.DEVNULL, stdout=out_write, stderr=err_write,
            start_new_session=True, cwd="/", env=watch.environment()))
    except OSError as err:
        os.close(out_read)
        os.close(err_read)
        return b"", f"cannot run: {err.strerror}"
    finally:
        os.close(out_write)
        os.close(err_write)
    watch.start(proc.pid, proc.wait, {"stdout": out_read, "stderr": err_read})
    out = Capture(out_read, watch, OUTPUT_LIMIT).start()
    err = Capture(err_read, watch, STDERR_KEPT, tail=True).start()
    output, errors = out.join(), err.join()
    returncode = watch.finish()
    problems = []
    if watch.timed_out:
        problems.append(f"timed out after {timeout:g} s (killed; its {len(output)} bytes "
                        "of output are used)")
    elif returncode != 0:
        tail = errors.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        problems.append(f"exited with status {returncode}; output used anyway ({tail[0][:200]})")
    if out.truncated:
        output = output[:output.rfind(b"\0" if b"\0" in output else b"\n") + 1]  # whole paths
        problems.append(f"wrote {out.total} bytes; only the paths in its first "
                        f"{OUTPUT_LIMIT} bytes are used")
    note = watch.straggler_note()
    if note:
        problems.append(note)
    return output, "; ".join(problems) or None


def parse_picker_output(output: bytes) -> list[tuple[bytes | None, str | None]]:
    """Paths from a picker's stdout: NUL-separated if it has a NUL, else lines.

    Paths stay bytes (no decoding: non-UTF-8 names are fine).  Blank items
    are skipped.  Nothing is guessed at: a relative path is refused with a
    warning naming its line (or item), and so is an absolute one that only
    normalises to ``/`` (``/.``, ``//``, ``/..``): the whole filesystem is
    archived only when a picker prints exactly ``/``.  After
    MAX_REFUSED_REPORTED refusals the rest are counted in one warning.
    """
    nul = b"\0" in output
    unit = "item" if nul else "line"
    items: list[tuple[bytes | None, str | None]] = []
    refused = 0
    for number, raw in enumerate(output.split(b"\0" if nul else b"\n"), start=1):
        path = raw if nul else raw.rstrip(b"\r")
        if not path.strip():
            continue
        if not path.startswith(b"/"):
            why = f"{unit} {number}: ignored relative path {path[:200]!r}"
        else:
            normal = os.path.normpath(path)
            if normal.startswith(b"//"):  # POSIX keeps two leading slashes
                normal = b"/" + normal.lstrip(b"/")
            if normal != b"/" or path == b"/":
                items.append((normal, None))
                continue
            why = (f"{unit} {number}: ignored {path[:200]!r}: it means '/' (print exactly '/' "
                   "to archive the whole filesystem)")
        refused += 1
        if refused <= MAX_REFUSED_REPORTED:
            items.append((None, why))
    if refused > MAX_REFUSED_REPORTED:
        more = refused - MAX_REFUSED_REPORTED
        items.append((None, f"{more} more {unit}s ignored (relative, or meaning '/')"))
    return items
