"""`s3archive status` and what every archive records (state file, run
history, Prometheus textfile), failed runs included, against RGW."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from s3archive.clock import parse_iso
from s3archive.status import timer_status
from support.archive_env import ArchiveEnv


@pytest.fixture
def env(rgw, tmp_path: Path) -> ArchiveEnv:
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"f{i}.txt").write_text(f"file {i}\n" * 100)
    env.pick(data)
    return env


def with_textfile(env: ArchiveEnv) -> Path:
    textfile = env.root / "metrics" / "s3archive.prom"
    env.write_config(extra=f'[report]\nprometheus_textfile = "{textfile}"\n')
    return textfile


def metrics(path: Path) -> dict[str, float]:
    values = {}
    for line in path.read_text().splitlines():
        assert all(ord(c) >= 32 for c in line), line
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) s3archive_\w+ ", line), line
            continue
        match = re.fullmatch(r'(s3archive_\w+)\{host="testhost"\} (\S+)', line)
        assert match, line
        values[match[1]] = float(match[2])
    return values


def test_status_before_any_run_says_so_and_fails(env: ArchiveEnv) -> None:
    result = env.run("status", "--json")
    assert result.exit_code == 1, result.stderr
    status = result.json
    assert status["last_run"] is None
    assert status["host"] == "testhost"
    assert status["bucket"]["object_lock"]["enabled"] is True
    assert status["bucket"]["runs"] == 0 and status["bucket"]["latest_run"] is None
    assert status["cache"]["exists"] is False
    text = env.run("status")
    assert text.exit_code == 1
    assert "last run:   none recorded" in text.stdout
    assert "Object Lock enabled" in text.stdout


def test_successful_run_recorded_in_state_history_metrics_and_status(env: ArchiveEnv) -> None:
    textfile = with_textfile(env)
    summary = env.archive()
    assert summary["exit_code"] == 0
    state = json.loads((env.root / "state" / "last-run.json").read_text())
    assert state["run_id"] == summary["run_id"] and state["result"] == "ok"
    assert state["error"] is None and state["last_success"] == summary["finished"]
    history = (env.root / "state" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["run_id"] for line in history] == [summary["run_id"]]

    values = metrics(textfile)
    assert values["s3archive_last_run_exit_code"] == 0
    assert values["s3archive_last_run_success"] == 1
    assert values["s3archive_last_run_files"] == summary["files"] == 5
    assert values["s3archive_last_run_bytes"] == summary["bytes_total"]
    assert values["s3archive_last_run_bytes_uploaded"] == summary["bytes_uploaded"] > 0
    assert values["s3archive_last_run_requests"] == sum(summary["requests"].values())
    assert values["s3archive_last_run_warnings"] == 0
    finished = parse_iso(summary["finished"]).timestamp()
    assert values["s3archive_last_success_timestamp_seconds"] == pytest.approx(finished)
    assert values["s3archive_last_run_duration_seconds"] == pytest.approx(
        finished - parse_iso(summary["started"]).timestamp(), abs=0.01)
    assert [p.name for p in textfile.parent.iterdir()] == ["s3archive.prom"]  # no temp left

    result = env.run("status", "--json")
    assert result.exit_code == 0, result.stdout
    status = result.json
    last = status["last_run"]
    assert last["run_id"] == summary["run_id"] and last["result"] == "ok"
    assert last["files"] == 5 and last["bytes_uploaded"] == summary["bytes_uploaded"]
    assert last["warnings"] == [] and last["requests"] == summary["requests"]
    assert status["bucket"]["latest_run"]["run_id"] == summary["run_id"]
    assert status["bucket"]["runs"] == 1
    assert status["cache"]["exists"] and status["cache"]["packs"] >= 1
    assert status["cache"]["last_run_id"] == summary["run_id"]
    text = env.run("status").stdout
    assert f"run {summary['run_id']}" in text and ", ok, took" in text
    assert "5 files" in text


def test_failed_run_is_recorded_and_keeps_the_last_success(env: ArchiveEnv) -> None:
    textfile = with_textfile(env)
    good = env.archive()
    missing = env.bucket + "-gone"
    text = env.config.read_text().replace(f'bucket = "{env.bucket}"', f'bucket = "{missing}"')
    env.config.write_text(text)
    result = env.run("archive")
    assert result.exit_code == 2, result.stderr
    named = f'bucket "{missing}" does not exist (NoSuchBucket)'
    assert result.stderr.splitlines()[-1] == f"s3archive: error: {named}"
    state = json.loads((env.root / "state" / "last-run.json").read_text())
    assert state["result"] == "failed" and state["exit_code"] == 2
    assert state["error"] == named
    assert state["last_success"] == good["finished"]
    assert state["finished"] >= good["finished"]
    values = metrics(textfile)
    assert values["s3archive_last_run_exit_code"] == 2
    assert values["s3archive_last_run_success"] == 0
    assert values["s3archive_last_success_timestamp_seconds"] == pytest.approx(
        parse_iso(good["finished"]).timestamp())
    history = [json.loads(line) for line in
               (env.root / "state" / "history.jsonl").read_text().splitlines()]
    assert [h["result"] for h in history] == ["ok", "failed"]

    status = env.run("status")
    assert status.exit_code == 1
    assert "FAILED (exit 2)" in status.stdout
    assert "error:" in status.stdout and "last success:" in status.stdout
    assert f"ERROR: {named}" in status.stdout  # the configured bucket cannot be read
    runs = env.run("runs")
    assert (runs.exit_code, runs.stderr) == (2, f"s3archive: error: {named}\n")


def test_refused_unlocked_bucket_is_recorded_with_its_exit_code(rgw, tmp_path: Path) -> None:
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client(),
                     locked_bucket=False)
    env.pick(tmp_path)
    result = env.run("archive")
    assert result.exit_code == 2, result.stderr
    state = json.loads((env.root / "state" / "last-run.json").read_text())
    assert state["result"] == "failed" and state["exit_code"] == 2
    assert state["last_success"] is None
    assert "Object Lock" in state["error"]
    status = env.run("status", "--json")
    assert status.exit_code == 1
    assert status.json["bucket"]["object_lock"]["enabled"] is False
    assert "archive refuses it" in status.json["bucket"]["note"]


def test_bad_config_is_not_recorded(env: ArchiveEnv) -> None:
    env.config.write_text(env.config.read_text() + "\n[cost]\nput_per_1000 = -1\n")
    result = env.run("archive")
    assert result.exit_code == 2
    assert "cost.put_per_1000 = -1" in result.stderr
    assert not (env.root / "state" / "last-run.json").exists()


def test_timer_without_systemd_and_with_it() -> None:
    assert timer_status(False)["note"].startswith("no systemd")
    seen = []

    def systemctl(command):
        seen.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=(
            "NextElapseUSecRealtime=Sat 2026-11-22 03:14:07 UTC\n"
            "LastTriggerUSec=Fri 2026-11-21 03:02:11 UTC\nActiveState=active\n"
            "LoadState=loaded\n"), stderr="")

    timer = timer_status(True, systemctl)
    assert seen[0][:3] == ["systemctl", "show", "s3archive.timer"]
    assert "NextElapseUSecRealtime" in seen[0]
    assert timer["next_run"] == "Sat 2026-11-22 03:14:07 UTC"
    assert timer["last_trigger"] == "Fri 2026-11-21 03:02:11 UTC" and timer["note"] is None

    def inactive(command):
        return subprocess.CompletedProcess(command, 0, stdout=(
            "NextElapseUSecRealtime=n/a\nLastTriggerUSec=n/a\nActiveState=inactive\n"
            "LoadState=loaded\n"), stderr="")

    timer = timer_status(True, inactive)
    assert timer["next_run"] is None and "systemctl enable --now" in timer["note"]


def test_state_file_of_an_older_version_is_read(env: ArchiveEnv) -> None:
    state = env.root / "state" / "last-run.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({  # as 0.x wrote it: no bytes_snapshots
        "format": 1, "run_id": "20261101T020000Z", "host": "testhost",
        "started": "2026-11-01T02:00:00Z", "finished": "2026-11-01T02:01:00Z",
        "retain_until": "2026-11-15T02:00:00Z", "tier": "daily", "files": 7, "dirs": 1,
        "symlinks": 0, "others": 0, "bytes_total": 700, "bytes_read": 700,
        "files_unchanged": 0, "chunks_new": 3, "chunks_reused": 0, "bytes_new": 700,
        "bytes_uploaded": 500, "packs_uploaded": 1, "packs_extended": 0,
        "packs_rewritten": 0, "snapshots": 0, "warnings": ["picker: 20-web exited 1"],
        "requests": {"PutObject": 2}, "manifest_key": "runs/testhost/20261101T020000Z.jsonl.zst",
        "dry_run": False, "exit_code": 3, "result": "warnings", "error": None,
        "last_success": "2026-11-01T02:01:00Z"}))
    result = env.run("status", "--json")
    last = result.json["last_run"]
    assert last["run_id"] == "20261101T020000Z" and last["result"] == "warnings"
    assert (last["files"], last["bytes_total"], last["bytes_snapshots"]) == (7, 700, 0)
    assert last["warnings"] == ["picker: 20-web exited 1"]
    text = env.run("status").stdout
    assert "ok with 1 warnings" in text and "warning:  picker: 20-web exited 1" in text
