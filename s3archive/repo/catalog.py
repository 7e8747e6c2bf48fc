"""The runs in the bucket: listing, resolving a run name, loading a manifest.

Runs come from the manifest objects under ``runs/`` — every version, since
lifecycle puts delete markers on current versions after a day — never from
local state.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from s3archive.errors import ManifestError, RunNotFound, UsageError
from s3archive.format.manifest_codec import decode_manifest
from s3archive.format.model import Manifest
from s3archive.store.base import ObjectStore

log = logging.getLogger(__name__)
_RUN_KEY = re.compile(r"^runs/(?P<host>[^/]+)/(?P<run_id>[^/]+)\.jsonl\.zst$")


@dataclass(frozen=True)
class RunRef:
    host: str
    run_id: str
    key: str
    version_id: str
    size: int
    last_modified: datetime


def list_runs(store: ObjectStore, host: str | None = None) -> list[RunRef]:
    """Every run manifest version (of ``host``, or of all hosts), oldest first."""
    prefix = f"runs/{host}/" if host else "runs/"
    runs = []
    for item in store.list_versions(prefix):
        if item.is_delete_marker:
            continue
        match = _RUN_KEY.match(item.key)
        if not match:
            continue
        runs.append(RunRef(host=match["host"], run_id=match["run_id"], key=item.key,
                           version_id=item.version_id, size=item.size,
                           last_modified=item.last_modified))
    runs.sort(key=lambda r: (r.host, r.run_id, r.last_modified))
    return runs


def resolve_run(runs: list[RunRef], spec: str, host: str | None) -> RunRef:
    """A run id, a unique prefix of one, or ``latest`` (of ``host``).

    s3archive writes each run key once; should a key have several versions
    (someone else wrote to it later), the first one is the run's.
    """
    candidates = [r for r in runs if host is None or r.host == host]
    if spec == "latest":
        if not candidates:
            raise RunNotFound(f"no runs{' of host ' + host if host else ''} in the bucket")
        newest = max(r.run_id for r in candidates)
        return _original([r for r in candidates if r.run_id == newest])
    exact = [r for r in candidates if r.run_id == spec]
    matches = exact or [r for r in candidates if r.run_id.startswith(spec)]
    if not matches:
        raise RunNotFound(f"no run matches {spec!r}{' on host ' + host if host else ''}")
    if len({(r.host, r.run_id) for r in matches}) > 1:
        names = ", ".join(sorted({r.run_id for r in matches})[:5])
        raise UsageError(f"run {spec!r} is ambiguous: {names}")
    return _original(matches)


def _original(versions: list[RunRef]) -> RunRef:
    first = min(versions, key=lambda r: r.last_modified)
    if len(versions) > 1:
        log.warning("%s has %d versions; using the first one written (%s): the later ones "
                    "were not written by s3archive's run", first.key, len(versions),
                    first.version_id)
    return first


def load_manifest(store: ObjectStore, run: RunRef) -> Manifest:
    """Fetch the pinned manifest version and parse it strictly."""
    blob = store.get(run.key, run.version_id)
    manifest = decode_manifest(blob, where=f"{run.key}@{run.version_id}")
    if manifest.header.host != run.host or manifest.header.run_id != run.run_id:
        raise ManifestError(f"{run.key}: header names run {manifest.header.host}/"
                            f"{manifest.header.run_id}, not the key's")
    return manifest
