"""A hostile newest run (issue 9, defect 4) costs one line, never a traceback (RGW).

Planted as the host's newest run, a small object that decompresses to a
3 GiB line must not break ``runs``, ``restore latest`` or ``archive`` with an
empty cache: each names the run in one line and goes on where it can.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import zstandard

from support.archive_env import ArchiveEnv

HEADER = (b'{"type":"header","format":1,"host":"testhost","run_id":"RUN",'
          b'"started":"2026-11-21T12:00:00Z","retain_until":"2026-11-22T12:00:00Z",'
          b'"tier":"daily"}\n')


def three_gib_line(run_id: str) -> bytes:
    block = zstandard.ZstdCompressor(level=1).compress(b"a" * (64 << 20))
    return zstandard.ZstdCompressor().compress(HEADER.replace(b"RUN", run_id.encode())) + \
        block * 48


@pytest.fixture
def env(rgw, tmp_path: Path) -> ArchiveEnv:
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_bytes(b"kept across runs\n" * 1000)
    env.pick(data)
    assert env.archive()["exit_code"] == 0
    return env


def test_a_hostile_newest_run_costs_one_line(env: ArchiveEnv, tmp_path: Path) -> None:
    hostile = (datetime.now(timezone.utc) + timedelta(minutes=5)).strftime("%Y%m%dT%H%M%SZ")
    key = f"runs/testhost/{hostile}.jsonl.zst"
    env.client.put_object(Bucket=env.bucket, Key=key, Body=three_gib_line(hostile))
    refusal = "line 2 is longer than 268435456 bytes"

    runs = env.run("runs", "--json")
    assert runs.exit_code == 0, runs.stderr
    by_id = {r["run_id"]: r for r in runs.json}  # type: ignore[union-attr]
    assert refusal in by_id[hostile]["error"] and len(by_id) == 2

    restore = env.run("restore", "latest", "--target", str(tmp_path / "t"))
    assert restore.exit_code == 1
    assert restore.stderr.startswith(f"s3archive: error: {key}@")
    assert restore.stderr.count("\n") == 1 and refusal in restore.stderr

    shutil.rmtree(env.cache_dir)  # an empty cache is rebuilt from the newest run
    again = env.run("archive", "--json")
    assert again.exit_code == 0, again.stderr
    assert f"cannot rebuild the cache from {key}" in again.stderr and refusal in again.stderr
    assert "Traceback" not in again.stderr
