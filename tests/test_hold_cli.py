"""``hold`` / ``release``: legal hold on a run's manifest and every pack it references (RGW)."""

from __future__ import annotations

import json
import os
from pathlib import Path


from support.manifest_builder import RunBuilder, invoke, make_bucket_env


def held(env, key: str, version_id: str) -> bool:
    answer = env.client.get_object_legal_hold(Bucket=env.bucket, Key=key, VersionId=version_id)
    return answer["LegalHold"]["Status"] == "ON"


def test_hold_and_release_respect_other_held_runs(rgw, tmp_path: Path) -> None:
    env = make_bucket_env(rgw, tmp_path)
    shared = os.urandom(80_000)
    one = RunBuilder(env.store, run_id="r1", pack_size=1 << 16)
    one.file(b"/shared", shared)
    one.flush_pack()
    one.file(b"/only-one", os.urandom(70_000))
    r1 = one.upload()
    two = RunBuilder(env.store, run_id="r2", pack_size=1 << 16)
    two.packs = list(r1.manifest.packs[:2])  # reuse the packs holding /shared
    two.entries.append(r1.manifest.entries[1])  # "/shared": its refs point at those packs
    two.file(b"/only-two", os.urandom(70_000))
    r2 = two.upload()
    shared_packs = {(p.key, p.version_id) for p in r1.manifest.packs[:2]}
    only_one = {(p.key, p.version_id) for p in r1.manifest.packs[2:]}
    assert shared_packs and only_one

    for run in (r1, r2):
        result = invoke(env, "hold", run.run_id)
        assert result.exit_code == 0, result.output
        assert f"testhost/{run.run_id}: legal hold set on the manifest and " \
               f"{len(run.manifest.packs)} packs" in result.stdout
    assert all(held(env, k, v) for k, v in shared_packs | only_one)
    assert held(env, r1.key, r1.version_id)
    runs = json.loads(invoke(env, "runs", "--json").stdout)
    assert [r["legal_hold"] for r in runs] == [True, True]

    release = invoke(env, "release", "r1", "--json")
    assert release.exit_code == 0, release.output
    report = json.loads(release.stdout)
    assert report["packs_changed"] == len(only_one)
    assert set(report["packs_kept"]) == {k for k, _ in shared_packs}
    assert all(v == ["testhost/r2"] for v in report["packs_kept"].values())
    assert not held(env, r1.key, r1.version_id)
    assert all(held(env, k, v) for k, v in shared_packs)  # r2 still needs them
    assert not any(held(env, k, v) for k, v in only_one)

    # with r1 no longer held, releasing r2 frees everything it holds
    final = json.loads(invoke(env, "release", "r2", "--json").stdout)
    assert final["packs_kept"] == {}
    assert not any(held(env, k, v) for k, v in shared_packs)
