"""A wrapper that caps the average upload rate (``[s3] max_bandwidth``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Iterator

from s3archive.store.base import (BucketLockConfig, ObjectInfo, ObjectLock, ObjectStore,
                                  PutResult, VersionEntry)


class Pacer:
    """Spaces out transfers so that, over any run of them, bytes / seconds
    stays at most ``rate``: a transfer of n bytes books n / rate seconds, and
    the next one starts when the booked time has passed."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._free_at = 0.0
        self._lock = threading.Lock()

    def take(self, amount: int) -> float:
        """Wait for the turn of ``amount`` bytes; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._free_at)
            self._free_at = start + amount / self.rate
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return wait


class ThrottledStore:
    """Delegates to ``inner``; every PUT body waits for its turn at ``rate``.
    (Every method of ``ObjectStore`` is spelled out, as in CountingStore, so
    the type checker notices one this wrapper lacks.)"""

    def __init__(self, inner: ObjectStore, rate: float):
        self.inner = inner
        self.pacer = Pacer(rate)

    @property
    def location(self) -> str:
        return self.inner.location

    def put(self, key: str, body: bytes, lock: ObjectLock | None,
            legal_hold: bool = False) -> PutResult:
        self.pacer.take(len(body))
        return self.inner.put(key, body, lock, legal_hold)

    def put_once(self, key: str, body: bytes, lock: ObjectLock | None,
                 legal_hold: bool = False) -> PutResult:
        self.pacer.take(len(body))
        return self.inner.put_once(key, body, lock, legal_hold)

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        return self.inner.get(key, version_id, byte_range)

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo:
        return self.inner.head(key, version_id)

    def extend_retention(self, key: str, version_id: str, lock: ObjectLock) -> None:
        self.inner.extend_retention(key, version_id, lock)

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        self.inner.set_legal_hold(key, version_id, on)

    def list_versions(self, prefix: str) -> Iterator[VersionEntry]:
        return self.inner.list_versions(prefix)

    def list_keys(self, prefix: str) -> Iterator[VersionEntry]:
        return self.inner.list_keys(prefix)

    def delete_version(self, key: str, version_id: str) -> None:
        self.inner.delete_version(key, version_id)

    def bucket_lock_config(self) -> BucketLockConfig:
        return self.inner.bucket_lock_config()
