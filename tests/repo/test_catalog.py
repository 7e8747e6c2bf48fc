"""Runs come from manifest versions; a run key's first version is the run."""

from __future__ import annotations

from datetime import timedelta

import pytest

from s3archive.repo.catalog import list_runs, resolve_run
from s3archive.errors import RunNotFound, UsageError
from s3archive.store.base import ObjectLock
from support.memory_store import FakeClock, MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(FakeClock())


def put_run(store: MemoryStore, host: str, run_id: str, body: bytes = b"x") -> str:
    clock = store.clock
    lock = ObjectLock("GOVERNANCE", clock() + timedelta(days=3))
    version = store.put(f"runs/{host}/{run_id}.jsonl.zst", body, lock).version_id
    clock.advance(timedelta(minutes=1))
    return version


def test_runs_are_listed_from_versions_even_behind_delete_markers(store: MemoryStore) -> None:
    put_run(store, "a", "20260101T000000Z")
    put_run(store, "a", "20260102T000000Z")
    put_run(store, "b", "20260101T120000Z")
    store.put("runs/a/not-a-run.txt", b"?", None)
    store.clock.advance(timedelta(days=1, minutes=1))
    store.lifecycle_day()  # delete markers on every current version
    runs = list_runs(store)
    assert [(r.host, r.run_id) for r in runs] == [
        ("a", "20260101T000000Z"), ("a", "20260102T000000Z"), ("b", "20260101T120000Z")]
    assert [r.run_id for r in list_runs(store, "b")] == ["20260101T120000Z"]


def test_names_resolve_to_the_first_version_of_a_run_key(store: MemoryStore) -> None:
    original = put_run(store, "a", "20260101T000000Z", b"the run")
    put_run(store, "a", "20260101T000000Z", b"written later by someone else")
    put_run(store, "a", "20251231T000000Z")
    runs = list_runs(store, "a")
    for spec in ("latest", "20260101T000000Z", "2026"):
        assert resolve_run(runs, spec, "a").version_id == original
    with pytest.raises(UsageError, match="ambiguous"):
        resolve_run(runs, "202", "a")
    with pytest.raises(RunNotFound):
        resolve_run(runs, "1999", "a")
    with pytest.raises(RunNotFound):
        resolve_run(runs, "latest", "nobody")


def test_an_oversized_manifest_is_refused_before_it_is_downloaded(store: MemoryStore) -> None:
    from s3archive.errors import ManifestError
    from s3archive.format.limits import ManifestLimits
    from s3archive.repo.catalog import load_manifest

    version = put_run(store, "a", "20260101T000000Z", body=b"z" * 600)
    run = list_runs(store)[0]
    gets: list[str] = []
    original = store.get
    store.get = lambda *a, **kw: gets.append(a[0]) or original(*a, **kw)  # type: ignore
    with pytest.raises(ManifestError, match=f"runs/a/20260101T000000Z.jsonl.zst@{version}: "
                       r"manifest is larger than 500 bytes \(600\)"):
        load_manifest(store, run, ManifestLimits(stored_bytes=500))
    assert gets == []
