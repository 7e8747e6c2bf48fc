"""Run the executables of pickers.d and collect the paths they print."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from s3archive.format.model import Warning_

log = logging.getLogger(__name__)


@dataclass
class PickResult:
    paths: list[bytes] = field(default_factory=list)
    warnings: list[Warning_] = field(default_factory=list)
    pickers_run: int = 0


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
        for path, issue in parse_picker_output(output):
            if issue:
                result.warnings.append(Warning_("picker", f"{picker.name}: {issue}", path))
            elif path is not None:
                result.paths.append(path)
    return result


def _run_one(picker: Path, timeout: float) -> tuple[bytes, str | None]:
    log.debug("running picker %s", picker)
    try:
        proc = subprocess.Popen([str(picker)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True,
                                cwd="/")
    except OSError as err:
        return b"", f"cannot run: {err.strerror}"
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return out, f"timed out after {timeout:g} s (killed; its {len(out)} bytes of output are used)"
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return out, f"exited with status {proc.returncode}; output used anyway ({tail[0][:200]})"
    return out, None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def parse_picker_output(output: bytes) -> list[tuple[bytes | None, str | None]]:
    """Paths from a picker's stdout: NUL-separated if it has a NUL, else lines.

    Paths stay bytes (no decoding: non-UTF-8 names are fine).  A relative
    path is reported, never guessed at.
    """
    separator = b"\0" if b"\0" in output else b"\n"
    items = []
    for raw in output.split(separator):
        path = raw if separator == b"\0" else raw.rstrip(b"\r")
        if not path.strip():
            continue
        if not path.startswith(b"/"):
            items.append((None, f"ignored relative path {path[:200]!r}"))
            continue
        items.append((os.path.normpath(path), None))
    return items
