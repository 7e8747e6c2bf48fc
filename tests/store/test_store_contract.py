"""The store contract (``s3archive/store/base.py``), held against every store we use.

One suite, three stores (restic's ``internal/backend/test`` and kopia's
``blobtesting`` do the same):

* ``memory``: the in-memory double with a fake clock (``tests/support/memory_store.py``)
  that the simulations and unit tests rely on;
* ``moto``: moto in server mode over HTTP, through ``S3Store`` (wrapped in
  ``CountingStore``, as ``open_store`` does);
* ``rgw``: Ceph RGW, a real S3 with faithful Object Lock, the same way.

Where a store is known not to keep the contract, the test is marked
``xfail(strict=True)`` with the reason (DESIGN.md, "Testing"), so a fix
upstream shows up as an unexpected pass.  S3 stores list in pages of 3 here,
so paging is exercised with a handful of keys.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from s3archive.errors import NoSuchVersion, StoreError, TransportError
from s3archive.store.base import DeletingStore, ObjectLock
from s3archive.storage_classes import effective
from s3archive.store.counting_store import CountingStore
from s3archive.store.s3_store import S3Store
from support.memory_store import FakeClock, MemoryStore

PAGE = 3  # listing page size for the S3 stores


@dataclass
class Backend:
    """One store under test, with what the protocol itself cannot do."""

    name: str
    store: DeletingStore
    now: Callable[[], datetime]
    wait_until: Callable[[datetime], None]
    add_delete_marker: Callable[[str], str]
    # a version in another storage class (S3: a PUT with StorageClass; the
    # double: a PUT and a transition, as lifecycle makes it)
    put_in_class: Callable[[str, bytes, str], str]
    known_gaps: dict[str, str] = field(default_factory=dict)  # test name -> reason

    def gap(self, request: pytest.FixtureRequest) -> None:
        reason = self.known_gaps.get(request.node.originalname)
        if reason:
            request.applymarker(pytest.mark.xfail(reason=f"{self.name}: {reason}",
                                                  strict=True))

    def later(self, seconds: float) -> datetime:
        """A retain-until ``seconds`` from the store's now, in whole seconds (RGW truncates)."""
        return (self.now() + timedelta(seconds=seconds)).replace(microsecond=0)


def _real_now() -> datetime:
    return datetime.now(timezone.utc)


def _sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - _real_now()).total_seconds()) + 0.5)


MOTO_GAPS = {
    # DESIGN.md, Testing: moto "lets a COMPLIANCE lock be shortened"
    "test_a_lock_in_force_is_never_shortened_or_weakened":
        "moto lets a lock in force be shortened (known gap, DESIGN.md Testing)",
    "test_a_governance_lock_in_force_is_not_shortened_without_a_bypass":
        "moto lets a lock in force be shortened (known gap, DESIGN.md Testing)",
    "test_a_governance_lock_in_force_does_not_become_compliance":
        "moto lets a GOVERNANCE lock in force become COMPLIANCE without a bypass",
    "test_a_retain_until_in_the_past_is_refused":
        "moto accepts a PUT whose retain-until is already past",
    "test_lock_changes_on_a_missing_version_say_no_such_version":
        "moto answers 500 (AttributeError) to PutObjectRetention on a deleted version",
}


@dataclass(frozen=True)
class _Bucket:
    client: Any
    name: str


def _lock_bucket(client: Any) -> _Bucket:
    name = f"contract-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return _Bucket(client, name)


def _s3_backend(name: str, bucket: _Bucket, gaps: dict[str, str] | None = None) -> Backend:
    """A fresh prefix in the module's bucket: tests do not see each other's keys."""
    prefix = f"t-{uuid.uuid4().hex[:10]}/pre"
    store = CountingStore(S3Store(bucket.client, bucket.name, prefix=prefix, page_size=PAGE))

    def add_delete_marker(key: str) -> str:
        answer = bucket.client.delete_object(Bucket=bucket.name, Key=f"{prefix}/{key}")
        return str(answer["VersionId"])

    def put_in_class(key: str, data: bytes, storage_class: str) -> str:
        answer = bucket.client.put_object(Bucket=bucket.name, Key=f"{prefix}/{key}", Body=data,
                                          StorageClass=storage_class)
        return str(answer["VersionId"])

    return Backend(name, store, _real_now, _sleep_until, add_delete_marker, put_in_class,
                   gaps or {})


@pytest.fixture(scope="module")
def moto_bucket() -> Iterator[_Bucket]:
    pytest.importorskip("moto.server")
    from support.moto_server import moto_server

    with moto_server() as server:
        # path-style, no retries: moto answers some requests 500 (see MOTO_GAPS)
        yield _lock_bucket(server.client("s3"))


