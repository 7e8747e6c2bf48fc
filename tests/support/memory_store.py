"""An in-memory ObjectStore that keeps S3's Object Lock rules, and a fake clock.

The retention rules of s3archive live behind the store interface, so this
double lets a test drive months of daily runs in seconds (kopia's approach:
the double models versions, delete markers and locks, with a fake clock).
It follows S3, not convenience:

* every PUT makes a new version; GET/HEAD without a version id read the
  latest version, and a current delete marker makes them 404
  (``NoSuchVersion``); GET/HEAD of a delete marker's version id is a 405
  (``StoreError``);
* a version carries a lock mode, a retain-until and a legal hold.  A PUT
  whose retain-until is not in the future is rejected (S3: InvalidArgument);
  ``extend_retention`` may lengthen any lock, but a lock in force may never
  be shortened nor change its mode: COMPLIANCE never becomes GOVERNANCE, and
  GOVERNANCE becomes COMPLIANCE only with a governance bypass, which this
  double does not offer (the backup role has none either) -> ``StoreError``
  (AccessDenied); a lapsed lock may be set anew;
* ``delete_version`` of a version whose lock is in force or that is under a
  legal hold -> ``StoreError`` (AccessDenied); delete markers are always
  deletable; deleting a version that does not exist succeeds, as on S3
  (204; checked against RGW by ``tests/store/test_store_contract.py``);
* ``lifecycle_day()`` runs the rules ``create-resources`` writes once:
  delete marker on current versions one day old, expiry of versions that
  have been non-current for a day unless a lock or legal hold protects them,
  removal of delete markers that are the only version left; with
  ``cold_after`` (``--cold-after``), the transition of ``data/`` versions to
  GLACIER_IR (``s3archive/setup/lifecycle.py``);
* a version has a storage class (STANDARD when written; ``transition``
  changes it as a lifecycle rule would); GET of a version in an archival
  class (GLACIER, DEEP_ARCHIVE) fails as on S3 (InvalidObjectState).

Requests are counted by S3 operation name (the names ``CountingStore`` uses).
Test helpers (not part of the protocol) read the raw state: ``versions``,
``pack_versions``, ``version``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from s3archive import storage_classes
from s3archive.errors import NoSuchVersion, StoreError
from s3archive.setup import lifecycle
from s3archive.store.base import (BucketLockConfig, ObjectInfo, ObjectLock, PutResult,
                                  StoreUsage, VersionEntry)

LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
DAY = timedelta(days=1)


class FakeClock:
    """A UTC clock that moves only when told to; callable like ``utc_now``."""

    def __init__(self, start: datetime | None = None):
        start = start or datetime(2031, 3, 3, 2, 30, tzinfo=timezone.utc)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._now = start.astimezone(timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    __call__ = now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("time does not run backwards")
        with self._lock:
            self._now += delta
            return self._now


@dataclass(frozen=True)
class StoredVersion:
    """One version of one key, as the bucket holds it (test helpers read these)."""

    key: str
    version_id: str
    body: bytes | None  # None: a delete marker
    last_modified: datetime
    lock_mode: str | None = None
    retain_until: datetime | None = None
    legal_hold: bool = False
    noncurrent_since: datetime | None = None  # when a newer version was added
    storage_class: str = storage_classes.STANDARD

    @property
    def is_delete_marker(self) -> bool:
        return self.body is None

    @property
    def size(self) -> int:
        return 0 if self.body is None else len(self.body)

    def locked_at(self, moment: datetime) -> bool:
        return self.retain_until is not None and self.retain_until > moment


@dataclass
class LifecycleReport:
    markers_added: int = 0
    versions_expired: int = 0
    markers_removed: int = 0
    transitioned: int = 0


class MemoryStore:
    """A versioned bucket with Object Lock, in memory, thread-safe."""

    def __init__(self, clock: FakeClock, bucket: str = "memory-bucket", prefix: str = "",
                 object_lock: bool = True, default_mode: str | None = None,
                 default_days: int | None = None, cold_after: int | None = None):
        if (default_mode is None) != (default_days is None):
            raise ValueError("default retention needs both mode and days")
        self.clock = clock
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.object_lock = object_lock
        self.default_mode = default_mode
        self.default_days = default_days
        self.cold_after = cold_after
        self.requests: Counter[str] = Counter()
        self.bytes_up = 0
        self.bytes_down = 0
        self._keys: dict[str, list[StoredVersion]] = {}  # oldest first; the last is current
        self._serial = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------ helpers
    @property
    def location(self) -> str:
        return f"mem://{self.bucket}/{self.prefix + '/' if self.prefix else ''}"

    def _count(self, operation: str) -> None:
        self.requests[operation] += 1

    def _new_version_id(self) -> str:
        self._serial += 1
        # opaque like S3's, but sortable and readable in failure messages
        return f"v{self._serial:07d}.{(self._serial * 2654435761) % 2**32:08x}"

    def _find(self, what: str, key: str, version_id: str) -> tuple[list[StoredVersion], int]:
        versions = self._keys.get(key, [])
        for index, version in enumerate(versions):
            if version.version_id == version_id:
                return versions, index
        raise NoSuchVersion(f"{what} {key}: no such object version ({version_id})")

    def _readable(self, what: str, key: str, version_id: str | None) -> StoredVersion:
        if version_id is None or version_id == "null":
            versions = self._keys.get(key)
            if not versions or versions[-1].is_delete_marker:
                raise NoSuchVersion(f"{what} {key}: no such key")
            return versions[-1]
        versions, index = self._find(what, key, version_id)
        version = versions[index]
        if version.is_delete_marker:
            raise StoreError(f"{what} {key}: MethodNotAllowed (version {version_id} is a "
                             "delete marker)")
        return version

    @staticmethod
    def _check_lock(what: str, lock: ObjectLock) -> None:
        if lock.mode not in LOCK_MODES:
            raise StoreError(f"{what}: InvalidArgument (unknown lock mode {lock.mode!r})")
        if lock.retain_until.tzinfo is None:
            raise StoreError(f"{what}: InvalidArgument (retain-until without a time zone)")

    # ------------------------------------------------------------ protocol
    def put(self, key: str, body: bytes | bytearray, lock: ObjectLock | None,
            legal_hold: bool = False) -> PutResult:
        what = f"PUT {key}"
        if not isinstance(body, (bytes, bytearray)):
            raise TypeError("body must be bytes")
        with self._lock:
            self._count("PutObject")
            now = self.clock()
            if not key or key.startswith("/"):
                raise StoreError(f"{what}: InvalidArgument (bad key)")
            if (lock is not None or legal_hold) and not self.object_lock:
                raise StoreError(f"{what}: InvalidRequest (bucket is missing Object Lock "
                                 "configuration)")
            mode = until = None
            if lock is not None:
                self._check_lock(what, lock)
                if lock.retain_until <= now:
                    raise StoreError(f"{what}: InvalidArgument (the retain until date must be "
                                     "in the future)")
                mode, until = lock.mode, lock.retain_until
            elif self.object_lock and self.default_mode is not None:
                mode, until = self.default_mode, now + timedelta(days=self.default_days or 0)
            versions = self._keys.setdefault(key, [])
            if versions and versions[-1].noncurrent_since is None:
                versions[-1] = replace(versions[-1], noncurrent_since=now)
            version = StoredVersion(key, self._new_version_id(), bytes(body), now, mode, until,
                                    bool(legal_hold))
            versions.append(version)
            self.bytes_up += len(body)
            return PutResult(key=key, version_id=version.version_id, size=len(body))

    def put_once(self, key: str, body: bytes, lock: ObjectLock | None,
                 legal_hold: bool = False) -> PutResult:
        return self.put(key, body, lock, legal_hold)  # no transport here: nothing to retry

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        what = f"GET {key}"
        with self._lock:
            self._count("GetObject")
            version = self._readable(what, key, version_id)
            if version.storage_class in storage_classes.ARCHIVAL_CLASSES:
                raise StoreError(f"{what}: InvalidObjectState (the object is in "
                                 f"{version.storage_class}: restore it first)")
            body = version.body
            assert body is not None
            if byte_range is not None:
                first, last = byte_range
                if first < 0 or last < first:  # a caller's mistake, as in S3Store
                    raise ValueError(f"{what}: invalid byte range {byte_range!r}")
                if first >= len(body):
                    raise StoreError(f"{what}: InvalidRange (bytes={first}-{last} of "
                                     f"{len(body)})")
                body = body[first:last + 1]  # S3 clamps the end to the object
            self.bytes_down += len(body)
            return body

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo:
        with self._lock:
            self._count("HeadObject")
            version = self._readable(f"HEAD {key}", key, version_id)
            return ObjectInfo(key=key, version_id=version.version_id, size=version.size,
                              lock_mode=version.lock_mode, retain_until=version.retain_until,
                              legal_hold=version.legal_hold,
                              last_modified=version.last_modified,
                              storage_class=version.storage_class)

    def extend_retention(self, key: str, version_id: str, lock: ObjectLock) -> None:
        what = f"PutObjectRetention {key}"
        with self._lock:
            self._count("PutObjectRetention")
            now = self.clock()
            if not self.object_lock:
                raise StoreError(f"{what}: InvalidRequest (bucket is missing Object Lock "
                                 "configuration)")
            self._check_lock(what, lock)
            versions, index = self._find(what, key, version_id)
            current = versions[index]
            if current.is_delete_marker:
                raise StoreError(f"{what}: MethodNotAllowed (a delete marker has no lock)")
            if lock.retain_until <= now:
                raise StoreError(f"{what}: InvalidArgument (the retain until date must be in "
                                 "the future)")
            if current.locked_at(now):
                assert current.retain_until is not None
                if current.lock_mode != lock.mode:
                    # AWS: COMPLIANCE never becomes GOVERNANCE, and GOVERNANCE becomes
                    # COMPLIANCE only with s3:BypassGovernanceRetention, which no one has here
                    raise StoreError(f"{what}: AccessDenied (a {current.lock_mode} lock in force "
                                     f"cannot become {lock.mode})")
                if lock.retain_until < current.retain_until:
                    raise StoreError(f"{what}: AccessDenied (a {current.lock_mode} lock in force "
                                     "cannot be shortened)")
            versions[index] = replace(current, lock_mode=lock.mode,
                                      retain_until=lock.retain_until)

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        what = f"PutObjectLegalHold {key}"
        with self._lock:
            self._count("PutObjectLegalHold")
            if not self.object_lock:
                raise StoreError(f"{what}: InvalidRequest (bucket is missing Object Lock "
                                 "configuration)")
            versions, index = self._find(what, key, version_id)
            if versions[index].is_delete_marker:
                raise StoreError(f"{what}: MethodNotAllowed (version is a delete marker)")
            versions[index] = replace(versions[index], legal_hold=bool(on))

    def list_versions(self, prefix: str) -> Iterator[VersionEntry]:
        with self._lock:
            self._count("ListObjectVersions")
            rows = []
            for key in sorted(k for k in self._keys if k.startswith(prefix)):
                versions = self._keys[key]
                for position, version in enumerate(reversed(versions)):  # newest first, like S3
                    rows.append(VersionEntry(key=key, version_id=version.version_id,
                                             size=version.size,
                                             last_modified=version.last_modified,
                                             is_latest=position == 0,
                                             is_delete_marker=version.is_delete_marker,
                                             storage_class=None if version.is_delete_marker
                                             else version.storage_class))
        yield from rows

    def list_keys(self, prefix: str) -> Iterator[VersionEntry]:
        with self._lock:
            self._count("ListObjectsV2")
            rows = []
            for key in sorted(k for k in self._keys if k.startswith(prefix)):
                current = self._keys[key][-1]
                if current.is_delete_marker:
                    continue
                rows.append(VersionEntry(key=key, version_id="", size=current.size,
                                         last_modified=current.last_modified, is_latest=True))
        yield from rows

    def delete_version(self, key: str, version_id: str) -> None:
        what = f"DELETE {key}"
        with self._lock:
            self._count("DeleteObject")
            now = self.clock()
            try:
                versions, index = self._find(what, key, version_id)
            except NoSuchVersion:
                return  # S3 answers 204: nothing to delete is not a failure
            version = versions[index]
            if not version.is_delete_marker:
                if version.legal_hold:
                    raise StoreError(f"{what}: AccessDenied (version {version_id} is under a "
                                     "legal hold)")
                if version.locked_at(now):
                    raise StoreError(f"{what}: AccessDenied (version {version_id} is locked "
                                     f"({version.lock_mode}) until {version.retain_until})")
            self._remove(key, index)

    def bucket_lock_config(self) -> BucketLockConfig:
        with self._lock:
            self._count("GetObjectLockConfiguration")
            return BucketLockConfig(enabled=self.object_lock, default_mode=self.default_mode,
                                    default_days=self.default_days, server_time=self.clock())

    def usage(self) -> StoreUsage:
        with self._lock:
            return StoreUsage(requests=dict(self.requests), bytes_up=self.bytes_up,
                              bytes_down=self.bytes_down)

    def snapshot(self) -> dict[str, Any]:
        """The same shape as ``CountingStore.snapshot``."""
        return self.usage().to_json()

    # ------------------------------------------------------------ lifecycle
    def _remove(self, key: str, index: int) -> None:
        versions = self._keys[key]
        del versions[index]
        if not versions:
            del self._keys[key]
        elif index == len(versions):  # the current version went: the previous is current
            versions[-1] = replace(versions[-1], noncurrent_since=None)

    def lifecycle_day(self) -> LifecycleReport:
        """One run of the bucket's lifecycle rules at the clock's time."""
        report = LifecycleReport()
        with self._lock:
            now = self.clock()
            if self.cold_after is not None:
                report.transitioned = self._transition_data(now, self.cold_after)
            # (a) Expiration Days=1: a delete marker on current versions a day old
            for key, versions in self._keys.items():
                current = versions[-1]
                if not current.is_delete_marker and now - current.last_modified >= DAY:
                    versions[-1] = replace(current, noncurrent_since=now)
                    versions.append(StoredVersion(key, self._new_version_id(), None, now))
                    report.markers_added += 1
            # (b) NoncurrentVersionExpiration NoncurrentDays=1, never through a lock or hold
            for key in list(self._keys):
                versions = self._keys[key]
                for index in range(len(versions) - 2, -1, -1):
                    version = versions[index]
                    assert version.noncurrent_since is not None
                    if now - version.noncurrent_since < DAY:
                        continue
                    if not version.is_delete_marker and (version.legal_hold
                                                         or version.locked_at(now)):
                        continue
                    self._remove(key, index)
                    report.versions_expired += 1
            # (c) ExpiredObjectDeleteMarker: a delete marker that is the only version left
            for key in list(self._keys):
                versions = self._keys[key]
                if len(versions) == 1 and versions[0].is_delete_marker:
                    del self._keys[key]
                    report.markers_removed += 1
        return report

    def _transition_data(self, now: datetime, cold_after: int) -> int:
        """``lifecycle.cold_rule``: data/ versions to GLACIER_IR, current ones
        ``Days`` after they were written, non-current ones ``NoncurrentDays``
        after they stopped being current."""
        rule = lifecycle.cold_rule(cold_after)
        current_days = rule["Transitions"][0]["Days"]
        noncurrent_days = rule["NoncurrentVersionTransitions"][0]["NoncurrentDays"]
        moved = 0
        for key, versions in self._keys.items():
            if not key.startswith(rule["Filter"]["Prefix"]):
                continue
            for index, version in enumerate(versions):
                if version.is_delete_marker or version.storage_class != "STANDARD":
                    continue
                due = (now - version.last_modified >= current_days * DAY
                       if version.noncurrent_since is None
                       else now - version.noncurrent_since >= noncurrent_days * DAY)
                if due:
                    versions[index] = replace(version, storage_class=storage_classes.GLACIER_IR)
                    moved += 1
        return moved

    # ------------------------------------------------------------ test helpers
    def transition(self, key: str, version_id: str, storage_class: str) -> None:
        """Move one version to another storage class, as a lifecycle rule would."""
        with self._lock:
            versions, index = self._find(f"transition {key}", key, version_id)
            if versions[index].is_delete_marker:
                raise ValueError(f"{key}@{version_id} is a delete marker")
            versions[index] = replace(versions[index], storage_class=storage_class)

    def put_delete_marker(self, key: str) -> str:
        """What S3's DELETE without a version id does: a new current delete marker."""
        with self._lock:
            self._count("DeleteObject")
            now = self.clock()
            versions = self._keys.setdefault(key, [])
            if versions and versions[-1].noncurrent_since is None:
                versions[-1] = replace(versions[-1], noncurrent_since=now)
            marker = StoredVersion(key, self._new_version_id(), None, now)
            versions.append(marker)
            return marker.version_id

    def versions(self, prefix: str = "") -> list[StoredVersion]:
        """Every stored version (delete markers included), by key, oldest first."""
        with self._lock:
            return [v for key in sorted(self._keys) if key.startswith(prefix)
                    for v in self._keys[key]]

    def version(self, key: str, version_id: str) -> StoredVersion | None:
        with self._lock:
            for version in self._keys.get(key, []):
                if version.version_id == version_id:
                    return version
            return None
