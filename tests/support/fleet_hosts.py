"""The store as one backup host of a fleet sees it (tests of cross-host deduplication)."""

from __future__ import annotations

from typing import Any

from s3archive.errors import StoreError
from s3archive.store.base import ObjectLock
from support.memory_store import MemoryStore
from support.store_wrapper import StoreWrapper


class HostView(StoreWrapper):
    """The store as one backup host sees it."""

    def __init__(self, inner: MemoryStore, refuse_extensions_of: set[str] | None = None):
        self.inner = inner
        self.lists: list[str] = []
        self.refuse = refuse_extensions_of if refuse_extensions_of is not None else set()

    def delete_version(self, key: str, version_id: str) -> None:
        raise AssertionError(f"an archive run deleted {key}")

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        if key.startswith(("data/", "packs/")):
            raise StoreError(f"GET {key}: AccessDenied")
        return self.inner.get(key, version_id, byte_range)

    def head(self, key: str, version_id: str | None = None) -> Any:
        if key.startswith(("data/", "packs/")):
            raise StoreError(f"HEAD {key}: AccessDenied")
        return self.inner.head(key, version_id)

    def extend_retention(self, key: str, version_id: str, lock: ObjectLock) -> None:
        if key in self.refuse:
            raise StoreError(f"PutObjectRetention {key}: AccessDenied")
        self.inner.extend_retention(key, version_id, lock)

    def list_keys(self, prefix: str):  # type: ignore[no-untyped-def]
        self.lists.append(prefix)
        return self.inner.list_keys(prefix)

    def list_versions(self, prefix: str):  # type: ignore[no-untyped-def]
        self.lists.append(prefix)
        return self.inner.list_versions(prefix)
