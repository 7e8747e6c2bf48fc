"""Read-only views of runs: summaries for ``runs``, listings, ``show`` and ``diff``.

Everything comes from the manifests in the bucket (every version under
``runs/``), never from local state.  Functions return dataclasses or plain
dicts; the CLI formats them.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Iterator

from s3archive.clock import isoformat
from s3archive.crypto.keys import Identity
from s3archive.errors import RunNotFound, S3ArchiveError
from s3archive.format.model import DIR, FILE, HARDLINK, SYMLINK, Entry, Manifest
from s3archive.human import json_path
from s3archive.repo.catalog import ROOT, RunRef, list_runs, load_manifest, resolve_run
from s3archive.repo.run_access import open_run
from s3archive.repo.run_tree import RunTree
from s3archive.repo.tree_diff import changed_pairs, every_item
from s3archive.stats import RunStats, describe_warning
from s3archive.store.base import StoreReader


# ------------------------------------------------------------------ picking a run

def pick_run(store: StoreReader, spec: str, host: str | None,
             default_host: str | None) -> RunRef:
    """``spec`` is a run id, a unique prefix of one, or ``latest``.

    ``latest`` means the newest run of ``host`` (default: this host).  An id
    or prefix is looked up on ``host`` when given; otherwise this host's runs
    are preferred and every host's are searched when none of them matches.
    """
    if spec == "latest" or host is not None:
        host = host or default_host
        return resolve_run(list_runs(store, host), spec, host)
    runs = list_runs(store)
    if default_host is not None:
        try:
            return resolve_run(runs, spec, default_host)
        except RunNotFound:
            pass
    return resolve_run(runs, spec, None)


def run_json(run: RunRef) -> dict[str, str]:
    """How ``--json`` names a run: host, id and the manifest version."""
    return {"host": run.host, "run_id": run.run_id, "version_id": run.version_id}


# ------------------------------------------------------------------ summaries

@dataclass
class RunSummary:
    host: str
    run_id: str
    started: datetime
    finished: datetime | None
    tier: str
    retain_until: datetime | None
    lock_mode: str | None
    legal_hold: bool | None  # the manifest's current hold (HEAD); None when unknown
    stats: RunStats
    version_id: str
    written: datetime | None = None  # the store's time of this manifest version
    time_problem: str | None = None  # the run id disagrees with the store's time
    error: str | None = None  # the manifest could not be read
    encrypted: bool | None = None  # format 2: sealed to restore keys; None when unknown
    storage_format: int | None = None

    @property
    def duration_s(self) -> float | None:
        if self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()

    @property
    def status(self) -> str:
        if self.error:
            return "unreadable"
        if self.time_problem:
            return "untrusted time"
        return "with warnings" if self.stats.warnings else "complete"

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "run_id": self.run_id,
                "started": isoformat(self.started),
                "finished": isoformat(self.finished) if self.finished else None,
                "duration_s": self.duration_s, "tier": self.tier,
                "retain_until": isoformat(self.retain_until) if self.retain_until else None,
                "lock_mode": self.lock_mode, "legal_hold": self.legal_hold,
                "status": self.status, "version_id": self.version_id,
                "written": isoformat(self.written) if self.written else None,
                "time_trusted": self.time_problem is None, "time_problem": self.time_problem,
                "error": self.error, "format": self.storage_format,
                "encrypted": self.encrypted, **self.stats.to_json()}


def manifest_stats(manifest: Manifest) -> RunStats:
    """The run's figures: counted from the entries (what the manifest holds),
    the rest from the trailer's statistics (what the run did)."""
    recorded = RunStats.from_json(manifest.trailer.stats)
    if manifest.header.format >= 2:  # entries are read on demand: the trailer counts them
        counts = manifest.trailer.counts
        return replace(
            recorded, files=counts.get("files", 0), dirs=counts.get("dirs", 0),
            symlinks=counts.get("symlinks", 0), others=counts.get("others", 0),
            snapshots=counts.get("snapshots", 0),
            warnings=tuple(describe_warning(w) for w in manifest.trailer.warnings),
            requests=None)
    kinds = Counter(e.kind for e in manifest.entries)
    return replace(
        recorded, files=kinds[FILE], dirs=kinds[DIR], symlinks=kinds[SYMLINK],
        others=sum(n for kind, n in kinds.items() if kind not in (FILE, DIR, SYMLINK)),
        snapshots=len(manifest.snapshots),
        bytes_total=sum(e.size for e in manifest.entries if e.kind == FILE),
        bytes_snapshots=sum(s.size for s in manifest.snapshots),
        warnings=tuple(describe_warning(w) for w in manifest.trailer.warnings), requests=None)


