"""A newcomer's first runs: a relative --config (or $S3ARCHIVE_CONFIG) is taken
from the current directory at start, a run in which every picker failed
commits nothing, and the summary line says how long the run is locked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import IO

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from support.archive_env import ArchiveEnv, CliResult


@pytest.fixture
def env(rgw, tmp_path: Path) -> ArchiveEnv:
    return ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())


def _run(args: list[str], **env: str) -> CliResult:
    result = CliRunner().invoke(cli, args, catch_exceptions=False,
                                env={"JOURNAL_STREAM": "", **env})
    return CliResult(result.exit_code, result.stdout, result.stderr)


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello\n")
    return data


@pytest.mark.parametrize("how", ["--config", "S3ARCHIVE_CONFIG"])
def test_relative_config_finds_pickers_and_credentials(
        env: ArchiveEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    env.pick(_data(tmp_path))
    monkeypatch.chdir(env.etc)
    if how == "--config":
        done = _run(["--config", "config.toml", "archive", "--json"])
    else:
        done = _run(["archive", "--json"], S3ARCHIVE_CONFIG="config.toml")
    assert done.exit_code == 0, done.stderr
    summary = done.json
    assert summary["files"] == 1 and summary["warnings"] == []


def test_every_picker_failing_writes_no_manifest(env: ArchiveEnv, tmp_path: Path) -> None:
    env.picker("10-broken", "exit 4\n")
    missing = env.etc / "pickers.d" / "20-no-interpreter"
    missing.write_text("#!/nonexistent/interpreter\n")
    missing.chmod(0o755)
    done = env.run("archive")
    assert done.exit_code == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("s3archive: error")]
    assert len(errors) == 1, done.stderr
    assert "every picker" in errors[0] and "no manifest written" in errors[0]
    assert "10-broken: exited with status 4" in errors[0] and "20-no-interpreter" in errors[0]
    assert "Traceback" not in done.stderr
    assert env.versions("runs/") == []


def test_a_snapshotter_still_runs_when_every_picker_failed(env: ArchiveEnv) -> None:
    """The dumps are worth keeping: the run is committed, with warnings (exit 3)."""
    env.picker("10-broken", "exit 4\n")
    env.snapshotter("10-dump", 'echo data >&"$1"\necho a dump\n')
    summary = env.archive()
    assert summary["exit_code"] == 3 and summary["snapshots"] == 1
    assert len(env.versions("runs/")) == 1


def test_one_picker_failing_beside_a_working_one_is_a_warning(env: ArchiveEnv,
                                                              tmp_path: Path) -> None:
    env.picker("10-broken", "exit 4\n")
    env.pick(_data(tmp_path), name="20-paths")
    summary = env.archive()
    assert summary["exit_code"] == 3 and summary["files"] == 1


def test_the_summary_line_names_the_tier_and_the_retain_until(env: ArchiveEnv,
                                                              tmp_path: Path) -> None:
    env.pick(_data(tmp_path))
    done = env.run("archive")
    assert done.exit_code == 0, done.stderr
    first = [line for line in done.stderr.splitlines() if line.startswith("run ")]
    assert len(first) == 1, done.stderr
    found = re.fullmatch(r"run testhost/(\S+) in \S+: tier yearly, locked until (\S+)", first[0])
    assert found, first[0]
    again = env.archive()
    assert again["tier"] == "daily"
    assert found[2] > again["retain_until"] > again["run_id"][:4]


def test_metrics_of_a_host_that_never_succeeded(env: ArchiveEnv, tmp_path: Path) -> None:
    """The README's alert rule: `s3archive_last_run_timestamp_seconds unless
    s3archive_last_success_timestamp_seconds` is a host that tried and never
    succeeded; the textfile is written on failure too."""
    textfile = tmp_path / "metrics" / "s3archive.prom"
    env.write_config(extra=f'[report]\nprometheus_textfile = "{textfile}"\n')
    env.picker("10-broken", "exit 4\n")
    assert env.run("archive").exit_code == 1
    metrics = textfile.read_text()
    assert 's3archive_last_run_exit_code{host="testhost"} 1' in metrics
    assert "s3archive_last_run_timestamp_seconds{" in metrics
    assert "s3archive_last_success_timestamp_seconds" not in metrics
    env.pick(_data(tmp_path), name="20-paths")
    assert env.run("archive").exit_code == 3
    assert "s3archive_last_success_timestamp_seconds{" in textfile.read_text()


def test_lock_timeout_bounds_and_logs_the_wait_for_a_writers_lock(env: ArchiveEnv,
                                                                  tmp_path: Path) -> None:
    import fcntl
    import threading
    import time

    data = _data(tmp_path)
    env.pick(data)
    held = open(data / "a.txt", "rb")
    fcntl.flock(held, fcntl.LOCK_EX)  # a writer's lock, on another open file description
    try:
        env.write_config(extra="[sources]\nlock_timeout = 0.5\n")
        began = time.monotonic()
        done = env.run("archive")
        assert done.exit_code == 0, done.stderr
        assert time.monotonic() - began < 30
        assert "a.txt: a writer still holds its lock after 0.5 s (sources.lock_timeout); " \
               "reading it anyway" in done.stderr
        (data / "a.txt").write_text("changed, so it is read again\n")
        env.write_config(extra="[sources]\nlock_timeout = 60\n")
        releaser = threading.Thread(target=_release_once_opened, args=(held, data / "a.txt"))
        releaser.start()
        done = env.run("archive")
        releaser.join()
        assert done.exit_code == 0, done.stderr
        waited = re.search(r"waited (\d+\.\d) s for a writer's lock on \S+/a\.txt", done.stderr)
        assert waited and float(waited[1]) < 30, done.stderr
    finally:
        held.close()


def _release_once_opened(held: IO[bytes], path: Path) -> None:
    """Unlock ``held`` 0.3 s after the archiver opened ``path`` (it tries the
    shared lock right after opening): it has then surely waited."""
    import fcntl
    import os
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target == str(path) and int(fd) != held.fileno():
                time.sleep(0.3)
                fcntl.flock(held, fcntl.LOCK_UN)
                return
        time.sleep(0.01)
    fcntl.flock(held, fcntl.LOCK_UN)
