"""Garbage collection for stores without lifecycle rules.

The bucket's lifecycle rules are the normal garbage collector.  Where a store
has none, ``prune`` does their job, and no more: it deletes object versions
whose lock has lapsed, that carry no legal hold, and that no live run needs.
A run is live while its manifest version is locked or held; every pack
version a live manifest references is kept whatever its own lock says.  A
version without any lock is never deleted, and a bucket without Object Lock
is refused.
Versions still locked cannot be deleted anyway (S3 refuses), so a run in
progress — whose new packs are locked but not yet referenced — is safe.

It needs credentials that may delete (never the backup role's).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from s3archive.repo.catalog import INDEX_PREFIX, PACK_PREFIXES, ROOT, list_runs, load_manifest
from s3archive.clock import Clock, utc_now
from s3archive.errors import ManifestError, NoSuchVersion, S3ArchiveError, UsageError
from s3archive.store.base import DeletingStore, ObjectInfo, VersionEntry

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    live_runs: int = 0
    lapsed_runs: int = 0
    kept_versions: int = 0
    deleted: list[tuple[str, str]] = field(default_factory=list)
    deleted_bytes: int = 0
    markers_removed: int = 0
    problems: list[str] = field(default_factory=list)
    dry_run: bool = False


def _lapsed(info: ObjectInfo, now: datetime) -> bool:
    """A lock that was there and has run out.  A version without any lock is
    never taken for lapsed: nothing says how long it is needed."""
    return (not info.legal_hold and info.retain_until is not None
            and info.retain_until <= now)


def prune(store: DeletingStore, *, dry_run: bool = False, clock: Clock = utc_now,
          workers: int = 8) -> PruneResult:
    if not store.bucket_lock_config().enabled:
        raise UsageError(f"{store.location} has no Object Lock: prune tells live runs from "
                         "lapsed ones by their locks, and refuses to guess without them")
    now = clock()
    result = PruneResult(dry_run=dry_run)
    needed: set[tuple[str, str]] = set()
    with ThreadPoolExecutor(workers) as pool:
        runs = list_runs(store)
        heads = list(pool.map(lambda r: store.head(r.key, r.version_id), runs))
        lapsed_manifests = []
        for run, info in zip(runs, heads):
            if _lapsed(info, now):
                result.lapsed_runs += 1
                lapsed_manifests.append((run.key, run.version_id, info.size))
                continue
            result.live_runs += 1
            needed.add((run.key, run.version_id))
            try:
                manifest = load_manifest(store, run, part=ROOT)
            except ManifestError as err:
                # a live manifest we cannot read: keep every pack rather than guess
                raise S3ArchiveError(f"not pruning: live run {run.key} is unreadable: {err}")
            needed.update((p.key, p.version_id) for p in manifest.packs)
        versions = [v for prefix in (*PACK_PREFIXES, INDEX_PREFIX)
                    for v in store.list_versions(prefix)
                    if not v.is_delete_marker]
        candidates = [v for v in versions if (v.key, v.version_id) not in needed]
        result.kept_versions = len(versions) - len(candidates)
        infos = list(pool.map(lambda v: _head_or_none(store, v), candidates))
        doomed = [(v.key, v.version_id, v.size) for v, info in zip(candidates, infos)
                  if info is not None and _lapsed(info, now)]
        doomed += lapsed_manifests
        if not dry_run:
            list(pool.map(lambda item: _delete(store, item, result), doomed))
        else:
            result.deleted = [(k, v) for k, v, _ in doomed]
            result.deleted_bytes = sum(size for _, _, size in doomed)
    if not dry_run:
        result.markers_removed = _remove_lonely_markers(store)
    return result


def _head_or_none(store: DeletingStore, version: VersionEntry) -> ObjectInfo | None:
    try:
        return store.head(version.key, version.version_id)
    except NoSuchVersion:
        return None


def _delete(store: DeletingStore, item: tuple[str, str, int], result: PruneResult) -> None:
    key, version_id, size = item
    try:
        store.delete_version(key, version_id)
    except NoSuchVersion:
        return
    except S3ArchiveError as err:
        result.problems.append(f"{key}@{version_id}: {err}")
        return
    result.deleted.append((key, version_id))
    result.deleted_bytes += size


def _remove_lonely_markers(store: DeletingStore) -> int:
    """Delete markers that hide nothing any more (lifecycle's ExpiredObjectDeleteMarker)."""
    by_key: dict[str, list[VersionEntry]] = {}
    for item in store.list_versions(""):
        by_key.setdefault(item.key, []).append(item)
    removed = 0
    for key, items in by_key.items():
        if all(item.is_delete_marker for item in items):
            for item in items:
                store.delete_version(key, item.version_id)
                removed += 1
    return removed
