"""Open the configured store: S3, paced if configured, wrapped in a request counter."""

from __future__ import annotations

from s3archive.config import Config
from s3archive.store.counting_store import CountingStore
from s3archive.store.base import ObjectStore
from s3archive.store.s3_store import S3Store
from s3archive.store.throttled_store import ThrottledStore


def open_store(config: Config, pool_size: int = 16) -> CountingStore:
    """S3 (with a connection for every upload at once and then some), paced to
    ``[s3] max_bandwidth`` if set, counted."""
    s3 = config.s3
    store: ObjectStore = S3Store.from_settings(s3, pool_size=max(pool_size,
                                                                 s3.max_concurrency + 4))
    if s3.max_bandwidth is not None:
        store = ThrottledStore(store, s3.max_bandwidth)
    return CountingStore(store)
