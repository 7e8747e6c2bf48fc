"""kill -9 during archive, at seeded random points; then archive, verify, restore (RGW).

A run killed anywhere -- while packs upload, while retention is secured,
while the manifest is written -- must leave the bucket and the local cache
so that the next run completes, ``verify --all --read-data`` finds every
committed run whole, and the last run restores exactly.  Each iteration
changes a file (so every run has new data to upload) and kills the
``archive`` process either once N pack objects are in the bucket or after a
random share (10-90 %) of the last complete run's duration, alternately (run
times differ from machine to machine: 0.6 s to 2 s seen here).  A run that
finishes first is fine too, and is followed by another: the test goes on
until KILLS runs were killed (at most MAX_RUNS runs).  Seeded; about 15 s.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.manifest_builder import make_bucket_env, make_rich_tree, tree_differences

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the rich tree needs root "
                                "(owners, devices, trusted xattrs)")

SEED = 9
KILLS = 5  # runs killed; a run that finishes first is followed by another
MAX_RUNS = 30


def s3archive(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s3archive", "--config", str(config), *args],
                          capture_output=True, timeout=120)


def test_archive_killed_at_random_points_leaves_a_bucket_that_verifies_and_restores_exactly(
        rgw, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    env = make_bucket_env(rgw, tmp_path)
    with open(env.config_path, "a") as handle:
        handle.write("\n[content]\npack_size_mib = 1\n")
    src = tmp_path / "src"
    make_rich_tree(src, large_mib=2)
    (src / "bulk").mkdir()
    for index in range(6):
        (src / "bulk" / f"f{index}").write_bytes(rng.randbytes(rng.randrange(300_000, 1_500_000)))
    (src / "many").mkdir()  # more than file_stage.WORKERS_AFTER_FILES: content workers read
    for index in range(300):
        (src / "many" / f"s{index:03d}").write_bytes(rng.randbytes(rng.randrange(10, 3000)))
    pickers = tmp_path / "pickers.d"
    pickers.mkdir()
    picker = pickers / "10-tree"
    picker.write_text(f"#!/bin/sh\nprintf '%s\\n' '{src}'\n")
    picker.chmod(0o755)

    def packs_in_bucket() -> int:
        listed = env.client.list_objects_v2(Bucket=env.bucket, Prefix="data/")
        return listed.get("KeyCount", 0)

    began = time.monotonic()
    first = s3archive(env.config_path, "archive", "--json")  # a complete run, timed
    assert first.returncode == 0, first.stderr.decode()[-3000:]
    typical = time.monotonic() - began
    outcomes = {"killed": 0, "finished": 0}
    for iteration in range(MAX_RUNS):
        if outcomes["killed"] == KILLS:
            break
        (src / "bulk" / "changing").write_bytes(rng.randbytes(rng.randrange(1_000_000, 3_000_000)))
        before = packs_in_bucket()
        by_count = iteration % 2 == 0
        wanted_packs, delay = rng.randrange(1, 3), rng.uniform(0.1, 0.9) * typical
        proc = subprocess.Popen([sys.executable, "-m", "s3archive", "--config",
                                 str(env.config_path), "archive", "--json"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        try:
            while proc.poll() is None:
                if (packs_in_bucket() - before >= wanted_packs if by_count
                        else time.monotonic() - started >= delay):
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.02)
                assert time.monotonic() - started < 60, "archive hangs"
        finally:
            proc.wait()
        outcomes["killed" if proc.returncode == -signal.SIGKILL else "finished"] += 1
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0, f"iteration {iteration}: exit {proc.returncode}"
            typical = time.monotonic() - started
    assert outcomes["killed"] == KILLS, outcomes

    final = s3archive(env.config_path, "archive", "--json")
    assert final.returncode == 0, final.stderr.decode()[-3000:]
    run_id = json.loads(final.stdout)["run_id"]
    verified = s3archive(env.config_path, "verify", "--all", "--read-data", "--json")
    assert verified.returncode == 0, (verified.stdout.decode()[-3000:], verified.stderr.decode()[-3000:])
    report = json.loads(verified.stdout)
    assert report["ok"] and all(r["chunks_checked"] > 0 for r in report["runs"])
    dst = tmp_path / "dst"
    restored = s3archive(env.config_path, "restore", run_id, "--target", str(dst), "--json")
    assert restored.returncode == 0, restored.stderr.decode()[-3000:]
    assert json.loads(restored.stdout)["ok"]
    assert tree_differences(src, Path(f"{dst}{src}")) == {"rsync": "", "getfacl": "", "getfattr": ""}