def summarize(manifest: Manifest, run: RunRef, legal_hold: bool | None) -> RunSummary:
    return RunSummary(host=run.host, run_id=run.run_id, started=manifest.header.started,
                      finished=manifest.trailer.finished, tier=manifest.header.tier,
                      retain_until=manifest.header.retain_until,
                      lock_mode=manifest.header.lock_mode, legal_hold=legal_hold,
                      stats=manifest_stats(manifest), version_id=run.version_id,
                      written=run.last_modified, time_problem=run.time_problem(),
                      encrypted=manifest.header.encryption is not None,
                      storage_format=manifest.header.format)


def run_summaries(store: StoreReader, host: str | None, workers: int = 8) -> list[RunSummary]:
    """One summary per manifest version (of ``host``, or every host), oldest first."""
    runs = list_runs(store, host)

    def one(run: RunRef) -> RunSummary:
        try:
            manifest = load_manifest(store, run, part=ROOT)
        except S3ArchiveError as err:
            return RunSummary(host=run.host, run_id=run.run_id, started=run.last_modified,
                              finished=None, tier="?", retain_until=None, lock_mode=None,
                              legal_hold=None, stats=RunStats(), version_id=run.version_id,
                              written=run.last_modified, time_problem=run.time_problem(),
                              error=str(err))
        try:
            hold: bool | None = store.head(run.key, run.version_id).legal_hold
        except S3ArchiveError:
            hold = None
        return summarize(manifest, run, hold)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        summaries = list(pool.map(one, runs))
    summaries.sort(key=lambda s: (s.started, s.host, s.run_id))
    return summaries


# ------------------------------------------------------------------ ls

def select_entries(manifest: Manifest, prefix: bytes | None) -> Iterator[Entry]:
    """Entries at or below ``prefix`` (every entry when None or ``/``)."""
    if prefix:
        prefix = b"/" + b"/".join(p for p in prefix.split(b"/") if p)
    for entry in manifest.entries:
        if (not prefix or prefix == b"/" or entry.path == prefix
                or entry.path.startswith(prefix + b"/")):
            yield entry


def entry_json(entry: Entry) -> dict[str, Any]:
    obj: dict[str, Any] = {**json_path(entry.path), "kind": entry.kind,
                           "mode": f"{entry.mode:04o}", "uid": entry.uid, "gid": entry.gid,
                           "user": entry.user, "group": entry.group, "mtime_ns": entry.mtime_ns}
    if entry.kind == FILE:
        obj["size"] = entry.size
        obj["sparse"] = entry.extents is not None
    if entry.target is not None:
        obj.update(json_path(entry.target, "target"))
    if entry.rdev is not None:
        obj["rdev"] = list(entry.rdev)
    if entry.acl_access:
        obj["acl_access"] = entry.acl_access
    if entry.acl_default:
        obj["acl_default"] = entry.acl_default
    if entry.xattrs:
        obj["xattrs"] = sorted(entry.xattrs)
    return obj


# ------------------------------------------------------------------ diff

CONTENT_FIELDS = ("kind", "size", "content", "target", "rdev", "extents")
METADATA_FIELDS = ("mode", "uid", "gid", "user", "group", "mtime_ns", "acl_access",
                   "acl_default", "xattrs")


