"""The commit point: the manifest PUT, idempotent.

A PUT whose acknowledgement is lost (the request reached the store, the
answer did not come back) may well have written the manifest; a blind retry
would write a second version of the run key, which readers rightly treat as
suspect.  So the manifest is PUT in single attempts (``put_once``: no
transport retries underneath), and before every retry, and once more after
the last, the writer lists the versions of its run key and adopts one whose
bytes are exactly its manifest.  The run key carries a random suffix
(format/run_id.py), so such a version is this run's own PUT.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from s3archive.errors import StoreError
from s3archive.store.base import ObjectLock, StoreWriter, PutResult

log = logging.getLogger(__name__)
RETRY_DELAYS_S = (1.0, 4.0, 10.0)  # between the attempts of the commit PUT


def commit_manifest(store: StoreWriter, key: str, blob: bytes, lock: ObjectLock | None,
                    legal_hold: bool, sleep: Callable[[float], None] = time.sleep) -> PutResult:
    """PUT the manifest once, however many acknowledgements are lost."""
    try:
        return store.put_once(key, blob, lock, legal_hold=legal_hold)
    except StoreError as err:
        problem: StoreError = err
    for delay in RETRY_DELAYS_S:
        log.warning("%s; looking whether the manifest arrived before trying again", problem)
        sleep(delay)
        try:
            found = find_own_version(store, key, blob)
        except StoreError as err:  # cannot tell: a blind PUT might duplicate it
            problem = err
            continue
        if found is not None:
            return found
        try:
            return store.put_once(key, blob, lock, legal_hold=legal_hold)
        except StoreError as err:
            problem = err
    found = find_own_version(store, key, blob)
    if found is not None:
        return found
    raise StoreError(f"the manifest {key} was not written: {problem}")


def find_own_version(store: StoreWriter, key: str, blob: bytes) -> PutResult | None:
    """A version of ``key`` whose bytes are exactly ``blob`` (the oldest), or None."""
    candidates = [v for v in store.list_versions(key)
                  if v.key == key and not v.is_delete_marker and v.size == len(blob)]
    for version in sorted(candidates, key=lambda v: v.last_modified):
        if store.get(key, version.version_id) == blob:
            log.info("the manifest %s arrived (version %s): the run is committed",
                     key, version.version_id)
            return PutResult(key=key, version_id=version.version_id, size=len(blob))
    return None
