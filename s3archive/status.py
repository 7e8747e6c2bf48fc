"""``status``: what the timer did, without reading code.

The last run of this host comes from the state file (written after every
run, failed ones included); the bucket adds its newest manifest of this host
and its Object Lock configuration; the local cache and the systemd timer
complete the picture.  Each part that cannot be read says why (a user
without root still sees the rest); nothing here writes.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from s3archive.archive.local_cache import cache_path
from s3archive.clock import isoformat
from s3archive.config import Config
from s3archive.errors import S3ArchiveError
from s3archive.repo.catalog import list_runs
from s3archive.stats import RunStats
from s3archive.store.counting_store import CountingStore

TIMER = "s3archive.timer"
Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(command: list[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)


def systemd_is_pid1(proc: Path = Path("/proc/1/comm")) -> bool:
    try:
        return proc.read_text().strip() == "systemd"
    except OSError:
        return False


def timer_status(is_systemd: bool, run: Runner = _run) -> dict[str, Any]:
    """The timer's next and last elapse, from systemctl, or why not."""
    if not is_systemd:
        return {"systemd": False, "next_run": None, "last_trigger": None,
                "note": "no systemd (PID 1 is not systemd): no timer"}
    try:
        done = run(["systemctl", "show", TIMER, "-p", "NextElapseUSecRealtime",
                    "-p", "LastTriggerUSec", "-p", "ActiveState", "-p", "LoadState"])
    except (OSError, subprocess.SubprocessError) as err:
        return {"systemd": True, "next_run": None, "last_trigger": None,
                "note": f"systemctl failed: {err}"}
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    loaded = values.get("LoadState", "")
    note = None
    if done.returncode != 0:
        note = f"systemctl exited with {done.returncode}: {done.stderr.strip()}"
    elif loaded and loaded != "loaded":
        note = f"{TIMER} is {loaded} (run write-config, then systemctl enable --now {TIMER})"
    elif values.get("ActiveState") != "active":
        note = f"{TIMER} is {values.get('ActiveState') or 'unknown'}: systemctl enable --now {TIMER}"
    return {"systemd": True, "next_run": _systemd_time(values.get("NextElapseUSecRealtime")),
            "last_trigger": _systemd_time(values.get("LastTriggerUSec")),
            "active": values.get("ActiveState"), "note": note}


def _systemd_time(value: str | None) -> str | None:
    return value if value and value not in ("n/a", "0") else None


def cache_status(config: Config) -> dict[str, Any]:
    path = cache_path(config.local.cache_dir, config.s3.bucket, config.s3.prefix,
                      config.host_name)
    info: dict[str, Any] = {"path": str(path), "exists": False}
    try:
        stat = path.stat()
    except FileNotFoundError:
        info["note"] = "no cache yet: the next run rebuilds it from the latest manifests"
        return info
    except OSError as err:
        info["exists"] = None
        info["error"] = f"cannot read {path}: {err.strerror}"
        return info
    info["exists"] = True
    info.update(size=stat.st_size,
                modified=isoformat(datetime.fromtimestamp(stat.st_mtime, timezone.utc)))
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            for table in ("files", "chunks", "packs"):
                info[table] = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            row = db.execute("SELECT value FROM meta WHERE key = 'last_run_id'").fetchone()
            info["last_run_id"] = row[0] if row else None
        finally:
            db.close()
    except sqlite3.Error as err:
        info["note"] = f"unreadable ({err}): the next run rebuilds it"
    return info


StoreOpener = Callable[[], CountingStore]


def bucket_status(config: Config, open_store: StoreOpener) -> dict[str, Any]:
    info: dict[str, Any] = {"location": f"s3://{config.s3.bucket}/{config.s3.prefix}"}
    try:
        store = open_store()  # reads the credentials: may fail for want of root
        info["location"] = store.location
        lock = store.bucket_lock_config()
        info["object_lock"] = {"enabled": lock.enabled, "default_mode": lock.default_mode,
                               "default_days": lock.default_days,
                               "default_years": lock.default_years}
        runs = [r for r in list_runs(store, config.host_name)]
        info["runs"] = len(runs)
        latest = max(runs, key=lambda r: (r.run_id, r.last_modified)) if runs else None
        info["latest_run"] = ({"run_id": latest.run_id,
                               "written": isoformat(latest.last_modified)} if latest else None)
    except S3ArchiveError as err:
        info["error"] = str(err)
    except Exception as err:  # botocore and OS errors: reported, not fatal
        from s3archive.store.errors import describe_error
        info["error"] = describe_error(err)
    if "object_lock" in info and not info["object_lock"]["enabled"]:
        info["note"] = ("the bucket has no Object Lock: runs are not protected"
                        if config.allow_unlocked_bucket else
                        "the bucket has no Object Lock: archive refuses it")
    return info


RUN_FIELDS = ("run_id", "host", "started", "finished", "result", "exit_code", "error",
              "last_success", "tier", "retain_until", "manifest_key")


def last_run(config: Config) -> dict[str, Any] | None:
    """The state file: the run's identity and its :class:`RunStats` fields.

    ``None`` when no run was recorded; a file this user may not read, or
    that does not parse, gives ``{"error": ...}``."""
    path = config.local.state_file
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as err:
        return {"error": f"cannot read {path}: {err.strerror}", "result": None}
    except ValueError as err:
        return {"error": f"{path} is not JSON: {err}", "result": None}
    if not isinstance(state, dict):
        return {"error": f"{path} is not a JSON object", "result": None}
    return {**{k: state.get(k) for k in RUN_FIELDS}, **RunStats.from_json(state).to_json()}


def gather_status(config: Config, open_store: StoreOpener,
                  is_systemd: bool | None = None, run: Runner = _run) -> dict[str, Any]:
    status = {"host": config.host_name, "config": str(config.path),
              "state_file": str(config.local.state_file),
              "last_run": last_run(config),
              "timer": timer_status(systemd_is_pid1() if is_systemd is None else is_systemd, run),
              "cache": cache_status(config),
              "bucket": bucket_status(config, open_store)}
    status["unreadable"] = unreadable_parts(status)
    return status


def unreadable_parts(status: dict[str, Any]) -> list[str]:
    """What this status could not read, each as ``part: why``."""
    parts = []
    last = status["last_run"]
    if last is not None and last.get("result") is None and last.get("error"):
        parts.append(f"state file: {last['error']}")
    if status["cache"].get("error"):
        parts.append(f"cache: {status['cache']['error']}")
    if status["bucket"].get("error"):
        parts.append(f"bucket: {status['bucket']['error']}")
    return parts


def status_ok(status: dict[str, Any]) -> bool:
    """Healthy: the last run wrote a manifest and the bucket answered."""
    last = status["last_run"]
    return bool(last and last.get("result") in ("ok", "warnings")
                and "error" not in status["bucket"])
