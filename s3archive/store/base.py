"""The object-store interface everything above S3 is written against, and its contract.

Keys are relative to the configured prefix.  Implementations: ``S3Store``
(boto3, the only data path to S3), ``CountingStore`` (a wrapper counting
requests and bytes), and the in-memory double of the test suite
(``tests/support/memory_store.py``).  ``tests/store/test_store_contract.py``
holds all of them, moto and a real S3 (Ceph RGW) to the contract below.

The interface is split by capability (as kopia splits ``Reader``/``Lister``
from ``Storage``), so the type checker shows who may do what:

* :class:`StoreReader` reads and lists: restore, verify, browse, the catalog;
* :class:`StoreWriter` also adds versions and lengthens locks: the archive
  path (archiver, assembly, chunk writer, pack lease) and ``hold``; it
  cannot delete anything;
* :class:`DeletingStore` also deletes versions: ``prune`` only.

The contract
============

Versions.  The bucket is versioned.  Every ``put`` creates a new version of
its key and returns its id; nothing ever overwrites or changes the bytes of
a version.  A reference (key, version id) therefore names the same bytes for
as long as the version exists.  Version ids are opaque strings (``"null"``
only in a bucket that was never versioned).

Locks.  A ``put`` with an :class:`ObjectLock` stores the version with that
mode (GOVERNANCE or COMPLIANCE) and retain-until (whole seconds; a store may
truncate) in one request: there is no moment at which the version exists
unlocked.  The retain-until must lie in the future, and the bucket must have
Object Lock, else :class:`~s3archive.errors.StoreError`.  A ``put`` without
a lock gets the bucket's default retention, if any.  Every PUT carries the
``Content-MD5`` of its body, which the store checks (a body corrupted on the
way is refused, never stored).  A version whose lock is in force cannot be
deleted by anyone holding the backup credentials (COMPLIANCE: by no one).

Retention only grows.  ``extend_retention`` sets a later retain-until on one
version.  A lock in force is never shortened and never weakened
(COMPLIANCE never becomes GOVERNANCE); asking for either is refused with
``StoreError`` (AccessDenied).  Callers only ever lengthen.

Legal holds.  ``set_legal_hold`` puts or lifts a hold on one version,
independent of the retention: a held version cannot be deleted and lifecycle
does not expire it, whatever its retain-until.

Delete markers.  s3archive never deletes the current version of a key; the
bucket's lifecycle does, by adding a delete marker.  A key whose newest
version is a delete marker is absent for ``get``/``head`` without a version
id and for ``list_keys``; its older versions remain readable by version id.
``get``/``head`` of a delete marker's own version id is a ``StoreError``
(AWS answers 405, RGW 404 NoSuchVersion: do not rely on which).

Listing.  ``list_versions(prefix)`` yields every version and delete marker of
the keys starting with ``prefix``, keys in ascending (byte) order; within a
key, the current one has ``is_latest``.  S3 reports versions and delete
markers of one response page in two lists, so only the order of keys (and,
among versions alone, newest first) is guaranteed, not how markers and
versions of one key interleave.  Paging is the implementation's business:
the iterator yields everything.  ``list_keys(prefix)`` yields the keys whose
current version is not a delete marker, in ascending order, with the
current version's size and time (``version_id`` is empty: S3's ListObjectsV2
does not report it).

Reads.  ``get(key)`` reads the current version, ``get(key, version_id)`` that
version.  ``byte_range=(first, last)`` is inclusive at both ends, with
``0 <= first <= last`` (else ``ValueError``: a caller's mistake); a ``last``
beyond the end is clamped to the end, as HTTP ranges are; a ``first`` at or
beyond the end is a ``StoreError`` (InvalidRange).  What ``get`` returns is
the whole body of the response, checked against the length the response
announced (and, for a whole-object read, against the version's MD5 ETag
where the store gives one): a body that broke off, came back short or
garbled on the way is retried, never returned.

Errors.  Every failure is a :class:`~s3archive.errors.StoreError` naming the
operation and the key, with two subclasses a caller may act on:

* :class:`~s3archive.errors.NoSuchVersion`: the key or the version does not
  exist (never written, deleted, expired by lifecycle) or the key's current
  version is a delete marker.  A fact about the bucket: retrying does not
  help.
* :class:`~s3archive.errors.TransportError`: the request did not complete
  after the implementation's retries (connection refused or reset, a body
  that broke off or came back short, time-outs, the store answering 5xx or
  SlowDown).  It says nothing about the stored data.

Data that came back whole but does not match its hash is not a store error:
the readers above raise :class:`~s3archive.errors.IntegrityError`.

Threads.  Implementations are thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Mapping, Protocol


@dataclass(frozen=True)
class ObjectLock:
    """What a PUT or a retention update asks for."""

    mode: str  # "GOVERNANCE" | "COMPLIANCE"
    retain_until: datetime


@dataclass(frozen=True)
class PutResult:
    key: str
    version_id: str
    size: int


@dataclass(frozen=True)
class ObjectInfo:
    """What ``head`` reports about one object version."""

    key: str
    version_id: str
    size: int
    lock_mode: str | None
    retain_until: datetime | None
    legal_hold: bool
    last_modified: datetime | None = None
    storage_class: str | None = None  # None: the store does not say (S3: STANDARD)


@dataclass(frozen=True)
class VersionEntry:
    """One row of a version listing."""

    key: str
    version_id: str
    size: int
    last_modified: datetime
    is_latest: bool
    is_delete_marker: bool = False
    storage_class: str | None = None  # None: the store does not say (S3: STANDARD)


@dataclass(frozen=True)
class BucketLockConfig:
    enabled: bool
    default_mode: str | None = None
    default_days: int | None = None
    default_years: int | None = None
    server_time: datetime | None = None  # the store's clock when it answered (``Date``)


@dataclass(frozen=True)
class StoreUsage:
    """Requests (by S3 operation name) and payload bytes a store has counted so far."""

    requests: Mapping[str, int]
    bytes_up: int
    bytes_down: int

    def to_json(self) -> dict[str, Any]:
        return {"requests": dict(sorted(self.requests.items())),
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down}


class StoreReader(Protocol):
    """Reads and lists versions; changes nothing.  See the module's contract."""

    @property
    def location(self) -> str:
        """``s3://bucket/prefix`` for messages."""
        ...

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        """The version's bytes (the current version without ``version_id``).

        ``byte_range`` is (first, last), inclusive; ``last`` is clamped to the
        end.  Raises NoSuchVersion, TransportError, StoreError.
        """
        ...

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo:
        """Size, lock and legal hold of one version.  Raises as ``get``."""
        ...

    def list_versions(self, prefix: str) -> Iterator[VersionEntry]:
        """Every version and delete marker under ``prefix``, keys ascending."""
        ...

    def list_keys(self, prefix: str) -> Iterator[VersionEntry]:
        """Current objects only (no delete markers, no older versions), keys ascending."""
        ...

    def bucket_lock_config(self) -> BucketLockConfig: ...

    def usage(self) -> StoreUsage | None:
        """Requests and bytes counted so far, or None when this store does not count."""
        ...


