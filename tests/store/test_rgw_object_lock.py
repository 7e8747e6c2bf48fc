"""Object Lock and lifecycle behaviour of a real S3 (Ceph RGW), as s3archive relies on it.

These tests pin down the storage semantics the design depends on: locked
versions cannot be deleted or have their COMPLIANCE lock shortened, the owner
can bypass GOVERNANCE, Content-MD5 is verified, and lifecycle (the garbage
collector) removes non-current versions only once their lock has lapsed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support.rgw import RGWCluster
from support.lifecycle import list_versions, run_lifecycle_until

# With ``rgw lc debug interval = 10`` a lifecycle "day" lasts 10 seconds.
LIFECYCLE_DAY_SECONDS = 10


# --------------------------------------------------------------------------
# Helpers


def utc_in(seconds: float) -> dt.datetime:
    """An aware UTC time ``seconds`` from now, in whole seconds (RGW truncates)."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return now + dt.timedelta(seconds=seconds)


def content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode("ascii")


def put_version(
    s3: Any,
    bucket: str,
    key: str,
    body: bytes,
    *,
    mode: str | None = None,
    retain_until: dt.datetime | None = None,
) -> str:
    """PUT one object version (locked if ``mode`` is given); return its VersionId."""
    lock: dict[str, Any] = {}
    if mode is not None:
        lock = {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": retain_until}
    response = s3.put_object(
        Bucket=bucket, Key=key, Body=body, ContentMD5=content_md5(body), **lock
    )
    return str(response["VersionId"])


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def sleep_until(monotonic_deadline: float) -> None:
    time.sleep(max(0.0, monotonic_deadline - time.monotonic()))


# --------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def s3(rgw: RGWCluster) -> Any:
    return rgw.client()


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh bucket created with Object Lock enabled."""
    name = f"lock-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


# --------------------------------------------------------------------------
# Object Lock


def test_lock_bucket_has_versioning_enabled(s3: Any, bucket: str) -> None:
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    config = s3.get_object_lock_configuration(Bucket=bucket)
    assert config["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"


def test_compliance_put_is_locked(s3: Any, bucket: str) -> None:
    until = utc_in(3600)
    version = put_version(s3, bucket, "k", b"data", mode="COMPLIANCE", retain_until=until)

    head = s3.head_object(Bucket=bucket, Key="k", VersionId=version)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] == until
    retention = s3.get_object_retention(Bucket=bucket, Key="k", VersionId=version)
    assert retention["Retention"] == {"Mode": "COMPLIANCE", "RetainUntilDate": until}


def test_compliance_lock_can_be_extended_never_shortened(s3: Any, bucket: str) -> None:
    until = utc_in(3600)
    version = put_version(s3, bucket, "k", b"data", mode="COMPLIANCE", retain_until=until)

    def set_retention(mode: str, date: dt.datetime) -> None:
        s3.put_object_retention(
            Bucket=bucket,
            Key="k",
            VersionId=version,
            Retention={"Mode": mode, "RetainUntilDate": date},
        )

    with pytest.raises(ClientError) as shortened:
        set_retention("COMPLIANCE", until - dt.timedelta(seconds=60))
    assert error_code(shortened) == "AccessDenied"
    with pytest.raises(ClientError) as weakened:
        set_retention("GOVERNANCE", until + dt.timedelta(seconds=60))
    assert error_code(weakened) == "AccessDenied"

    extended = until + dt.timedelta(days=1)
    set_retention("COMPLIANCE", extended)
    head = s3.head_object(Bucket=bucket, Key="k", VersionId=version)
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == (
        "COMPLIANCE",
        extended,
    )


def test_compliance_locked_version_cannot_be_deleted(s3: Any, bucket: str) -> None:
    version = put_version(s3, bucket, "k", b"data", mode="COMPLIANCE", retain_until=utc_in(3600))

    with pytest.raises(ClientError) as plain:
        s3.delete_object(Bucket=bucket, Key="k", VersionId=version)
    assert error_code(plain) == "AccessDenied"
    with pytest.raises(ClientError) as bypass:
        s3.delete_object(
            Bucket=bucket, Key="k", VersionId=version, BypassGovernanceRetention=True
        )
    assert error_code(bypass) == "AccessDenied"
    assert version in list_versions(s3, bucket).versions


def test_governance_locked_version_deleted_by_owner_with_bypass(
    s3: Any, bucket: str
) -> None:
    version = put_version(s3, bucket, "k", b"data", mode="GOVERNANCE", retain_until=utc_in(3600))

    with pytest.raises(ClientError) as plain:
        s3.delete_object(Bucket=bucket, Key="k", VersionId=version)
    assert error_code(plain) == "AccessDenied"
    s3.delete_object(Bucket=bucket, Key="k", VersionId=version, BypassGovernanceRetention=True)
    assert version not in list_versions(s3, bucket).versions


def test_put_with_wrong_content_md5_is_rejected(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as rejected:
        s3.put_object(
            Bucket=bucket,
            Key="k",
            Body=b"data",
            ContentMD5=content_md5(b"other data"),
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=utc_in(3600),
        )
    assert error_code(rejected) == "BadDigest"
    assert list_versions(s3, bucket).versions == frozenset()


# --------------------------------------------------------------------------
# Lifecycle: the garbage collector that respects locks


@pytest.mark.slow
def test_lifecycle_removes_noncurrent_versions_only_after_lock_lapsed(
    rgw: RGWCluster, s3: Any, bucket: str
) -> None:
    """Expiration (1 day) adds delete markers; NoncurrentVersionExpiration
    (1 day) then removes non-current versions, but never a locked one.

    Timing (``rgw lc debug interval = 10``, so a "day" is 10 s): a version's
    non-current age counts from when its successor was written (here the
    second PUT, later the lifecycle's own delete marker), not from its own
    mtime. Lock dates stay real time, so a lock 3 s ahead lapses before the
    first lifecycle day is over. The test waits one day plus a margin, then
    kicks ``radosgw-admin lc process`` (see ``run_lifecycle_until``); in all
    about 25-30 s.
    """
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "collect",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "Expiration": {"Days": 1},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                }
            ]
        },
    )
    locked_v1 = put_version(
        s3, bucket, "locked", b"v1", mode="COMPLIANCE", retain_until=utc_in(86400)
    )
    locked_v2 = put_version(s3, bucket, "locked", b"v2")
    lapsing_v1 = put_version(
        s3, bucket, "lapsing", b"v1", mode="COMPLIANCE", retain_until=utc_in(3)
    )
    lapsing_v2 = put_version(s3, bucket, "lapsing", b"v2")
    one_day_later = time.monotonic() + LIFECYCLE_DAY_SECONDS + 1

    # Day 1: current versions get delete markers; the non-current v1 whose
    # lock lapsed is removed. The same pass saw the still-locked v1 (it has
    # been non-current even longer) and had to keep it.
    sleep_until(one_day_later)
    state = run_lifecycle_until(rgw, s3, bucket, lambda st: lapsing_v1 not in st.versions)
    markers_written = time.monotonic()
    assert locked_v1 in state.versions
    assert state.latest_is_delete_marker == {"locked", "lapsing"}

    # Day 2: the v2 versions, non-current since the markers and unlocked, go;
    # the locked v1 still stays, lock intact.
    sleep_until(markers_written + LIFECYCLE_DAY_SECONDS + 1)
    state = run_lifecycle_until(
        rgw, s3, bucket, lambda st: not {locked_v2, lapsing_v2} & st.versions
    )
    assert state.versions == {locked_v1}
    head = s3.head_object(Bucket=bucket, Key="locked", VersionId=locked_v1)
    assert head["ObjectLockMode"] == "COMPLIANCE"