FIELD_LABELS = {"kind": "type", "size": "size", "content": "content", "target": "target",
                "rdev": "device number", "extents": "sparse layout", "mode": "mode",
                "uid": "owner id", "gid": "group id", "user": "owner", "group": "group",
                "mtime_ns": "mtime", "acl_access": "ACL", "acl_default": "default ACL",
                "xattrs": "xattrs"}
"""How ``diff`` names a changed field for people (``--json`` keeps the field names)."""


@dataclass
class Change:
    path: bytes
    change: str  # "added" | "removed" | "content" | "metadata"
    fields: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"change": self.change, **json_path(self.path), "fields": self.fields}


def _content_of(entry: Entry, target: Entry | None) -> Any:
    return tuple(c.hash for c in (target or entry).chunks)


def _field(entry: Entry, name: str, target: Entry | None) -> Any:
    """``target``: the file a hardlink names (None for other entries, or when
    the run does not hold it as a file)."""
    if name == "content":
        return _content_of(entry, target)
    if name == "size" and target is not None:
        return target.size
    if name == "target" and entry.kind == HARDLINK:
        return None  # another name of the same content: compared by content
    if name == "kind" and entry.kind == HARDLINK:
        return FILE
    return getattr(entry, name)


def _compare(path: bytes, a: Entry, b: Entry, target_a: Entry | None, target_b: Entry | None,
             same_content: bool = False) -> Change | None:
    """``same_content``: the content is known equal (not compared again)."""
    fields = [f for f in CONTENT_FIELDS if not (same_content and f == "content")]
    content = [f for f in fields
               if _field(a, f, target_a) != _field(b, f, target_b)]
    meta = [f for f in METADATA_FIELDS
            if _field(a, f, target_a) != _field(b, f, target_b)]
    if content:
        return Change(path, "content", content + meta)
    if meta:
        return Change(path, "metadata", meta)
    return None


def diff_manifests(old: Manifest, new: Manifest) -> list[Change]:
    """Changes from ``old`` to ``new`` in path order (runs read whole: format 1,
    or one run of each format)."""
    old_files = {e.path: e for e in old.entries if e.kind == FILE}
    new_files = {e.path: e for e in new.entries if e.kind == FILE}
    before = {e.path: e for e in old.entries}
    after = {e.path: e for e in new.entries}
    changes = []
    for path in sorted(before.keys() | after.keys(), key=lambda p: tuple(p.split(b"/"))):
        a, b = before.get(path), after.get(path)
        if a is None:
            changes.append(Change(path, "added"))
        elif b is None:
            changes.append(Change(path, "removed"))
        else:
            change = _compare(path, a, b, _target(a, old_files), _target(b, new_files))
            if change is not None:
                changes.append(change)
    return changes


def _target(entry: Entry, files: dict[bytes, Entry]) -> Entry | None:
    if entry.kind != HARDLINK or entry.target is None:
        return None
    return files.get(entry.target)


class _Files:
    """The files hardlinks of one run name, looked up on demand (and kept:
    as many as the hardlinks met)."""

    def __init__(self, tree: RunTree):
        self.tree = tree
        self.found: dict[bytes, Entry | None] = {}

    def target(self, entry: Entry) -> Entry | None:
        if entry.kind != HARDLINK or entry.target is None:
            return None
        if entry.target not in self.found:
            item = self.tree.lookup(entry.target)
            self.found[entry.target] = self.tree.complete(item) \
                if item is not None and item.entry.kind == FILE else None
        return self.found[entry.target]


