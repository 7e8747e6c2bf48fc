"""After every run: the state file, a short run history and, if configured,
Prometheus textfile metrics (node-exporter's textfile collector).

A record is the run's identity plus its :class:`~s3archive.stats.RunStats`
fields (``ArchiveSummary.to_json``); readers go through ``RunStats.from_json``,
which reads records of older versions (a field they lack stays 0).
Failed runs (exit 1 or 2 once the configuration loaded) are recorded too,
with the error; ``last_success`` carries the end of the last run that wrote
a manifest across failures, so an alert on its age keeps working.  Every file
is written atomically (temporary file + rename) so a reader never sees half
a file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from s3archive.archive.archiver import ArchiveSummary
from s3archive.clock import parse_iso
from s3archive.config import Config
from s3archive.stats import RunStats

log = logging.getLogger(__name__)

STATE_FORMAT = 1
HISTORY_NAME = "history.jsonl"
HISTORY_KEEP = 100


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


def result_of(exit_code: int) -> str:
    return {0: "ok", 3: "warnings"}.get(exit_code, "failed")


def history_path(config: Config) -> Path:
    return config.local.state_file.with_name(HISTORY_NAME)


def read_state(path: Path) -> dict[str, Any] | None:
    """The state file, or None when missing or unreadable (never raises)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_history(config: Config) -> list[dict[str, Any]]:
    """Recorded runs, oldest first (lines that do not parse are skipped)."""
    try:
        text = history_path(config).read_text(encoding="utf-8")
    except OSError:
        return []
    runs = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            runs.append(item)
    return runs


def state_record(summary: ArchiveSummary, previous: dict[str, Any] | None,
                 error: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"format": STATE_FORMAT, **summary.to_json(),
                              "result": result_of(summary.exit_code), "error": error}
    if summary.exit_code in (0, 3) and summary.finished:
        record["last_success"] = summary.finished
    else:
        record["last_success"] = (previous or {}).get("last_success")
    return record


def prometheus_text(record: dict[str, Any]) -> str:
    stats = RunStats.from_json(record)
    finished = parse_iso(record["finished"]).timestamp() if record.get("finished") else 0
    duration = (finished - parse_iso(record["started"]).timestamp()
                if record.get("finished") and record.get("started") else 0)
    labels = f'host="{label_value(record["host"])}"'
    metrics = [
        ("s3archive_last_run_timestamp_seconds", "End of the last run.", finished),
        ("s3archive_last_run_duration_seconds", "Duration of the last run.", round(duration, 3)),
        ("s3archive_last_run_exit_code", "Exit code of the last run (0 ok, 1 failed, "
         "2 configuration, 3 warnings).", record["exit_code"]),
        ("s3archive_last_run_success", "1 if the last run wrote a manifest.",
         int(record["exit_code"] in (0, 3))),
        ("s3archive_last_run_files", "Files in the last run.", stats.files),
        ("s3archive_last_run_bytes", "Logical bytes in the last run.", stats.bytes_total),
        ("s3archive_last_run_bytes_read", "Bytes read by the last run.", stats.bytes_read),
        ("s3archive_last_run_bytes_uploaded", "Bytes uploaded by the last run.",
         stats.bytes_uploaded),
        ("s3archive_last_run_requests", "S3 requests of the last run.", stats.total_requests),
        ("s3archive_last_run_warnings", "Warnings of the last run.", len(stats.warnings)),
    ]
    if record.get("last_success"):
        metrics.append(("s3archive_last_success_timestamp_seconds",
                        "End of the last run that wrote a manifest.",
                        parse_iso(record["last_success"]).timestamp()))
    lines = []
    for name, text, value in metrics:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name}{{{labels}}} {value}"]
    return "\n".join(lines) + "\n"


def label_value(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def record_run(config: Config, summary: ArchiveSummary, error: str | None = None) -> None:
    """Best effort: a failure here is logged, never fails the run."""
    state_file = config.local.state_file
    record = state_record(summary, read_state(state_file), error)
    try:
        write_atomically(state_file, json.dumps(record, indent=2) + "\n")
    except OSError as err:
        log.warning("cannot write the state file %s: %s", state_file, err.strerror)
    try:
        history = read_history(config)[-(HISTORY_KEEP - 1):] + [record]
        write_atomically(history_path(config),
                         "".join(json.dumps(item, separators=(",", ":")) + "\n"
                                 for item in history))
    except OSError as err:
        log.warning("cannot write the run history %s: %s", history_path(config), err.strerror)
    if config.report.prometheus_textfile:
        try:
            write_atomically(config.report.prometheus_textfile, prometheus_text(record))
        except OSError as err:
            log.warning("cannot write %s: %s", config.report.prometheus_textfile, err.strerror)
