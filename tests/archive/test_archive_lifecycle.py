"""Retention is the lease, lifecycle is the garbage collector — end to end on RGW.

A lifecycle "day" is 10 s here; lock dates are real time, so runs whose
fixed ``until`` lies seconds ahead lapse during the test.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from support.archive_env import ArchiveEnv
from support.lifecycle import list_versions, referenced_packs, run_lifecycle_until, until_in

MiB = 1 << 20
# seconds the second run's lock lasts: two lifecycle days (10 s each) and the polling
# of each (up to 30 s on a busy machine) must fit before it lapses
SECOND_LOCK = 75


def archive_now(env: ArchiveEnv) -> dict:
    """One run through the Archiver, reusing packs up to the moment their lock
    lapses (the CLI keeps a margin of an hour, longer than this whole test)."""
    from s3archive.archive.archiver import Archiver
    from s3archive.config import load_config
    from s3archive.store.factory import open_store

    config = load_config(env.config)
    summary = Archiver(config, open_store(config), reuse_margin=timedelta(0)).run()
    assert summary.exit_code == 0, summary.warnings
    return summary.to_json()


@pytest.mark.slow
def test_lifecycle_removes_a_pack_only_after_every_run_that_needs_it_lapsed(
        rgw, tmp_path: Path, monkeypatch) -> None:
    # one reader: the two files' chunks never share a pack (two readers interleave them)
    from s3archive.archive import file_stage
    monkeypatch.setattr(file_stage, "READERS", 1)
    s3 = rgw.client()
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, s3,
                     pack_size_mib=1)
    s3.put_bucket_lifecycle_configuration(Bucket=env.bucket, LifecycleConfiguration={"Rules": [{
        "ID": "collect", "Status": "Enabled", "Filter": {"Prefix": ""},
        "Expiration": {"Days": 1}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]})
    src = tmp_path / "src"
    src.mkdir()
    (src / "stays.bin").write_bytes(os.urandom(3 * MiB))
    (src / "replaced.bin").write_bytes(os.urandom(3 * MiB))
    env.pick(src)
    settings = "slack_days = 0\nrepack_below = 0.0\n"
    start = time.monotonic()

    env.write_config(retention=f"mode = \"GOVERNANCE\"\n{settings}{until_in(8)}")
    first = archive_now(env)
    (src / "replaced.bin").write_bytes(os.urandom(3 * MiB))
    env.write_config(retention=f"mode = \"GOVERNANCE\"\n{settings}{until_in(SECOND_LOCK)}")
    second = archive_now(env)
    assert second["packs_extended"] >= 1, "the reused pack's short lock must be extended"

    first_packs = referenced_packs(env, first["manifest_key"])
    second_packs = referenced_packs(env, second["manifest_key"])
    shared = set(first_packs) & set(second_packs)
    only_first = set(first_packs) - set(second_packs)
    assert shared and only_first

    # Day 1: lifecycle puts delete markers on every current version.
    time.sleep(max(0.0, start + 11 - time.monotonic()))
    keys = set(first_packs.values()) | set(second_packs.values())
    run_lifecycle_until(rgw, s3, env.bucket,
                        lambda st: keys <= st.latest_is_delete_marker, timeout=30)
    # Day 2: the versions only the lapsed first run needed are removed; those
    # the second run needs stay, although they are non-current now.
    marked = time.monotonic()
    time.sleep(max(0.0, marked + 11 - time.monotonic()))
    state = run_lifecycle_until(rgw, s3, env.bucket,
                                lambda st: not (only_first & st.versions), timeout=30)
    assert time.monotonic() - start < SECOND_LOCK - 2, \
        "the second run's lock must still be in force here"
    assert shared <= state.versions
    for version in shared:
        head = s3.head_object(Bucket=env.bucket, Key=second_packs[version], VersionId=version)
        assert head["ObjectLockRetainUntilDate"] >= datetime.fromisoformat(
            second["retain_until"].replace("Z", "+00:00"))

    # Once the second run lapsed too, lifecycle collects everything.
    time.sleep(max(0.0, start + SECOND_LOCK - time.monotonic()))
    run_lifecycle_until(rgw, s3, env.bucket,
                        lambda st: not (set(second_packs) & st.versions), timeout=40)
    assert not list_versions(s3, env.bucket).versions & (set(first_packs) | set(second_packs))
