"""Open the configured store: S3, wrapped in a request counter."""

from __future__ import annotations

from s3archive.config import Config
from s3archive.store.counting_store import CountingStore
from s3archive.store.s3_store import S3Store


def open_store(config: Config, pool_size: int = 16) -> CountingStore:
    return CountingStore(S3Store.from_settings(config.s3, pool_size=pool_size))
