"""``verify`` catches deleted pack versions, short or missing locks and bad data (RGW)."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from support.manifest_builder import RunBuilder, invoke, make_bucket_env


@pytest.fixture
def env(rgw, tmp_path: Path):
    return make_bucket_env(rgw, tmp_path)


def build(env, run_id: str, **kw) -> tuple[RunBuilder, object]:
    builder = RunBuilder(env.store, run_id=run_id, pack_size=1 << 16, **kw)
    builder.dir(b"/")
    builder.file(b"/a", os.urandom(100_000))
    builder.flush_pack()  # /a and /b in packs of their own
    builder.file(b"/b", os.urandom(100_000))
    builder.flush_pack()
    builder.hardlink(b"/b-link", b"/b")
    builder.snapshot("db", b"dump " * 5000, restore_through="cat > /dev/null")
    return builder, builder.upload()


def test_healthy_run_passes_with_and_without_data(env) -> None:
    _, run = build(env, "r1")
    chunks = {(c.pack, c.offset) for e in run.manifest.entries for c in e.chunks}
    chunks |= {(c.pack, c.offset) for s in run.manifest.snapshots for c in s.chunks}

    plain = invoke(env, "verify", "r1")
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.startswith(f"ok       testhost/r1: {len(run.manifest.packs)} packs present,"
                                   " locked GOVERNANCE until")

    deep = invoke(env, "verify", "r1", "--read-data", "--json")
    assert deep.exit_code == 0, deep.output
    result = json.loads(deep.stdout)["runs"][0]
    assert result["ok"] and result["chunks_checked"] == len(chunks)
    assert result["packs_read"] == len(run.manifest.packs)


def test_pack_version_deleted_behind_its_back(env) -> None:
    _, run = build(env, "r1")
    b_pack = run.manifest.packs[run.manifest.entries[2].chunks[0].pack]  # /b
    env.client.delete_object(Bucket=env.bucket, Key=b_pack.key, VersionId=b_pack.version_id,
                             BypassGovernanceRetention=True)

    result = invoke(env, "verify", "r1")

    assert result.exit_code == 1
    assert "PROBLEM  testhost/r1" in result.stdout
    assert f"pack {b_pack.key}@{b_pack.version_id} does not exist" in result.stdout
    assert "affects /b, /b-link" in result.stdout

    as_json = json.loads(invoke(env, "verify", "r1", "--json").stdout)
    problem = as_json["runs"][0]["problems"][0]
    assert (problem["kind"], problem["key"]) == ("missing", b_pack.key)
    assert [p["path"] for p in problem["paths"]] == ["/b", "/b-link"]


def test_lock_shorter_than_the_run_needs(env) -> None:
    builder = RunBuilder(env.store, run_id="short", pack_size=1 << 16)
    builder.pack_lock_until = builder.retain_until - timedelta(hours=2)
    builder.file(b"/a", b"short lock")
    run = builder.upload()
    pack = run.manifest.packs[0]

    result = invoke(env, "verify", "short", "--json")

    assert result.exit_code == 1
    problems = json.loads(result.stdout)["runs"][0]["problems"]
    assert [(p["kind"], p["key"]) for p in problems] == [("retention", pack.key)]
    assert "the run needs" in problems[0]["message"]
    assert problems[0]["paths"] == [{"path": "/a"}]


def test_unlocked_and_weaker_mode_packs(env) -> None:
    unlocked = RunBuilder(env.store, run_id="unlocked", pack_lock_mode=None)
    unlocked.file(b"/x", b"no lock on my pack")
    unlocked.upload()
    weaker = RunBuilder(env.store, run_id="weaker", lock_mode="COMPLIANCE",
                        pack_lock_mode="GOVERNANCE")
    weaker.file(b"/y", b"governance is not compliance")
    weaker.upload()

    result = invoke(env, "verify", "--all", "--json")

    assert result.exit_code == 1
    kinds = {r["run_id"]: [p["kind"] for p in r["problems"]]
             for r in json.loads(result.stdout)["runs"]}
    assert kinds == {"unlocked": ["unlocked"], "weaker": ["mode"]}


def test_read_data_finds_a_bad_chunk(env) -> None:
    builder = RunBuilder(env.store, run_id="bad", pack_size=1 << 20)
    builder.file(b"/good", b"fine " * 1000)
    entry = builder.file(b"/rotten", b"rotten " * 1000)
    entry.chunks[0] = dataclasses.replace(entry.chunks[0], hash="f" * 64)
    builder.upload()

    shallow = invoke(env, "verify", "bad")
    assert shallow.exit_code == 0  # the pack is there and locked: only data shows it
    deep = invoke(env, "verify", "bad", "--read-data")

    assert deep.exit_code == 1
    assert "does not match its hash" in deep.stdout
    assert "affects /rotten" in deep.stdout and "/good" not in deep.stdout


def test_all_runs_and_sampling(env) -> None:
    build(env, "r1")
    build(env, "r2")
    result = invoke(env, "verify", "--all", "--read-data", "--sample", "50", "--json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert [r["run_id"] for r in runs] == ["r1", "r2"]
    assert all(0 < r["packs_read"] < r["packs"] for r in runs)

    usage = invoke(env, "verify", "--sample", "10")
    assert usage.exit_code == 2 and "--sample needs --read-data" in usage.stderr


def test_read_data_checks_every_reference_sharing_an_offset(env) -> None:
    """Issue 9, defect 2: one reference per (pack, offset) is not enough."""
    import hashlib

    builder = RunBuilder(env.store, run_id="shared")
    a_data, b_data = b"the bytes of /a\n" * 64, b"the bytes of /b\n" * 64
    a = builder.file(b"/a", a_data)
    b = builder.file(b"/b", b"placeholder")
    b.size = len(b_data)
    b.chunks = [dataclasses.replace(a.chunks[0], hash=hashlib.sha256(b_data).hexdigest())]
    builder.upload()

    result = invoke(env, "verify", "shared", "--read-data", "--json")

    assert result.exit_code == 1
    run = json.loads(result.stdout)["runs"][0]
    assert run["chunks_checked"] == 2
    assert [(p["kind"], [x["path"] for x in p["paths"]]) for p in run["problems"]] == \
        [("chunk", ["/b"])]
    assert "does not match its hash" in run["problems"][0]["message"]


def test_a_root_that_is_not_a_directory_is_reported(env) -> None:
    """Issue 9, defect 3: verify names the run instead of passing it."""
    builder = RunBuilder(env.store, run_id="rootfile")
    builder.file(b"/", b"a file where the root directory should be")
    builder.file(b"/etc", b"below it")
    run = builder.upload()

    result = invoke(env, "verify", "rootfile")

    assert result.exit_code == 1
    assert (f"cannot read the manifest: {run.key}@{run.version_id}: line 3: "
            "'/' is a file, not a directory") in result.stdout
