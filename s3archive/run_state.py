"""After every run: the state file and, if configured, Prometheus textfile metrics.

Both are written atomically (temporary file + rename) so a reader never sees
half a file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from s3archive.archiver import ArchiveSummary
from s3archive.clock import parse_iso
from s3archive.config import Config

log = logging.getLogger(__name__)


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def prometheus_text(summary: ArchiveSummary) -> str:
    finished = parse_iso(summary.finished).timestamp() if summary.finished else 0
    duration = finished - parse_iso(summary.started).timestamp() if summary.finished else 0
    labels = f'host="{summary.host}"'
    metrics = [
        ("s3archive_last_run_timestamp_seconds", "gauge", "End of the last run.", finished),
        ("s3archive_last_run_duration_seconds", "gauge", "Duration of the last run.", duration),
        ("s3archive_last_run_exit_code", "gauge", "Exit code of the last run.", summary.exit_code),
        ("s3archive_last_run_files", "gauge", "Files in the last run.", summary.files),
        ("s3archive_last_run_bytes", "gauge", "Logical bytes in the last run.", summary.bytes_total),
        ("s3archive_last_run_bytes_uploaded", "gauge", "Bytes uploaded by the last run.",
         summary.bytes_uploaded),
        ("s3archive_last_run_warnings", "gauge", "Warnings of the last run.", len(summary.warnings)),
    ]
    if summary.exit_code in (0, 3):
        metrics.append(("s3archive_last_success_timestamp_seconds", "gauge",
                        "End of the last run that wrote a manifest.", finished))
    lines = []
    for name, kind, text, value in metrics:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name}{{{labels}}} {value}"]
    return "\n".join(lines) + "\n"


def record_run(config: Config, summary: ArchiveSummary) -> None:
    """Best effort: a failure here is logged, never fails the run."""
    try:
        write_atomically(config.local.state_file, json.dumps(summary.to_json(), indent=2) + "\n")
    except OSError as err:
        log.warning("cannot write the state file %s: %s", config.local.state_file, err.strerror)
    if config.report.prometheus_textfile:
        try:
            write_atomically(config.report.prometheus_textfile, prometheus_text(summary))
        except OSError as err:
            log.warning("cannot write %s: %s", config.report.prometheus_textfile, err.strerror)
