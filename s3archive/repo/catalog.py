"""The runs in the bucket: listing, resolving a run name, loading a manifest.

Runs come from the manifest objects under ``runs/`` — every version, since
lifecycle puts delete markers on current versions after a day — never from
local state.

A run's time is the store's: the LastModified of its manifest key's first
version, which no client can choose.  The run id names the run's start by the
host's clock; a run whose id claims a start later than that store time plus
``RUN_ID_SKEW`` (a run id "from the future", e.g. a planted
``runs/victim/29991231T000000Z``) has an untrusted time: ``runs`` flags it,
``verify`` reports it, and ``latest`` never resolves to it.  An id earlier
than the store time is normal (the manifest is written when the run ends,
hours after its start) and never wins ``latest`` over a later honest run.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import zstandard

from s3archive.errors import ManifestError, RunNotFound, UsageError
from s3archive.format import run_root
from s3archive.format.limits import LIMITS, ManifestLimits
from s3archive.format.manifest_codec import decode_manifest
from s3archive.format.model import Header, Manifest
from s3archive.repo.run_tree import RunTree
from s3archive.crypto.keys import Identity
from s3archive.store.base import StoreReader

log = logging.getLogger(__name__)
_RUN_KEY = re.compile(r"^runs/(?P<host>[^/]+)/(?P<run_id>[^/]+)\.jsonl\.zst$")
_RUN_ID_TIME = re.compile(r"^(\d{8}T\d{6}Z)")
RUN_ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# How far a host's clock may run ahead of the store's before its run ids are
# not believed.  A host whose clock is further ahead fails its run instead.
RUN_ID_SKEW = timedelta(hours=1)


@dataclass(frozen=True)
class RunRef:
    host: str
    run_id: str
    key: str
    version_id: str
    size: int
    last_modified: datetime  # the store's time of this version

    def time_problem(self) -> str | None:
        """Why this version's run id cannot be believed, or None."""
        return run_id_time_problem(self.run_id, self.last_modified)


def run_id_time(run_id: str) -> datetime | None:
    """The start time a run id names (its leading ``YYYYMMDDTHHMMSSZ``; what
    follows, such as a uniqueness suffix, is ignored), or None."""
    match = _RUN_ID_TIME.match(run_id)
    if not match:
        return None
    try:
        return datetime.strptime(match[1], RUN_ID_TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def run_id_time_problem(run_id: str, written: datetime) -> str | None:
    """Why ``run_id`` disagrees with the store's time ``written``, or None
    (also for an id that names no time: such a run is never ``latest``)."""
    named = run_id_time(run_id)
    if named is not None and named > written + RUN_ID_SKEW:
        return (f"run id {run_id} names a start after the store wrote the manifest "
                f"({written.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC) by more than "
                f"{_hours(RUN_ID_SKEW)}: not written by an honest run")
    return None


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h"


def list_runs(store: StoreReader, host: str | None = None) -> list[RunRef]:
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
        newest = latest_run(candidates)
        if newest is None:
            raise RunNotFound(f"no run{' of host ' + host if host else ''} has a trustworthy "
                              "time (see `runs`); name one by its id")
        return newest
    exact = [r for r in candidates if r.run_id == spec]
    matches = exact or [r for r in candidates if r.run_id.startswith(spec)]
    if not matches:
        raise RunNotFound(f"no run matches {spec!r}{' on host ' + host if host else ''}")
    if len({(r.host, r.run_id) for r in matches}) > 1:
        names = ", ".join(sorted({r.run_id for r in matches})[:5])
        raise UsageError(f"run {spec!r} is ambiguous: {names}")
    return _original(matches)


def latest_run(runs: list[RunRef]) -> RunRef | None:
    """The first version of the newest run whose id names a start time that
    agrees with the store's time (see the module doc); None when there is
    none.  Runs whose id is in the future of their first version are skipped
    with a warning; ids that name no time (never written by s3archive) are
    reachable only by name."""
    firsts: dict[tuple[str, str], list[RunRef]] = {}
    for run in runs:
        firsts.setdefault((run.host, run.run_id), []).append(run)
    trusted = []
    for versions in firsts.values():
        first = min(versions, key=lambda r: r.last_modified)
        problem = first.time_problem()
        if problem is not None:
            log.warning("%s is not a candidate for 'latest': %s", first.key, problem)
        elif run_id_time(first.run_id) is not None:  # s3archive's ids always name one
            trusted.append(versions)
    if not trusted:
        return None
    return _original(max(trusted, key=lambda v: (v[0].run_id, v[0].host)))


def first_versions(runs: list[RunRef]) -> list[RunRef]:
    """One ref per run: its key's first version (the run's own; later versions
    were not written by its run), in the order of ``runs``' first appearance."""
    first: dict[tuple[str, str], RunRef] = {}
    for run in runs:
        known = first.get((run.host, run.run_id))
        if known is None or run.last_modified < known.last_modified:
            first[(run.host, run.run_id)] = run
    return list(first.values())


def _original(versions: list[RunRef]) -> RunRef:
    first = min(versions, key=lambda r: r.last_modified)
    if len(versions) > 1:
        log.warning("%s has %d versions; using the first one written (%s): the later ones "
                    "were not written by s3archive's run", first.key, len(versions),
                    first.version_id)
    return first


def peek_format(blob: bytes, where: str) -> int | None:
    """The ``format`` named by the first line of a run object (checked in full later)."""
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob),
                                                            read_across_frames=True)
        head = reader.read(64 << 10)
    except zstandard.ZstdError as err:
        raise ManifestError(f"{where}: not a zstd stream: {err}") from None
    found = re.match(rb'\{"type":"header","format":(\d{1,3}),', head)
    return int(found.group(1)) if found else None


