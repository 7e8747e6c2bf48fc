"""prune against a real S3 (RGW): lapsed, unneeded versions go; live runs stay whole."""

from __future__ import annotations

import os
import time
from pathlib import Path

from support.archive_env import ArchiveEnv
from support.lifecycle import referenced_packs, until_in


def test_prune_removes_what_lapsed_and_keeps_live_runs_whole(rgw, tmp_path: Path) -> None:
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client(),
                     pack_size_mib=1)
    src = tmp_path / "src"
    src.mkdir()
    (src / "stays.bin").write_bytes(os.urandom(2 << 20))
    (src / "goes.bin").write_bytes(os.urandom(2 << 20))
    env.pick(src)
    env.write_config(retention=f"slack_days = 0\n{until_in(3)}")
    first = env.archive()
    (src / "goes.bin").unlink()
    env.write_config(retention=f"slack_days = 0\n{until_in(3600)}")
    second = env.archive()
    first_packs = referenced_packs(env, first["manifest_key"])
    second_packs = referenced_packs(env, second["manifest_key"])
    time.sleep(4)  # the first run's lock lapses

    preview = env.run("prune", "--dry-run", "--json")
    assert preview.exit_code == 0, preview.stderr
    planned = {(d["key"], d["version_id"]) for d in preview.json["deleted"]}
    assert {v for v in first_packs if v not in second_packs} <= {v for _, v in planned}
    assert not {v for _, v in planned} & set(second_packs)
    index = [v for v in env.versions() if v["Key"].startswith("index/")]
    assert all(any(run["run_id"] in v["Key"] for v in index) for run in (first, second))
    assert len(env.versions()) - len(index) == len(set(first_packs) | set(second_packs)) + 2

    result = env.run("prune", "--json")
    assert result.exit_code == 0, result.stderr
    assert {(d["key"], d["version_id"]) for d in result.json["deleted"]} == planned
    assert result.json["live_runs"] == 1 and result.json["lapsed_runs"] == 1
    left = {v["VersionId"] for v in env.versions()}
    assert set(second_packs) <= left and not (set(first_packs) - set(second_packs)) & left
    # the lapsed run's group index object went with it; the live run's stays
    left_index = [v["Key"] for v in env.versions() if v["Key"].startswith("index/")]
    assert left_index and all(second["run_id"] in key for key in left_index), left_index
    verify = env.run("verify", "--all", "--read-data")
    assert verify.exit_code == 0, verify.stdout + verify.stderr
