"""``cost``: what the backups cost, before the bill does.

Storage is measured, not guessed: one version listing of the bucket (under
the prefix), every version counted (non-current versions are billed until
lifecycle expires them), grouped by storage class and by kind (packs of
both formats, of which format 2's data and metadata packs, manifests, key
copies, other).
Requests come from the local run history (exact counts of the last runs).
Prices come from ``[cost]`` in the configuration (defaults: S3 list prices,
us-east-1, ``storage_classes``); reading a class with a retrieval fee
(GLACIER_IR: data packs after ``--cold-after``) is priced per GB from
``storage_classes.RETRIEVAL_GB``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from s3archive.clock import isoformat, utc_now
from s3archive.config import Config, CostSettings
from s3archive.browse import run_summaries
from s3archive.archive.run_record import HISTORY_KEEP, read_history
from s3archive.stats import RunStats
from s3archive.storage_classes import PRICES_SOURCE, RETRIEVAL_GB, area, effective
from s3archive.store.base import StoreReader

GIB = 1024 ** 3
# Billed at the PUT/COPY/POST/LIST rate; every other request at the GET rate.
WRITE_CLASS = frozenset({"PutObject", "PutObjectRetention", "PutObjectLegalHold", "CopyObject",
                         "ListObjectVersions", "ListObjectsV2", "ListObjects", "PostObject"})
FREE = frozenset({"DeleteObject"})
RECENT_RUNS = 10
# Bytes by kind (storage_classes.area): "packs" counts every pack, format 1's
# (packs/) and format 2's, which "data" (data/) and "metadata" (meta/) split.
KINDS = ("packs", "data", "metadata", "manifests", "keys", "index", "other")  # index: 16


def storage_by_class(store: StoreReader) -> dict[str, Any]:
    """Every version under the store's prefix, by storage class and kind."""
    classes: dict[str, dict[str, int]] = {}
    markers = 0
    for row in store.list_versions(""):
        if row.is_delete_marker:
            markers += 1
            continue
        entry = classes.setdefault(effective(row.storage_class),
                                   {"objects": 0, "bytes": 0, "current": 0, "noncurrent": 0,
                                    **dict.fromkeys(KINDS, 0)})
        size = row.size
        entry["objects"] += 1
        entry["bytes"] += size
        entry["current" if row.is_latest else "noncurrent"] += size
        kind = area(row.key)
        entry[kind] += size
        if kind in ("data", "metadata"):  # "packs": the packs of both formats
            entry["packs"] += size
    return {"classes": classes, "delete_markers": markers}


def request_cost(requests: dict[str, int], prices: CostSettings) -> float:
    writes = sum(n for op, n in requests.items() if op in WRITE_CLASS)
    reads = sum(n for op, n in requests.items() if op not in WRITE_CLASS and op not in FREE)
    return writes / 1000 * prices.put_per_1000 + reads / 1000 * prices.get_per_1000


def recent_runs(config: Config, count: int = RECENT_RUNS) -> list[dict[str, Any]]:
    """The last runs of the history; ``initial_upload`` marks this host's first
    run that wrote a manifest (it uploads everything once: not a monthly rate).
    Once the history is full, its first run is long gone and none is marked."""
    history = read_history(config)
    succeeded = [i for i, r in enumerate(history) if r.get("result") in ("ok", "warnings")]
    initial = succeeded[0] if succeeded and len(history) < HISTORY_KEEP else None
    rows = []
    for index in range(max(0, len(history) - count), len(history)):
        record = history[index]
        stats = RunStats.from_json(record)
        requests = dict(stats.requests or {})
        rows.append({"run_id": record.get("run_id"), "finished": record.get("finished"),
                     "result": record.get("result"), "initial_upload": index == initial,
                     "requests": requests, "total_requests": stats.total_requests,
                     "bytes_uploaded": stats.bytes_uploaded,
                     "cost": round(request_cost(requests, config.cost), 6)})
    return rows


def live_runs(store: StoreReader, now: datetime) -> dict[str, Any]:
    summaries = run_summaries(store, None)
    live = [s for s in summaries if s.retain_until is not None and s.retain_until > now]
    hosts: dict[str, int] = {}
    for s in live:
        hosts[s.host] = hosts.get(s.host, 0) + 1
    return {"manifests": len(summaries), "live": len(live), "by_host": hosts,
            "lapsed": len(summaries) - len(live)}


def estimate(config: Config, store: StoreReader, now: datetime | None = None) -> dict[str, Any]:
    now = now or utc_now()
    prices = config.cost
    storage = storage_by_class(store)
    runs = live_runs(store, now)
    recent = recent_runs(config)
    storage_month = 0.0
    for name, entry in storage["classes"].items():
        entry["gib"] = round(entry["bytes"] / GIB, 6)
        entry["price_gb_month"] = prices.price_of(name)
        entry["month"] = round(entry["bytes"] / GIB * prices.price_of(name), 6)
        # What reading every byte of the class once costs in retrieval fees
        # (a restore of everything cold; GET requests not included).
        entry["retrieval_gb"] = RETRIEVAL_GB.get(name, 0.0)
        entry["retrieval_all"] = round(entry["bytes"] / GIB * entry["retrieval_gb"], 6)
        storage_month += entry["month"]
    succeeded = [r for r in recent if r["result"] in ("ok", "warnings")] or recent
    # The first run uploads everything once: steady runs say what a month adds.
    steady = [r for r in succeeded if not r["initial_upload"]]
    basis = steady or succeeded
    per_run = (sum(r["cost"] for r in basis) / len(basis)) if basis else 0.0
    requests_per_run = (sum(r["total_requests"] for r in basis) / len(basis)
                        if basis else 0.0)
    upload_per_month = (int(sum(r["bytes_uploaded"] for r in steady) / len(steady)
                            * prices.runs_per_month) if steady else None)
    requests_month = per_run * prices.runs_per_month
    return {
        "measured": isoformat(now), "location": store.location, "currency": prices.currency,
        "prices": {"storage_gb_month": prices.storage_gb_month,
                   "class_gb_month": dict(prices.class_gb_month),
                   "put_per_1000": prices.put_per_1000, "get_per_1000": prices.get_per_1000,
                   "runs_per_month": prices.runs_per_month,
                   "retrieval_gb": dict(sorted(RETRIEVAL_GB.items())),
                   "defaults_source": PRICES_SOURCE},
        "storage": storage, "runs": runs, "recent_runs": recent,
        "monthly": {"storage": round(storage_month, 4),
                    "storage_by_class": {name: round(entry["month"], 4)
                                         for name, entry in sorted(storage["classes"].items())},
                    "requests": round(requests_month, 4),
                    "total": round(storage_month + requests_month, 4),
                    "requests_per_run": round(requests_per_run, 1),
                    "requests_from_initial_upload": bool(basis) and not steady,
                    "uploaded_per_month_bytes": upload_per_month},
        "listing_requests": dict(usage.requests) if (usage := store.usage()) else {},
    }