def open_tree(store: StoreReader, run: RunRef, blob: bytes | None = None,
              whole_packs: bool = False, identities: list[Identity] | None = None) -> RunTree:
    """A format-2 run, its root object read and checked; nodes are read on demand."""
    where = f"{run.key}@{run.version_id}"
    if blob is None:
        if run.size > run_root.ROOT_LIMITS.stored_bytes:
            raise ManifestError(f"{where}: root object is larger than "
                                f"{run_root.ROOT_LIMITS.stored_bytes} bytes ({run.size})")
        blob = store.get(run.key, run.version_id)
    root = run_root.decode_root(blob, where)
    check_names(root.header, run)
    return RunTree(store, root, where, whole_packs, identities)


ALL, RECORD, ROOT = "all", "record", "root"
# where packs live: format 1, then format 2's data and metadata
PACK_PREFIXES = ("packs/", "data/", "meta/")
INDEX_PREFIX = "index/"  # group index objects (FORMAT.md part 2, 16)


def load_manifest(store: StoreReader, run: RunRef, limits: ManifestLimits = LIMITS,
                  paths: list[bytes] | None = None, part: str = ALL,
                  identities: list[Identity] | None = None) -> Manifest:
    """Fetch the pinned manifest version and parse it strictly, within ``limits``.

    A format-2 run is read from its trees: whole, or with ``paths`` only the
    ancestors and subtrees of those paths (and the files their hardlinks
    name) — a format-1 manifest is always read whole.  ``part`` reads less of a
    format-2 run: ``record`` no entries (header, pack table, snapshots,
    warnings: what ``show`` needs), ``root`` only the root object (header,
    pack table, trailer counts: what ``runs``, ``status``, ``hold`` and
    ``prune`` need; no metadata pack is read, so the audit role can).

    The listed size is checked before the GET, so an oversized object is never
    downloaded; the decoder checks the body again (a listing is no promise).
    """
    blob, where = fetch_run_object(store, run, limits)
    if peek_format(blob, where) == run_root.FORMAT:
        if part == ROOT:  # no key needed: the root object holds nothing secret
            root = run_root.decode_root(blob, where)
            manifest = Manifest(header=root.header, packs=root.packs, entries=[],
                                snapshots=[], trailer=root.trailer)
        else:
            tree = open_tree(store, run, blob, whole_packs=paths is None and part == ALL,
                             identities=identities)
            manifest = tree.head(with_record=True) if part == RECORD else tree.manifest(paths)
    else:
        manifest = decode_manifest(blob, where=where, limits=limits)
    check_names(manifest.header, run)
    return manifest


def open_entries(store: StoreReader, run: RunRef, identities: list[Identity] | None = None
                 ) -> Manifest | RunTree:
    """A run to read entry by entry (restore): a format-2 run as its tree, whose
    nodes are read as the reader goes, or a format-1 manifest, read whole (format
    1 has no other shape)."""
    blob, where = fetch_run_object(store, run)
    if peek_format(blob, where) == run_root.FORMAT:
        tree = open_tree(store, run, blob, identities=identities)
        tree.keep_metadata = False
        return tree
    manifest = decode_manifest(blob, where=where)
    check_names(manifest.header, run)
    return manifest


def fetch_run_object(store: StoreReader, run: RunRef, limits: ManifestLimits = LIMITS
                     ) -> tuple[bytes, str]:
    """The pinned run object's bytes, and how messages name it.  The listed size
    is checked before the GET: an oversized object is never downloaded."""
    where = f"{run.key}@{run.version_id}"
    if run.size > limits.stored_bytes:
        raise ManifestError(f"{where}: manifest is larger than {limits.stored_bytes} bytes "
                            f"({run.size})")
    return store.get(run.key, run.version_id), where


def check_names(header: Header, run: RunRef) -> None:
    """A run object must name the run its key names."""
    if header.host != run.host or header.run_id != run.run_id:
        raise ManifestError(f"{run.key}: header names run {header.host}/{header.run_id}, "
                            "not the key's")
