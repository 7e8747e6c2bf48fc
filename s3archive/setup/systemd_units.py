"""The systemd service and timer, rendered from ``data/systemd/``."""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from s3archive.errors import UsageError
from s3archive.setup.data_files import data_text, example_scripts

SERVICE_NAME = "s3archive.service"
TIMER_NAME = "s3archive.timer"
DROP_IN_DIR = f"{SERVICE_NAME}.d"
UNIT_DIR = Path("/etc/systemd/system")


@dataclass(frozen=True)
class UnitSettings:
    executable: str  # absolute path, or "PYTHON -m s3archive"
    config_path: Path
    cache_dir: Path
    state_dir: Path
    # Written too, if present (e.g. the Prometheus textfile's directory): "-"
    # keeps a missing one from stopping the backup itself.
    optional_writable: tuple[Path, ...] = ()


def find_executable() -> str:
    """The absolute path of the s3archive command that runs now."""
    beside = Path(sys.executable).parent / "s3archive"
    if beside.is_file():
        return str(beside)
    found = shutil.which("s3archive")
    if found:
        return str(Path(found).resolve())
    return f"{shlex.quote(sys.executable)} -m s3archive"


def render_units(settings: UnitSettings) -> dict[str, str]:
    """unit file name -> text."""
    paths = " ".join([_escape(p) for p in (settings.cache_dir, settings.state_dir)]
                     + ["-" + _escape(p) for p in settings.optional_writable])
    service = (data_text("systemd", SERVICE_NAME)
               .replace("@S3ARCHIVE@", settings.executable)
               .replace("@CONFIG@", _escape(settings.config_path))
               .replace("@READ_WRITE_PATHS@", paths))
    return {SERVICE_NAME: service, TIMER_NAME: data_text("systemd", TIMER_NAME)}


def drop_in_examples() -> dict[str, str]:
    """``lvm.conf.example`` -> text: drop-ins that relax the hardening for one
    snapshotter; systemd reads only ``*.conf``, so they start disabled."""
    return {f"{name}.example": text
            for name, text in example_scripts(f"systemd/{DROP_IN_DIR}.example").items()}


def enable_commands() -> list[list[str]]:
    return [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", TIMER_NAME]]


def systemd_is_running() -> bool:
    """True on a live systemd host (sd_booted(3))."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _escape(path: Path) -> str:
    text = str(path)
    if any(c.isspace() or c in "\"'\\%$" for c in text):
        raise UsageError(f"{text}: paths with spaces or quoting characters are not supported "
                         "in the systemd unit")
    return text
