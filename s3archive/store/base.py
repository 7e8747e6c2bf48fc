"""The object-store interface everything above S3 is written against.

Keys are relative to the configured prefix.  Implementations: ``S3Store``
(boto3, the only data path to S3), ``CountingStore`` (a wrapper counting
requests and bytes), and the in-memory double in the test suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterator, Protocol


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


@dataclass(frozen=True)
class VersionEntry:
    """One row of a version listing."""

    key: str
    version_id: str
    size: int
    last_modified: datetime
    is_latest: bool
    is_delete_marker: bool = False


@dataclass(frozen=True)
class BucketLockConfig:
    enabled: bool
    default_mode: str | None = None
    default_days: int | None = None
    default_years: int | None = None
    server_time: datetime | None = None  # the store's clock when it answered (``Date``)


class ObjectStore(Protocol):
    """Versioned object storage with Object Lock. Implementations are thread-safe."""

    def put(self, key: str, body: bytes, lock: ObjectLock | None,
            legal_hold: bool = False) -> PutResult: ...

    def put_once(self, key: str, body: bytes, lock: ObjectLock | None,
                 legal_hold: bool = False) -> PutResult:
        """``put`` in one attempt, without transport retries.

        For a PUT whose blind retry would do harm: after a lost
        acknowledgement the object may exist, and a retry adds a version.
        The caller looks before it retries (the run's commit point).
        """
        ...

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        """The object's bytes; ``byte_range`` is (first, last), inclusive."""
        ...

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo: ...

    def extend_retention(self, key: str, version_id: str, lock: ObjectLock) -> None: ...

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None: ...

    def list_versions(self, prefix: str) -> Iterator[VersionEntry]: ...

    def list_keys(self, prefix: str) -> Iterator[VersionEntry]:
        """Current objects only (no delete markers, no older versions)."""
        ...

    def delete_version(self, key: str, version_id: str) -> None:
        """Remove one version (``prune`` only; never used by a run)."""
        ...

    def bucket_lock_config(self) -> BucketLockConfig: ...

    @property
    def location(self) -> str:
        """``s3://bucket/prefix`` for messages."""
        ...
