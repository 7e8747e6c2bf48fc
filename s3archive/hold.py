"""Legal hold on a run: its manifest version and every pack version it references.

A legal hold keeps an object version regardless of its retention date.
Releasing a run never releases a pack version that another run under legal
hold still references: those stay held and are reported.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from s3archive.repo.catalog import ROOT, RunRef, list_runs, load_manifest
from s3archive.errors import S3ArchiveError
from s3archive.store.base import StoreWriter


@dataclass
class HoldResult:
    run: RunRef
    on: bool
    packs_changed: int = 0
    kept: dict[str, list[str]] = field(default_factory=dict)  # pack key -> held runs needing it


def _set_all(store: StoreWriter, objects: list[tuple[str, str]], on: bool,
             workers: int) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda kv: store.set_legal_hold(kv[0], kv[1], on), objects))


def hold_run(store: StoreWriter, run: RunRef, workers: int = 8) -> HoldResult:
    """Put the manifest and every pack version it references under legal hold.

    Packs first, the manifest last: a manifest shown as held has all its data held.
    """
    manifest = load_manifest(store, run, part=ROOT)
    packs = sorted({(p.key, p.version_id) for p in manifest.packs})
    _set_all(store, packs, True, workers)
    store.set_legal_hold(run.key, run.version_id, True)
    return HoldResult(run=run, on=True, packs_changed=len(packs))


def held_runs_needing(store: StoreWriter, run: RunRef) -> dict[tuple[str, str], list[str]]:
    """Pack versions referenced by *other* runs that are under legal hold."""
    needed: dict[tuple[str, str], list[str]] = {}
    for other in list_runs(store):
        if (other.key, other.version_id) == (run.key, run.version_id):
            continue
        if not store.head(other.key, other.version_id).legal_hold:
            continue
        try:
            manifest = load_manifest(store, other, part=ROOT)
        except S3ArchiveError as err:
            raise S3ArchiveError(f"cannot tell which packs the held run {other.host}/"
                                 f"{other.run_id} needs: {err}; release refused") from None
        for pack in manifest.packs:
            needed.setdefault((pack.key, pack.version_id), []).append(
                f"{other.host}/{other.run_id}")
    return needed


def release_run(store: StoreWriter, run: RunRef, workers: int = 8) -> HoldResult:
    """Release the manifest and the pack versions no other held run references."""
    manifest = load_manifest(store, run, part=ROOT)
    needed = held_runs_needing(store, run)
    result = HoldResult(run=run, on=False)
    free = []
    for key, version in sorted({(p.key, p.version_id) for p in manifest.packs}):
        if (key, version) in needed:
            result.kept[key] = needed[(key, version)]
        else:
            free.append((key, version))
    store.set_legal_hold(run.key, run.version_id, False)
    _set_all(store, free, False, workers)
    result.packs_changed = len(free)
    return result
