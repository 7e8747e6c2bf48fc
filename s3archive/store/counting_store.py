"""A wrapper that counts requests and bytes by operation (for summaries and bench)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Iterator

from s3archive.store.base import (BucketLockConfig, DeletingStore, ObjectInfo, ObjectLock,
                                  PutResult, StoreUsage, VersionEntry)


class CountingStore:
    """Delegates to ``inner``; counts calls by S3 operation name and payload bytes.

    Has every capability of ``inner`` (a DeletingStore); hand users the
    narrowest protocol they need.
    """

    def __init__(self, inner: DeletingStore):
        self.inner = inner
        self._requests: Counter[str] = Counter()
        self._bytes_up = 0
        self._bytes_down = 0
        self._lock = threading.Lock()

    def _count(self, operation: str, up: int = 0, down: int = 0) -> None:
        with self._lock:
            self._requests[operation] += 1
            self._bytes_up += up
            self._bytes_down += down

    @property
    def location(self) -> str:
        return self.inner.location

    def put(self, key: str, body: bytes | bytearray, lock: ObjectLock | None,
            legal_hold: bool = False) -> PutResult:
        self._count("PutObject", up=len(body))
        return self.inner.put(key, body, lock, legal_hold)

    def put_once(self, key: str, body: bytes, lock: ObjectLock | None,
                 legal_hold: bool = False) -> PutResult:
        self._count("PutObject", up=len(body))
        return self.inner.put_once(key, body, lock, legal_hold)

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        data = self.inner.get(key, version_id, byte_range)
        self._count("GetObject", down=len(data))
        return data

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo:
        self._count("HeadObject")
        return self.inner.head(key, version_id)

    def extend_retention(self, key: str, version_id: str, lock: ObjectLock) -> None:
        self._count("PutObjectRetention")
        self.inner.extend_retention(key, version_id, lock)

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        self._count("PutObjectLegalHold")
        self.inner.set_legal_hold(key, version_id, on)

    def list_versions(self, prefix: str) -> Iterator[VersionEntry]:
        self._count("ListObjectVersions")
        yield from self.inner.list_versions(prefix)

    def list_keys(self, prefix: str) -> Iterator[VersionEntry]:
        self._count("ListObjectsV2")
        yield from self.inner.list_keys(prefix)

    def delete_version(self, key: str, version_id: str) -> None:
        self._count("DeleteObject")
        self.inner.delete_version(key, version_id)

    def bucket_lock_config(self) -> BucketLockConfig:
        self._count("GetObjectLockConfiguration")
        return self.inner.bucket_lock_config()

    def usage(self) -> StoreUsage:
        with self._lock:
            return StoreUsage(requests=dict(self._requests), bytes_up=self._bytes_up,
                              bytes_down=self._bytes_down)

    def snapshot(self) -> dict[str, Any]:
        """``usage()`` as JSON: {"requests": {...}, "bytes_up": n, "bytes_down": n}."""
        return self.usage().to_json()