class StoreWriter(StoreReader, Protocol):
    """Adds versions and lengthens locks; never deletes (the archive path)."""

    def put(self, key: str, body: bytes | bytearray, lock: ObjectLock | None,
            legal_hold: bool = False) -> PutResult:
        """A new version of ``key`` holding ``body``, locked as asked, in one request."""
        ...

    def put_once(self, key: str, body: bytes, lock: ObjectLock | None,
                 legal_hold: bool = False) -> PutResult:
        """``put`` in one attempt, without transport retries.

        For a PUT whose blind retry would do harm: after a lost
        acknowledgement the object may exist, and a retry adds a version.
        The caller looks before it retries (the run's commit point).
        """
        ...

    def extend_retention(self, key: str, version_id: str, lock: ObjectLock) -> None:
        """Lengthen one version's lock; shortening or weakening is refused (StoreError)."""
        ...

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None: ...


class DeletingStore(StoreWriter, Protocol):
    """Also deletes versions: ``prune`` only, never a run."""

    def delete_version(self, key: str, version_id: str) -> None:
        """Remove one version for good.

        Refused (StoreError) while its lock is in force or it is under a legal
        hold; delete markers can always be removed.  Removing a version that
        does not exist succeeds (S3 answers 204).
        """
        ...


# The full store, as ``open_store`` returns it.  Annotate users with the
# narrowest capability they need instead.
ObjectStore = DeletingStore
