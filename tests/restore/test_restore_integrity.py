"""Restore reads pinned versions, merges ranged GETs, bounds memory, survives bad chunks."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest


from support.manifest_builder import RunBuilder, invoke, make_bucket_env


@pytest.fixture
def env(rgw, tmp_path: Path):
    return make_bucket_env(rgw, tmp_path)


def test_restore_reads_pinned_versions_with_merged_gets(env, tmp_path: Path) -> None:
    builder = RunBuilder(env.store, chunk_size=16 << 10, pack_size=64 << 20)
    contents = {f"/data/f{i:02d}".encode(): os.urandom(5000 + 20_000 * i) for i in range(20)}
    builder.dir(b"/data")
    for path, data in contents.items():
        builder.file(path, data)
    run = builder.upload()
    assert len(run.manifest.packs) == 1
    chunks = sum(len(e.chunks) for e in run.manifest.entries)
    assert chunks > 60
    pack = run.manifest.packs[0]
    # an attacker (or a bug) PUTs garbage under the same key: a new version
    env.store.put(pack.key, b"garbage" * 1000, None)
    assert env.store.get(pack.key).startswith(b"garbage")

    result = invoke(env, "restore", run.run_id, "--target", str(tmp_path / "t"), "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for path, data in contents.items():
        assert (tmp_path / "t" / path.decode().lstrip("/")).read_bytes() == data
    # one GET for the manifest, one ranged GET for all chunks of the files below 128 KiB
    # (the ordered path) and one for all of the larger ones (written directly, together)
    assert report["store"]["requests"]["GetObject"] == 3
    assert report["bytes"] == sum(len(d) for d in contents.values())


def test_bad_chunks_damage_only_their_files(env, tmp_path: Path) -> None:
    builder = RunBuilder(env.store, pack_size=1)  # one pack per chunk
    builder.dir(b"/")
    good = {b"/good-1": b"first good file\n" * 100, b"/good-2": b"second\n" * 3000}
    for path, data in good.items():
        builder.file(path, data)
    bad = builder.file(b"/bad-hash", b"this chunk is recorded with a wrong hash" * 10)
    builder.hardlink(b"/bad-hash-link", b"/bad-hash")
    wrong = dataclasses.replace(bad.chunks[0], hash="0" * 64)
    bad.chunks[0] = wrong
    gone = builder.file(b"/gone", b"its pack version is deleted" * 10)
    builder.file(b"/zz-after", b"restored after the bad ones\n")
    run = builder.upload()
    victim = run.manifest.packs[gone.chunks[0].pack]
    env.client.delete_object(Bucket=env.bucket, Key=victim.key, VersionId=victim.version_id,
                             BypassGovernanceRetention=True)
    target = tmp_path / "t"

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    assert result.exit_code == 1
    assert "damaged: /bad-hash: " in result.stderr and "does not match its hash" in result.stderr
    assert "damaged: /gone: " in result.stderr and victim.key in result.stderr
    assert "damaged: /bad-hash-link: another name of the damaged b'/bad-hash'" in result.stderr
    assert "3 damaged, 0 not restored" in result.stderr
    for path, data in good.items():
        assert (target / path.decode()[1:]).read_bytes() == data
    assert (target / "zz-after").read_bytes() == b"restored after the bad ones\n"





def test_a_reference_sharing_an_offset_is_checked_against_its_own_hash(env,
                                                                        tmp_path: Path) -> None:
    """Issue 9, defect 2: /b points at /a's stored chunk but records its own hash."""
    import hashlib

    builder = RunBuilder(env.store)
    builder.dir(b"/")
    a_data, b_data = b"the bytes of /a\n" * 64, b"the bytes of /b\n" * 64
    a = builder.file(b"/a", a_data)
    b = builder.file(b"/b", b"placeholder")
    b.size = len(b_data)
    b.chunks = [dataclasses.replace(a.chunks[0], hash=hashlib.sha256(b_data).hexdigest())]
    builder.file(b"/c", a_data)  # an honest duplicate of /a: the same reference
    run = builder.upload()
    assert (b.chunks[0].pack, b.chunks[0].offset) == (a.chunks[0].pack, a.chunks[0].offset)
    target = tmp_path / "t"

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    assert result.exit_code == 1
    assert "damaged: /b: " in result.stderr and "does not match its hash" in result.stderr
    assert "1 damaged, 0 not restored" in result.stderr
    assert (target / "a").read_bytes() == a_data == (target / "c").read_bytes()
    assert a_data not in (target / "b").read_bytes()
