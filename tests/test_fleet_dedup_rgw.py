"""Cross-host deduplication on RGW, through the real CLI (issue 13 items 1 and 4).

Three hosts with the same 3 MB tree in one bucket: the first uploads it, the
others upload under 1 % of its bytes, reference its pack (whose lock covers
their runs), restore their files, and make at most one list request of the
group index beyond their own.  (Days of runs, 100 hosts and the lease bound
are simulated on the in-memory store: tests/archive/test_group_index*.py and
test_fleet_retention_simulation.py.)
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from support.manifest_builder import invoke, make_bucket_env
from test_fleet_rgw import host_env


def test_hosts_with_the_same_tree_upload_it_once(rgw, tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    base = make_bucket_env(rgw, tmp_path / "audit")
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(3026671)
    for i in range(200):  # the 3,026,671 bytes, give or take
        (src / f"f{i:03d}.bin").write_bytes(rng.randbytes(15_133))
    hosts = [host_env(base, tmp_path / name, name, src) for name in ("web-1", "web-2", "web-3")]
    summaries = []
    for env in hosts:
        result = invoke(env, "archive", "--json")
        assert result.exit_code == 0, result.output
        summaries.append(json.loads(result.stdout))
    first = summaries[0]
    assert first["bytes_uploaded"] > 3_000_000
    for later in summaries[1:]:
        assert later["bytes_uploaded"] < 0.01 * first["bytes_uploaded"], (later, first)
        assert later["chunks_new"] == 0
        # beyond its own listings (ListObjectVersions of runs/<host>/): one of the group
        # index (its first run: the whole group prefix once)
        assert later["requests"]["ListObjectsV2"] == 1, later["requests"]
    data = [o for o in base.client.list_object_versions(Bucket=base.bucket, Prefix="data/")
            .get("Versions", [])]
    assert sum(o["Size"] for o in data) < 1.05 * first["bytes_uploaded"]
    restored = tmp_path / "restored"
    result = invoke(hosts[2], "restore", "latest", "--target", str(restored))
    assert result.exit_code == 0, result.output
    for name in os.listdir(src):
        assert (restored / src.relative_to("/") / name).read_bytes() == (src / name).read_bytes()
    view = json.loads(invoke(base, "fleet", "--json").stdout)
    shared = {h["host"]: h["bytes_shared"] for h in view["hosts"]}
    assert all(value >= 3_000_000 for value in shared.values()), shared
    # a daily run of each: at most 2 list requests of the group index (yesterday's and
    # today's day), and GETs of the index objects since its last run only
    for n, env in enumerate(hosts):
        result = invoke(env, "archive", "--json")
        assert result.exit_code == 0, result.output
        requests = json.loads(result.stdout)["requests"]
        assert requests.get("ListObjectsV2", 0) <= 2, requests
        assert requests.get("GetObject", 0) <= len(hosts) - 1 - n + 2, requests


def _daily_runs_of_a_fleet(rgw, tmp_path: Path, hosts: int, files: int) -> None:
    """``hosts`` hosts of ``files`` small files each (90 % one image) archive twice; the
    second, daily run of each makes at most 2 list requests beyond its own (ListObjectsV2
    of the group index: the host's own are ListObjectVersions of runs/<host>/) and GETs
    at most the index objects written since its last run, whatever the fleet's size."""
    (tmp_path / "audit").mkdir()
    base = make_bucket_env(rgw, tmp_path / "audit")
    rng = random.Random(hosts * files)
    image = [rng.randbytes(rng.randrange(200, 2_000)) for _ in range(files * 9 // 10)]
    envs = []
    for n in range(hosts):
        src = tmp_path / f"src{n}"
        src.mkdir()
        for i, data in enumerate(image):
            (src / f"i{i:05d}").write_bytes(data)
        for i in range(files - len(image)):
            (src / f"own{i:05d}").write_bytes(rng.randbytes(rng.randrange(200, 2_000)))
        envs.append((host_env(base, tmp_path / f"h{n}", f"host-{n:02d}", src), src))
    first = 0  # bytes the first host uploaded
    for day in range(2):
        for n, (env, src) in enumerate(envs):
            (src / "own00000").write_bytes(rng.randbytes(500))  # a change a day
            result = invoke(env, "archive", "--json")
            assert result.exit_code == 0, result.output
            summary = json.loads(result.stdout)
            lists = summary["requests"].get("ListObjectsV2", 0)
            gets = summary["requests"].get("GetObject", 0)
            if day == 0:
                assert lists == 1, summary["requests"]  # the bootstrap: the group prefix
                assert gets <= n + 2, summary["requests"]  # the n hosts before it
                if n:
                    assert summary["bytes_uploaded"] < 0.3 * first, summary
                else:
                    first = summary["bytes_uploaded"]
            else:
                assert lists <= 2, summary["requests"]  # yesterday's and today's day
                assert gets <= hosts + 2, summary["requests"]  # the objects since its run


@pytest.mark.scale
def test_a_fleet_of_20_hosts_of_2000_files(rgw, tmp_path: Path) -> None:
    # 40 archive runs through the CLI: 65 s (load 3-8)
    _daily_runs_of_a_fleet(rgw, tmp_path, hosts=20, files=2_000)
