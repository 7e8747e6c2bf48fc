"""Lifecycle helpers shared by RGW tests: version listings, kicking RGW's
lifecycle until a state is reached, fixed retain-until dates seconds ahead."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from support.archive_env import ArchiveEnv
from support.rgw import RGWCluster


def until_in(seconds: float) -> str:
    moment = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return f'until = "{moment.strftime("%Y-%m-%dT%H:%M:%SZ")}"'


def referenced_packs(env: ArchiveEnv, manifest_key: str) -> dict[str, str]:
    return {line["version_id"]: line["key"] for line in env.manifest_lines(manifest_key)
            if line["type"] == "pack"}


@dataclass(frozen=True)
class BucketVersions:
    """What ``list_object_versions`` shows: version ids and delete markers."""

    versions: frozenset[str]
    delete_markers: frozenset[str]
    latest_is_delete_marker: frozenset[str]  # keys whose current entry is a marker


def list_versions(s3: Any, bucket: str) -> BucketVersions:
    versions: set[str] = set()
    markers: set[str] = set()
    latest_markers: set[str] = set()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        versions.update(v["VersionId"] for v in page.get("Versions", []))
        for marker in page.get("DeleteMarkers", []):
            markers.add(marker["VersionId"])
            if marker["IsLatest"]:
                latest_markers.add(marker["Key"])
    return BucketVersions(frozenset(versions), frozenset(markers), frozenset(latest_markers))


def run_lifecycle_until(
    rgw: RGWCluster,
    s3: Any,
    bucket: str,
    done: Callable[[BucketVersions], bool],
    timeout: float = 45.0,
) -> BucketVersions:
    """Kick lifecycle with ``radosgw-admin lc process`` until ``done(state)``.

    radosgw's own lifecycle thread wakes every debug interval (10 s) but was
    seen to act on a bucket only about every second wake-up (~20-30 s after
    objects became due); ``radosgw-admin lc process`` processes every bucket
    with a lifecycle configuration at once, synchronously (~2 s per call), so
    the tests kick it and poll. Both processors may run side by side: the
    outcome is the same.
    """
    deadline = time.monotonic() + timeout
    while True:
        rgw.admin("lc", "process")
        state = list_versions(s3, bucket)
        if done(state):
            return state
        if time.monotonic() > deadline:
            pytest.fail(f"lifecycle did not reach the expected state in {timeout}s: {state}")
        time.sleep(1.0)
