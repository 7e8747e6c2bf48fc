"""``verify`` and storage classes, on the in-memory store (fast; the same
against RGW with real lifecycle transitions: test_cold_rgw.py).

Cold packs (GLACIER_IR) are neither a problem nor a warning and are counted
per class; a manifest not in STANDARD breaks the hot-metadata promise (a
warning); anything in an archival class (GLACIER, DEEP_ARCHIVE) is a
warning, and reading it (--read-data) is a problem, since no command asks
for a restore.  The double's lifecycle moves data/ exactly as the rule
create-resources --cold-after writes says."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from s3archive.archive.archiver import Archiver
from s3archive.config import dedup_secret_file_text, parse_config
from s3archive.crypto.dedup import DedupSecret
from s3archive.crypto.keys import Identity
from s3archive.repo.catalog import list_runs
from s3archive.store.base import ObjectLock
from s3archive.verify import Verifier, VerifyOptions
from support.manifest_builder import RunBuilder
from support.memory_store import FakeClock, MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(FakeClock(datetime.now(timezone.utc)))


def _run(store: MemoryStore):  # type: ignore[no-untyped-def]
    builder = RunBuilder(store, run_id="r1", pack_size=1 << 16)
    builder.dir(b"/")
    builder.file(b"/a", os.urandom(100_000))
    builder.flush_pack()
    builder.file(b"/b", os.urandom(100_000))
    builder.flush_pack()
    info = builder.upload()
    assert len(info.manifest.packs) >= 2
    return info, list_runs(store, "testhost")[0]


def test_cold_packs_are_counted_not_flagged(store: MemoryStore) -> None:
    info, ref = _run(store)
    for pack in info.manifest.packs:
        store.transition(pack.key, pack.version_id, "GLACIER_IR")
    result = Verifier(store).verify(ref)
    assert result.ok and result.storage.warnings == []
    assert result.to_json()["pack_classes"] == {"GLACIER_IR": len(info.manifest.packs)}
    assert result.to_json()["warnings"] == []
    deep = Verifier(store, VerifyOptions(read_data=True)).verify(ref)
    assert deep.ok and deep.chunks_checked > 0


def test_hot_packs_are_counted_as_standard(store: MemoryStore) -> None:
    info, ref = _run(store)
    store.transition(info.manifest.packs[0].key, info.manifest.packs[0].version_id,
                     "GLACIER_IR")
    result = Verifier(store).verify(ref)
    n = len(info.manifest.packs)
    assert result.to_json()["pack_classes"] == {"GLACIER_IR": 1, "STANDARD": n - 1}
    assert result.storage.describe_packs() == f"1 GLACIER_IR, {n - 1} STANDARD"


def test_a_cold_manifest_is_a_warning_naming_it(store: MemoryStore) -> None:
    info, ref = _run(store)
    store.transition(info.key, info.version_id, "GLACIER_IR")
    result = Verifier(store).verify(ref)
    assert result.ok  # still readable: a broken promise, not a broken run
    assert result.to_json()["pack_classes"] == {"STANDARD": len(info.manifest.packs)}
    assert result.to_json()["warnings"] == [{
        "key": info.key, "version_id": info.version_id,
        "message": f"{info.key}@{info.version_id} is in GLACIER_IR, not STANDARD: metadata "
                   "is kept hot (a lifecycle rule other than create-resources' moves it)"}]


@pytest.mark.parametrize("cls", ["GLACIER", "DEEP_ARCHIVE"])
def test_an_archival_pack_is_a_warning_and_unreadable(store: MemoryStore, cls: str) -> None:
    info, ref = _run(store)
    pack = info.manifest.packs[0]
    store.transition(pack.key, pack.version_id, cls)
    result = Verifier(store).verify(ref)
    assert result.ok
    assert [w["key"] for w in result.to_json()["warnings"]] == [pack.key]
    assert "no command can read it before a restore request" in \
        result.to_json()["warnings"][0]["message"]
    deep = Verifier(store, VerifyOptions(read_data=True)).verify(ref)
    assert not deep.ok
    assert any(pack.key in p.message and "InvalidObjectState" in p.message
               for p in deep.problems)


@pytest.mark.parametrize("cold_after, moved_on_day", [(1, 1), (2, 2), (3, 3), (10, 10)])
def test_the_double_moves_data_when_the_rule_says(cold_after: int, moved_on_day: int) -> None:
    """Day 1 the expiry rule's delete marker makes a pack non-current; the
    transition follows DAYS - 1 days later: DAYS days after the PUT."""
    clock = FakeClock()
    store = MemoryStore(clock, cold_after=cold_after)
    lock = ObjectLock("GOVERNANCE", clock() + timedelta(days=60))
    written = {key: store.put(key, b"x" * 10, lock).version_id
               for key in ("data/aa/p", "meta/aa/m", "runs/h/r.jsonl.zst", "keys/d/k.age",
                           "packs/aa/q")}
    for day in range(1, 13):
        clock.advance(timedelta(days=1))
        store.lifecycle_day()
        classes = {key: store.version(key, version).storage_class
                   for key, version in written.items()}
        assert classes["data/aa/p"] == ("GLACIER_IR" if day >= moved_on_day else "STANDARD"), day
        assert {classes[k] for k in written if k != "data/aa/p"} == {"STANDARD"}


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_format2_run_goes_cold_in_the_double_and_verifies(tmp_path: Path,
                                                             encrypted: bool) -> None:
    """archive (format 2) into the double with --cold-after 2, two lifecycle
    days: its data packs are GLACIER_IR, its metadata packs, root object and
    (encrypted) dedup-secret copy STANDARD; verify counts them and, with the
    key, reads the cold data.  A dedup-secret copy moved by hand is named."""
    clock = FakeClock(datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc))
    store = MemoryStore(clock, cold_after=2)
    etc, tree = tmp_path / "etc", tmp_path / "tree"
    (etc / "pickers.d").mkdir(parents=True)
    tree.mkdir()
    (tree / "big.bin").write_bytes(os.urandom(3 << 20))
    (tree / "note.txt").write_text("cold\n")
    picker = etc / "pickers.d" / "10-tree"
    picker.write_text(f"#!/bin/sh\necho '{tree}'\n")
    picker.chmod(0o755)
    table: dict = {"s3": {"bucket": "cold"}, "host": {"name": "h"},
                   "content": {"pack_size_mib": 1},
                   "local": {"cache_dir": str(tmp_path / "cache"),
                             "state_file": str(tmp_path / "state" / "s.json")}}
    identity = Identity.generate()
    if encrypted:
        fd = os.open(etc / "dedup.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(dedup_secret_file_text(DedupSecret.generate()))
        table["encryption"] = {"recipients": [str(identity.recipient())],
                               "dedup_secret_file": str(etc / "dedup.key")}
    config = parse_config(table, etc / "config.toml", clock=clock)
    assert Archiver(config, store, clock=clock).run().exit_code == 0
    for _ in range(2):
        clock.advance(timedelta(days=1))
        store.lifecycle_day()
    classes = {v.key.split("/")[0]: set() for v in store.versions()}
    for version in store.versions():
        if not version.is_delete_marker:
            classes[version.key.split("/")[0]].add(version.storage_class)
    assert classes["data"] == {"GLACIER_IR"}
    assert classes["meta"] == classes["runs"] == {"STANDARD"}
    assert classes.get("keys", {"STANDARD"}) == {"STANDARD"}
    assert ("keys" in classes) == encrypted

    run = list_runs(store, "h")[0]
    options = VerifyOptions(read_data=True, identities=(identity,))
    result = Verifier(store, options).verify(run)
    assert result.ok, [p.message for p in result.problems]
    assert result.chunks_checked > 0 and result.storage.warnings == []
    counts = result.to_json()["pack_classes"]
    assert set(counts) == {"GLACIER_IR", "STANDARD"}
    assert counts["GLACIER_IR"] == len({v.key for v in store.versions("data/")})
    assert counts["STANDARD"] == len({v.key for v in store.versions("meta/")})
    if encrypted:
        copy = next(v for v in store.versions("keys/") if not v.is_delete_marker)
        store.transition(copy.key, copy.version_id, "GLACIER_IR")
        warned = Verifier(store).verify(run)
        assert [w["key"] for w in warned.to_json()["warnings"]] == [copy.key]