def diff_trees(old: RunTree, new: RunTree) -> Iterator[Change]:
    """Changes from ``old`` to ``new`` (two format-2 runs) in path order, as
    :func:`diff_manifests` finds them, reading only the nodes the runs do not
    share (repo/tree_diff.py): a directory or leaf with the same id in both
    runs holds the same entries.  Yielded as they are found: memory is the
    open directories along one path, not the changes (a diff of two runs that
    differ in every file holds no list of them).

    One thing a skipped node can hide: a hardlink whose own entry (its
    inode's metadata) is unchanged while the file it names changed content.
    A file's content rarely changes without its mtime; when a changed file
    kept all its metadata, the new run is walked once more for hardlinks
    naming it, and those follow the other changes (in path order among
    themselves).  (A hardlink read before, and its file after, a change
    during the run is not found this way.)
    """
    files_old, files_new = _Files(old), _Files(new)
    kept_metadata: set[bytes] = set()  # files whose content changed, metadata not
    links_reported: set[bytes] = set()  # hardlinks reported (not to report them twice)
    for pair in changed_pairs(old, new):
        if pair.old is None:
            yield Change(pair.path, "added")
            continue
        if pair.new is None:
            yield Change(pair.path, "removed")
            continue
        a, b = pair.old, pair.new
        same_content = (a.lists is not None and b.lists is not None
                        and [r.hash for r in a.lists] == [r.hash for r in b.lists])
        entry_a = a.entry if same_content else old.complete(a)
        entry_b = b.entry if same_content else new.complete(b)
        change = _compare(pair.path, entry_a, entry_b, files_old.target(entry_a),
                          files_new.target(entry_b), same_content)
        if change is None:
            continue
        yield change
        if entry_b.kind == HARDLINK:
            links_reported.add(pair.path)
        if (entry_a.kind == entry_b.kind == FILE
                and not set(change.fields) & set(METADATA_FIELDS)):
            kept_metadata.add(pair.path)
    if kept_metadata:
        yield from _hidden_hardlinks(old, new, kept_metadata, links_reported,
                                     files_old, files_new)


def _hidden_hardlinks(old: RunTree, new: RunTree, targets: set[bytes], reported: set[bytes],
                      files_old: _Files, files_new: _Files) -> Iterator[Change]:
    for item in every_item(new):
        entry = item.entry
        if entry.kind != HARDLINK or entry.target not in targets or entry.path in reported:
            continue
        before = old.lookup(entry.path)
        if before is None:
            continue
        change = _compare(entry.path, before.entry, entry, files_old.target(before.entry),
                          files_new.target(entry))
        if change is not None:
            yield change


def diff_runs(store: StoreReader, old: RunRef, new: RunRef,
              identities: list[Identity] | None = None) -> Iterator[Change]:
    """Changes from run ``old`` to run ``new``: two format-2 runs by their trees,
    yielded as found (:func:`diff_trees`), otherwise both read whole
    (:func:`diff_manifests`).  ``identities``: the restore keys of encrypted runs."""
    a = open_run(store, old, identities=identities)
    b = open_run(store, new, identities=identities)
    if isinstance(a, RunTree) and isinstance(b, RunTree):
        return diff_trees(a, b)
    # one of each: the format-2 run read whole too (its packs read whole, not node by node)
    return iter(diff_manifests(
        load_manifest(store, old, identities=identities) if isinstance(a, RunTree) else a,
        load_manifest(store, new, identities=identities) if isinstance(b, RunTree) else b))


def show_json(run: RunRef, manifest: Manifest, summary: RunSummary) -> dict[str, Any]:
    header = manifest.header
    return {
        "host": header.host, "run_id": header.run_id, "key": run.key,
        "version_id": run.version_id, "tool": header.tool, "format": header.format,
        "started": isoformat(header.started), "finished": isoformat(manifest.trailer.finished),
        "tier": header.tier, "lock_mode": header.lock_mode,
        "retain_until": isoformat(header.retain_until),
        "legal_hold_recorded": header.legal_hold, "legal_hold": summary.legal_hold,
        "chunker": header.chunker, "packs": len(manifest.packs),
        "pack_bytes": sum(p.size for p in manifest.packs),
        "counts": manifest.trailer.counts, "stats": manifest.trailer.stats,
        "summary": summary.to_json(),
        "warnings": [{"source": w.source, "message": w.message,
                      **(json_path(w.path) if w.path is not None else {})}
                     for w in manifest.trailer.warnings],
        "snapshots": [{"name": s.name, "status": s.status, "exit_status": s.exit_status,
                       "size": s.size, "started": isoformat(s.started),
                       "duration_s": s.duration_s, "description": s.description,
                       "restore_through": s.restore_through} for s in manifest.snapshots],
    }
