"""create-resources --method s3-api against Ceph RGW (a real S3), end to end:
the bucket it configures has Object Lock, default retention, versioning and
lifecycle; lifecycle (one "day" = 10 s here) removes only versions whose
lock lapsed; and the bucket-policy statements RGW evaluates behave as the
policy module assumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from s3archive.setup.spec import BucketSpec
from s3archive.setup import policies

REPO = Path(__file__).resolve().parents[2]


def create_resources(rgw, bucket: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PYTHONPATH=str(REPO), AWS_ACCESS_KEY_ID=rgw.access_key,
               AWS_SECRET_ACCESS_KEY=rgw.secret_key, AWS_CONFIG_FILE="/nonexistent",
               AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_EC2_METADATA_DISABLED="true")
    return subprocess.run([sys.executable, "-m", "s3archive", "create-resources", "--bucket",
                           bucket, "--endpoint-url", rgw.endpoint_url, "--region", rgw.region,
                           "--json", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_s3_api_method_configures_the_bucket(rgw) -> None:
    run = create_resources(rgw, "setup-api", "--lock-mode", "COMPLIANCE",
                           "--default-retention-days", "2", "--max-retention-days", "30")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["method"] == "s3-api"  # the default with an endpoint URL
    # RGW 16 rejects bucket encryption (no KMS backend) and ownership controls,
    # and BlockPublicAcls is left off (RGW would deny every PUT): reported as
    # differences, not fatal.
    differences = {d["setting"]: d for d in result["check"]["differences"]}
    assert set(differences) == {"encryption", "object ownership", "public access block"}
    assert differences["public access block"]["actual"] == "off: BlockPublicAcls"
    assert not any(d["fatal"] for d in differences.values())
    s3 = rgw.client()
    lock = s3.get_object_lock_configuration(Bucket="setup-api")["ObjectLockConfiguration"]
    assert lock == {"ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 2}}}
    assert s3.get_bucket_versioning(Bucket="setup-api")["Status"] == "Enabled"
    rules = s3.get_bucket_lifecycle_configuration(Bucket="setup-api")["Rules"]
    assert {r["ID"] for r in rules} == {"s3archive-expire-versions",
                                        "s3archive-remove-expired-delete-markers",
                                        "s3archive-abort-incomplete-uploads"}
    policy = json.loads(s3.get_bucket_policy(Bucket="setup-api")["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["DenyRetentionAboveMaximum",
                                                       "DenyBucketChangesExceptRoot"]
    # A locked PUT, as the archiver makes it, goes through the policy.
    s3.put_object(Bucket="setup-api", Key="packs/aa/x", Body=b"x",
                  ObjectLockMode="COMPLIANCE",
                  ObjectLockRetainUntilDate=datetime.now(timezone.utc) + timedelta(seconds=5))
    # Running it again is harmless and finds the bucket configured.
    again = json.loads(create_resources(rgw, "setup-api", "--lock-mode", "COMPLIANCE",
                                        "--default-retention-days", "2",
                                        "--max-retention-days", "30").stdout)
    assert again["created"] is False


def test_check_reports_a_bucket_without_lock_and_exits_1(rgw) -> None:
    """A bucket made earlier without Object Lock cannot get it (versioning it
    can, and does): exit 1, the lock named."""
    rgw.client().create_bucket(Bucket="setup-nolock")
    run = create_resources(rgw, "setup-nolock", "--no-bucket-policy")
    assert run.returncode == 1
    fatal = [d["setting"] for d in json.loads(run.stdout)["check"]["differences"] if d["fatal"]]
    assert fatal == ["object lock"]


def _bucket_with(rgw, name: str, statement: dict) -> object:
    s3 = rgw.client()
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    statement = policies.resolve(statement, partition="aws", account_id="",
                                 region=rgw.region)
    statement = json.loads(json.dumps(statement).replace("acme-b", name))
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [statement]}))
    return s3


def _statement(sid: str) -> dict:
    spec = BucketSpec(bucket="acme-b", max_retention_days=30)
    return next(s for s in policies.bucket_policy(spec)["Statement"] if s["Sid"] == sid)


def _code(call, **kwargs) -> str:  # type: ignore[no-untyped-def]
    try:
        call(**kwargs)
    except ClientError as err:
        return str(err.response["Error"]["Code"])
    return "ok"


def test_rgw_statement_deny_insecure_transport_denies_plain_http(rgw) -> None:
    s3 = _bucket_with(rgw, "setup-tls", _statement("DenyInsecureTransport"))
    until = datetime.now(timezone.utc) + timedelta(seconds=5)
    assert _code(s3.put_object, Bucket="setup-tls", Key="k", Body=b"x",
                 ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until) == "AccessDenied"
    assert _code(s3.list_objects_v2, Bucket="setup-tls") == "AccessDenied"


def test_rgw_does_not_set_the_lock_mode_key_hence_the_endpoint_policy_omits_it(rgw) -> None:
    """On RGW, DenyPutWithoutLockMode would deny even a locked PUT."""
    s3 = _bucket_with(rgw, "setup-mode", _statement("DenyPutWithoutLockMode"))
    until = datetime.now(timezone.utc) + timedelta(seconds=5)
    assert _code(s3.put_object, Bucket="setup-mode", Key="k", Body=b"x",
                 ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until) == "AccessDenied"
    endpoint = BucketSpec(bucket="acme-b", endpoint_url=rgw.endpoint_url)
    assert "DenyPutWithoutLockMode" not in {s["Sid"] for s in
                                           policies.bucket_policy(endpoint)["Statement"]}


def test_rgw_ignores_remaining_retention_days(rgw) -> None:
    """Documents the gap: on RGW the cap is not enforced (AWS: template-level test)."""
    s3 = _bucket_with(rgw, "setup-days", _statement("DenyRetentionAboveMaximum"))
    far = datetime.now(timezone.utc) + timedelta(days=365)
    assert _code(s3.put_object, Bucket="setup-days", Key="k", Body=b"x",
                 ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=far) == "ok"


@pytest.mark.slow
def test_lifecycle_removes_only_versions_whose_lock_lapsed(rgw) -> None:
    run = create_resources(rgw, "setup-lc", "--no-bucket-policy")
    assert run.returncode == 0, run.stderr
    s3 = rgw.client()
    now = datetime.now(timezone.utc)
    short = s3.put_object(Bucket="setup-lc", Key="packs/short", Body=b"lapses",
                          ObjectLockMode="GOVERNANCE",
                          ObjectLockRetainUntilDate=now + timedelta(seconds=3))["VersionId"]
    long = s3.put_object(Bucket="setup-lc", Key="packs/long", Body=b"stays",
                         ObjectLockMode="GOVERNANCE",
                         ObjectLockRetainUntilDate=now + timedelta(minutes=30))["VersionId"]

    def versions() -> dict[str, list[str]]:
        listing = s3.list_object_versions(Bucket="setup-lc")
        found: dict[str, list[str]] = {}
        for item in listing.get("Versions", []):
            found.setdefault(item["Key"], []).append(item["VersionId"])
        return found

    deadline = time.monotonic() + 75
    while time.monotonic() < deadline and short in versions().get("packs/short", []):
        time.sleep(2)
    remaining = versions()
    assert short not in remaining.get("packs/short", []), "lapsed version never collected"
    assert long in remaining.get("packs/long", []), "a locked version was removed"
    listing = s3.list_object_versions(Bucket="setup-lc")
    markers = {m["Key"] for m in listing.get("DeleteMarkers", []) if m["IsLatest"]}
    assert "packs/long" in markers  # current versions got their delete marker
    assert s3.get_object(Bucket="setup-lc", Key="packs/long", VersionId=long)["Body"].read() \
        == b"stays"
