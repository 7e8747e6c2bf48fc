"""``fleet``: every host of the bucket at a glance, for an auditor.

One listing of ``runs/`` finds every host and run; only each host's newest
run (by the store's time, LastModified of its first version — not by the
name a host gave it) is read, its root object only (the audit role reads
``runs/``, never data or the group index).  A host whose newest run is older
than the threshold is *stale*: the command exits 1 so monitoring can alert.
A host's *shared* bytes are those of the data packs its newest run
references that another host's newest run references too (cross-host
deduplication, docs/FORMAT.md part 2, 16).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from s3archive.browse import RunSummary, summarize
from s3archive.clock import isoformat
from s3archive.errors import S3ArchiveError
from s3archive.archive.run_record import label_value
from s3archive.repo.catalog import ROOT, RunRef, first_versions, list_runs, load_manifest
from s3archive.store.base import StoreReader


@dataclass(frozen=True)
class HostView:
    host: str
    runs: int
    last: RunRef
    age_s: float
    stale: bool
    summary: RunSummary | None  # None when the newest run cannot be read
    error: str | None = None
    # data packs of the newest run's table (key -> size), and the bytes of those that
    # another host's newest run references too
    data_packs: dict[str, int] = field(default_factory=dict, repr=False)
    bytes_shared: int | None = None

    @property
    def status(self) -> str:
        if self.summary is None:
            return "unreadable"
        return self.summary.status

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {"host": self.host, "runs": self.runs, "last_run_id": self.last.run_id,
                "last_run_at": isoformat(self.last.last_modified),
                "age_s": round(self.age_s), "stale": self.stale, "status": self.status,
                "files": s.stats.files if s else None,
                "bytes_total": s.stats.bytes_total if s else None,
                "bytes_snapshots": s.stats.bytes_snapshots if s else None,
                "bytes_new": s.stats.bytes_new if s else None,
                "bytes_uploaded": s.stats.bytes_uploaded if s else None,
                "bytes_referenced": sum(self.data_packs.values()) if s else None,
                "bytes_shared": self.bytes_shared,
                "warnings": list(s.stats.warnings) if s else None,
                "retain_until": isoformat(s.retain_until) if s and s.retain_until else None,
                "error": self.error}


def fleet_view(store: StoreReader, now: datetime, stale_after: timedelta,
               workers: int = 8) -> list[HostView]:
    """One view per host, sorted by host name."""
    by_host: dict[str, list[RunRef]] = {}
    for run in first_versions(list_runs(store)):
        by_host.setdefault(run.host, []).append(run)

    def one(host: str) -> HostView:
        runs = by_host[host]
        last = max(runs, key=lambda r: r.last_modified)
        age = (now - last.last_modified).total_seconds()
        packs: dict[str, int] = {}
        try:
            manifest = load_manifest(store, last, part=ROOT)
            summary: RunSummary | None = summarize(manifest, last, None)
            packs = {p.key: p.size for p in manifest.packs if p.key.startswith(DATA_PACKS)}
            error = None
        except S3ArchiveError as err:
            summary, error = None, str(err)
        return HostView(host, len(runs), last, age, age > stale_after.total_seconds(),
                        summary, error, packs)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        views = list(pool.map(one, sorted(by_host)))
    users = Counter(key for view in views for key in view.data_packs)
    return [replace(view, bytes_shared=sum(size for key, size in view.data_packs.items()
                                           if users[key] > 1))
            if view.summary is not None else view for view in views]


DATA_PACKS = ("data/", "packs/")  # format 2 data packs, format 1 packs


def prometheus_text(views: list[HostView], now: datetime) -> str:
    lines = [
        "# HELP s3archive_fleet_hosts Hosts with at least one run in the bucket.",
        "# TYPE s3archive_fleet_hosts gauge",
        f"s3archive_fleet_hosts {len(views)}",
        "# HELP s3archive_fleet_stale_hosts Hosts whose newest run is older than the threshold.",
        "# TYPE s3archive_fleet_stale_hosts gauge",
        f"s3archive_fleet_stale_hosts {sum(v.stale for v in views)}",
        "# HELP s3archive_fleet_last_run_timestamp_seconds Store time of each host's newest run.",
        "# TYPE s3archive_fleet_last_run_timestamp_seconds gauge",
    ]
    for v in views:
        lines.append(f's3archive_fleet_last_run_timestamp_seconds{{host="{label_value(v.host)}"}} '
                     f"{v.last.last_modified.timestamp():.0f}")
    lines += ["# HELP s3archive_fleet_last_run_warnings Warnings of each host's newest run "
              "(-1: unreadable).",
              "# TYPE s3archive_fleet_last_run_warnings gauge"]
    for v in views:
        warnings = len(v.summary.stats.warnings) if v.summary else -1
        lines.append(f's3archive_fleet_last_run_warnings{{host="{label_value(v.host)}"}} {warnings}')
    lines += ["# HELP s3archive_fleet_last_run_bytes Logical bytes of each host's newest run.",
              "# TYPE s3archive_fleet_last_run_bytes gauge"]
    for v in views:
        if v.summary:
            lines.append(f's3archive_fleet_last_run_bytes{{host="{label_value(v.host)}"}} '
                         f"{v.summary.stats.bytes_logical}")
    for name, help_text, value in (
            ("last_run_age_seconds", "Age of each host's newest run.", lambda v: round(v.age_s)),
            ("stale", "1 when a host's newest run is older than the threshold.",
             lambda v: int(v.stale)),
            ("last_run_new_bytes", "Bytes of new chunks of each host's newest run.",
             lambda v: v.summary.stats.bytes_new if v.summary else None),
            ("last_run_shared_bytes", "Bytes of data packs each host's newest run shares "
             "with another host's.", lambda v: v.bytes_shared)):
        lines += [f"# HELP s3archive_fleet_{name} {help_text}",
                  f"# TYPE s3archive_fleet_{name} gauge"]
        for v in views:
            figure = value(v)
            if figure is not None:
                lines.append(f's3archive_fleet_{name}{{host="{label_value(v.host)}"}} {figure}')
    lines += ["# HELP s3archive_fleet_scrape_timestamp_seconds When this file was written.",
              "# TYPE s3archive_fleet_scrape_timestamp_seconds gauge",
              f"s3archive_fleet_scrape_timestamp_seconds {now.timestamp():.0f}"]
    return "\n".join(lines) + "\n"
