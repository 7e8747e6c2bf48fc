"""``archive`` and ``status`` for a user who may not read or write root's files.

The real CLI runs in a subprocess without CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH (``setpriv --bounding-set``): file modes then apply to it
as to any user.  (Dropping to ``nobody`` is not possible here: the
interpreter lives below /root.)  The files root alone may use belong to
another uid with the modes s3archive gives them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import s3archive
from support.archive_env import ArchiveEnv

OTHER = 4242  # owns what "root" owns in this picture
DROP = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def _can_drop(tmp: Path) -> str | None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return "needs root and setpriv"
    probe = tmp / "probe"
    probe.mkdir()
    os.chown(probe, OTHER, OTHER)
    done = subprocess.run([*DROP, "touch", str(probe / "x")], capture_output=True, check=False)
    return None if done.returncode != 0 else "dropping the capabilities had no effect"


def as_user(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(s3archive.__file__).parents[1]),
           "JOURNAL_STREAM": ""}
    return subprocess.run([*DROP, sys.executable, "-m", "s3archive", "--config", str(config),
                           *args], capture_output=True, text=True, env=env, timeout=120,
                          check=False)


@pytest.fixture
def env(rgw, tmp_path: Path) -> ArchiveEnv:
    reason = _can_drop(tmp_path)
    if reason:
        pytest.skip(reason)
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("data\n")
    env.pick(data)
    return env


def lock_away(path: Path, mode: int) -> None:
    os.chown(path, OTHER, OTHER)
    path.chmod(mode)


def test_archive_without_root_fails_in_one_line_before_any_picker(env: ArchiveEnv) -> None:
    marker = env.root / "picker-ran"
    env.picker("20-marker", f"echo 'picker output' >&2\ntouch {marker}\n")
    env.cache_dir.rmdir()  # made by the test environment: this test needs them missing
    (env.root / "state").rmdir()
    lock_away(env.root, 0o755)  # cache/ and state/ would be created in a directory not ours
    result = as_user(env.config, "archive")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"s3archive: error: cannot write the cache directory "
                                    f"{env.cache_dir} ({env.root}: permission denied); "
                                    "archive runs as root")
    assert not marker.exists() and result.stdout == ""
    assert env.versions() == []


def test_status_without_root_shows_what_it_can_and_names_what_it_cannot(
        env: ArchiveEnv) -> None:
    summary = env.archive()
    lock_away(env.cache_dir, 0o700)
    lock_away(env.etc / "credentials", 0o600)
    result = as_user(env.config, "status")
    assert result.returncode == 1, result.stderr
    text = result.stdout
    assert f"run {summary['run_id']}" in text and "1 files" in text  # the state file is readable
    assert f"cache:      UNKNOWN: cannot read {env.cache_dir}/" in text
    assert "Permission denied" in text
    assert "cannot read credentials file: Permission denied" in text
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("s3archive: error: could not read cache: cannot read ")
    assert "; bucket: " in result.stderr


def test_restore_into_a_target_it_may_not_write_says_so_once_per_cause(
        rgw, tmp_path: Path) -> None:
    reason = _can_drop(tmp_path)
    if reason:
        pytest.skip(reason)
    from support.manifest_builder import RunBuilder, make_bucket_env

    (tmp_path / "bucket-env").mkdir()
    env = make_bucket_env(rgw, tmp_path / "bucket-env")
    run = RunBuilder(env.store)
    run.dir(b"/")
    run.dir(b"/etc")
    for i in range(60):
        run.file(b"/etc/f%02d" % i, b"file %d\n" % i)
    run.upload()
    target = tmp_path / "target"
    target.mkdir()
    lock_away(target, 0o755)

    result = as_user(env.config_path, "restore", "latest", "--target", str(target))

    assert result.returncode == 1
    assert result.stdout == ""  # problems and the summary are diagnostics: stderr
    progress, *lines = result.stderr.splitlines()  # stderr is no terminal: plain lines
    assert progress == "restoring: 0/62 entries, 0 B of 470 B written, 0 B/s, ETA -"
    assert len(lines) <= 4, result.stderr  # not one line per entry
    assert lines[-1] == "s3archive: error: 0 damaged, 61 not restored"  # "/" is the target
    not_restored = [line for line in lines if line.startswith("not restored: ")]
    assert not_restored and all("Permission denied" in line for line in not_restored)
    assert sum(int(line.split(" entries (")[0].rsplit(" ", 1)[1]) if " entries (" in line
               else 1 for line in not_restored) == 61
    assert "not restored: Permission denied: 61 entries (/etc, /etc/f00, /etc/f01 and 58 " \
           "more)" in lines
    assert lines[0].startswith("restored testhost/") and "61 not restored" in lines[0]
    assert os.listdir(target) == []