@pytest.fixture(scope="module")
def rgw_bucket(rgw: Any) -> _Bucket:
    return _lock_bucket(rgw.client())


@pytest.fixture(params=["memory", "moto", "rgw"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        clock = FakeClock()
        memory = MemoryStore(clock)

        def put_in_class(key: str, data: bytes, storage_class: str) -> str:
            version = memory.put(key, data, None).version_id
            memory.transition(key, version, storage_class)
            return version

        result = Backend("memory", memory, clock.now,
                         lambda moment: clock.advance(max(timedelta(0), moment - clock.now())
                                                      + timedelta(seconds=1)) and None,
                         memory.put_delete_marker, put_in_class)
    elif request.param == "moto":
        result = _s3_backend("moto", request.getfixturevalue("moto_bucket"), MOTO_GAPS)
    else:
        result = _s3_backend("rgw", request.getfixturevalue("rgw_bucket"))
    result.gap(request)
    return result


def body(n: int, salt: int = 0) -> bytes:
    return bytes((i * 31 + salt) % 251 for i in range(n))


# ------------------------------------------------------------------ versions


def test_every_put_makes_a_new_version_and_none_is_overwritten(backend: Backend) -> None:
    store = backend.store
    first = store.put("k/one", body(100, 1), None)
    second = store.put("k/one", body(50, 2), None)
    assert first.version_id != second.version_id
    assert (first.key, first.size, second.size) == ("k/one", 100, 50)
    assert store.get("k/one", first.version_id) == body(100, 1)
    assert store.get("k/one", second.version_id) == body(50, 2)
    assert store.get("k/one") == body(50, 2)  # no version id: the current one
    assert store.head("k/one", first.version_id).size == 100
    assert store.head("k/one").version_id == second.version_id


def test_put_once_is_a_put(backend: Backend) -> None:
    store = backend.store
    until = backend.later(3600)
    first = store.put_once("k/once", b"one", ObjectLock("GOVERNANCE", until))
    second = store.put_once("k/once", b"two", None)
    assert first.version_id != second.version_id
    assert store.get("k/once", first.version_id) == b"one"
    assert store.head("k/once", first.version_id).lock_mode == "GOVERNANCE"
    assert store.get("k/once") == b"two"


def test_a_locked_put_carries_mode_and_retain_until_on_its_version(backend: Backend) -> None:
    store = backend.store
    until = backend.later(3600)
    put = store.put("k/locked", b"data", ObjectLock("COMPLIANCE", until))
    info = store.head("k/locked", put.version_id)
    assert (info.lock_mode, info.retain_until, info.legal_hold) == ("COMPLIANCE", until, False)
    governance = store.put("k/gov", b"data", ObjectLock("GOVERNANCE", until), legal_hold=True)
    info = store.head("k/gov", governance.version_id)
    assert (info.lock_mode, info.retain_until, info.legal_hold) == ("GOVERNANCE", until, True)
    plain = store.put("k/plain", b"data", None)
    assert store.head("k/plain", plain.version_id).lock_mode is None


def test_a_retain_until_in_the_past_is_refused(backend: Backend) -> None:
    with pytest.raises(StoreError) as refused:
        backend.store.put("k/past", b"data", ObjectLock("GOVERNANCE", backend.later(-3600)))
    assert not isinstance(refused.value, (NoSuchVersion, TransportError))
    assert list(backend.store.list_versions("k/past")) == []


def test_bucket_lock_configuration_is_reported(backend: Backend) -> None:
    assert backend.store.bucket_lock_config().enabled is True


# ------------------------------------------------------------------ reads


def test_ranged_get_is_inclusive_and_clamped_at_the_end(backend: Backend) -> None:
    store = backend.store
    data = body(1000)
    version = store.put("k/ranged", data, None).version_id
    assert store.get("k/ranged", version, (0, 0)) == data[:1]
    assert store.get("k/ranged", version, (10, 19)) == data[10:20]
    assert store.get("k/ranged", version, (990, 5000)) == data[990:]
    assert store.get("k/ranged", version, (0, 999)) == data
    with pytest.raises(StoreError) as beyond:
        store.get("k/ranged", version, (1000, 1010))
    assert not isinstance(beyond.value, (NoSuchVersion, TransportError))
    with pytest.raises(ValueError):
        store.get("k/ranged", version, (20, 10))


def test_no_such_version_means_the_version_or_key_is_not_there(backend: Backend) -> None:
    store = backend.store
    gone = store.put("k/gone", b"old", None).version_id
    kept = store.put("k/gone", b"new", None).version_id
    store.delete_version("k/gone", gone)
    for call in (lambda: store.get("k/gone", gone), lambda: store.head("k/gone", gone),
                 lambda: store.get("k/gone", gone, (0, 1)),
                 lambda: store.get("k/never-written"), lambda: store.head("k/never-written")):
        with pytest.raises(NoSuchVersion):
            call()
    assert store.get("k/gone", kept) == b"new"


def test_lock_changes_on_a_missing_version_say_no_such_version(backend: Backend) -> None:
    store = backend.store
    gone = store.put("k/gone", b"old", None).version_id
    store.put("k/gone", b"new", None)
    store.delete_version("k/gone", gone)
    with pytest.raises(NoSuchVersion):
        store.extend_retention("k/gone", gone, ObjectLock("GOVERNANCE", backend.later(60)))
    with pytest.raises(NoSuchVersion):
        store.set_legal_hold("k/gone", gone, True)


# ------------------------------------------------------------------ locks and holds


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_a_version_under_lock_cannot_be_deleted(backend: Backend, mode: str) -> None:
    store = backend.store
    version = store.put("k/locked", b"data", ObjectLock(mode, backend.later(3600))).version_id
    with pytest.raises(StoreError) as refused:
        store.delete_version("k/locked", version)
    assert not isinstance(refused.value, (NoSuchVersion, TransportError))
    assert store.get("k/locked", version) == b"data"


def test_a_lapsed_lock_no_longer_protects(backend: Backend) -> None:
    store = backend.store
    until = backend.later(2)
    version = store.put("k/lapsing", b"data", ObjectLock("COMPLIANCE", until)).version_id
    backend.wait_until(until)
    store.delete_version("k/lapsing", version)
    with pytest.raises(NoSuchVersion):
        store.head("k/lapsing", version)


def test_a_lock_in_force_is_never_shortened_or_weakened(backend: Backend) -> None:
    store = backend.store
    until = backend.later(3600)
    version = store.put("k/c", b"data", ObjectLock("COMPLIANCE", until)).version_id
    for lock in (ObjectLock("COMPLIANCE", until - timedelta(seconds=60)),
                 ObjectLock("GOVERNANCE", until + timedelta(seconds=60))):
        with pytest.raises(StoreError) as refused:
            store.extend_retention("k/c", version, lock)
        assert not isinstance(refused.value, (NoSuchVersion, TransportError))
    info = store.head("k/c", version)
    assert (info.lock_mode, info.retain_until) == ("COMPLIANCE", until)


def test_a_governance_lock_in_force_is_not_shortened_without_a_bypass(backend: Backend) -> None:
    store = backend.store
    until = backend.later(3600)
    version = store.put("k/g", b"data", ObjectLock("GOVERNANCE", until)).version_id
    with pytest.raises(StoreError) as refused:
        store.extend_retention("k/g", version, ObjectLock("GOVERNANCE",
                                                          until - timedelta(seconds=60)))
    assert not isinstance(refused.value, (NoSuchVersion, TransportError))
    info = store.head("k/g", version)
    assert (info.lock_mode, info.retain_until) == ("GOVERNANCE", until)


def test_a_governance_lock_in_force_does_not_become_compliance(backend: Backend) -> None:
    """AWS: only with s3:BypassGovernanceRetention, which the store never sends."""
    store = backend.store
    until = backend.later(3600)
    version = store.put("k/up", b"data", ObjectLock("GOVERNANCE", until)).version_id
    with pytest.raises(StoreError):
        store.extend_retention("k/up", version, ObjectLock("COMPLIANCE",
                                                           until + timedelta(days=1)))
    assert store.head("k/up", version).lock_mode == "GOVERNANCE"


def test_deleting_a_version_that_is_gone_succeeds_as_on_s3(backend: Backend) -> None:
    store = backend.store
    gone = store.put("k/twice", b"data", None).version_id
    store.delete_version("k/twice", gone)
    store.delete_version("k/twice", gone)  # S3: 204, nothing to do


def test_retention_can_be_extended(backend: Backend) -> None:
    store = backend.store
    until = backend.later(3600)
    for mode in ("GOVERNANCE", "COMPLIANCE"):
        version = store.put(f"k/{mode}", b"data", ObjectLock(mode, until)).version_id
        store.extend_retention(f"k/{mode}", version, ObjectLock(mode, until + timedelta(days=1)))
        info = store.head(f"k/{mode}", version)
        assert (info.lock_mode, info.retain_until) == (mode, until + timedelta(days=1))


def test_a_legal_hold_blocks_deletion_until_lifted(backend: Backend) -> None:
    store = backend.store
    version = store.put("k/held", b"data", None).version_id
    store.set_legal_hold("k/held", version, True)
    assert store.head("k/held", version).legal_hold is True
    with pytest.raises(StoreError) as refused:
        store.delete_version("k/held", version)
    assert not isinstance(refused.value, (NoSuchVersion, TransportError))
    store.set_legal_hold("k/held", version, False)
    assert store.head("k/held", version).legal_hold is False
    store.delete_version("k/held", version)
    assert list(store.list_versions("k/held")) == []


# ------------------------------------------------------------------ delete markers, listing


def test_a_delete_marker_hides_the_key_but_not_its_versions(backend: Backend) -> None:
    store = backend.store
    version = store.put("k/marked", b"data", ObjectLock("GOVERNANCE", backend.later(3600)))
    marker = backend.add_delete_marker("k/marked")
    with pytest.raises(NoSuchVersion):
        store.get("k/marked")
    with pytest.raises(NoSuchVersion):
        store.head("k/marked")
    assert store.get("k/marked", version.version_id) == b"data"
    with pytest.raises(StoreError):  # AWS and the double: 405; RGW: 404 NoSuchVersion
        store.head("k/marked", marker)
    assert [e.key for e in store.list_keys("k/")] == []
    rows = {e.version_id: e for e in store.list_versions("k/")}
    assert set(rows) == {version.version_id, marker}
    assert rows[marker].is_delete_marker and rows[marker].is_latest
    assert not rows[version.version_id].is_delete_marker
    assert not rows[version.version_id].is_latest
    store.delete_version("k/marked", marker)  # a marker is always deletable
    assert store.get("k/marked") == b"data"


def test_listings_page_through_everything_in_key_order(backend: Backend) -> None:
    store = backend.store
    written: dict[str, list[str]] = {}
    for i in (7, 3, 0, 5, 1, 6, 2, 4):  # more keys than a page, written out of order
        key = f"list/{i:02}"
        written[key] = [store.put(key, body(i + 1, n), None).version_id for n in range(2)]
    store.put("other/x", b"not listed", None)
    marker = backend.add_delete_marker("list/03")

    versions = list(store.list_versions("list/"))
    assert [e.key for e in versions] == sorted(e.key for e in versions)
    assert {(e.key, e.version_id) for e in versions if not e.is_delete_marker} == \
        {(k, v) for k, ids in written.items() for v in ids}
    assert [e.version_id for e in versions if e.is_delete_marker] == [marker]
    for key, ids in written.items():
        mine = [e for e in versions if e.key == key and not e.is_delete_marker]
        assert [e.version_id for e in mine] == ids[::-1], "versions newest first"
        latest = [e for e in versions if e.key == key and e.is_latest]
        assert len(latest) == 1
        assert latest[0].version_id == (marker if key == "list/03" else ids[-1])

    keys = list(store.list_keys("list/"))
    assert [e.key for e in keys] == sorted(k for k in written if k != "list/03")
    assert all(e.size == int(e.key[-2:]) + 1 for e in keys)


def test_versions_report_their_storage_class(backend: Backend) -> None:
    """Listings and HEAD say a version's class (S3 leaves STANDARD out of HEAD:
    None means STANDARD); a GLACIER_IR version reads like any other, ranged
    GETs included, without a restore request."""
    store = backend.store
    hot = store.put("sc/hot", b"hot bytes", None)
    cold = backend.put_in_class("sc/cold", b"cold bytes", "GLACIER_IR")
    rows = {e.key: e for e in store.list_versions("sc/")}
    assert effective(rows["sc/hot"].storage_class) == "STANDARD"
    assert rows["sc/cold"].storage_class == "GLACIER_IR"
    assert effective(store.head("sc/hot", hot.version_id).storage_class) == "STANDARD"
    assert store.head("sc/cold", cold).storage_class == "GLACIER_IR"
    assert store.get("sc/cold", cold) == b"cold bytes"
    assert store.get("sc/cold", cold, byte_range=(5, 100)) == b"bytes"


def test_usage_counts_requests_where_the_store_counts(backend: Backend) -> None:
    store = backend.store
    before = store.usage()
    assert before is not None  # both the memory double and CountingStore count
    store.put("k/u", b"12345", None)
    store.get("k/u")
    after = store.usage()
    assert after is not None
    assert after.requests.get("PutObject", 0) == before.requests.get("PutObject", 0) + 1
    assert after.requests.get("GetObject", 0) == before.requests.get("GetObject", 0) + 1
    assert (after.bytes_up - before.bytes_up, after.bytes_down - before.bytes_down) == (5, 5)
