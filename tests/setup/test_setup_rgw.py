"""create-resources --method s3-api against Ceph RGW (a real S3), end to end:
the bucket it configures has Object Lock, default retention, versioning and
lifecycle; lifecycle (one "day" = 10 s here) removes only versions whose
lock lapsed; and the bucket-policy statements RGW evaluates behave as the
policy module assumes."""

from __future__ import annotations

import json
import os
import shutil
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


# ------------------------------------------------------------- per-host isolation


# RGW 16 refuses a policy naming an action it does not know: these (bucket
# features RGW lacks) are left out of the Deny it is given.  The statement's
# full list is evaluated in test_setup_template.py.
RGW_UNKNOWN_ACTIONS = {"s3:PutEncryptionConfiguration", "s3:PutInventoryConfiguration",
                       "s3:PutAnalyticsConfiguration", "s3:PutMetricsConfiguration",
                       "s3:PutIntelligentTieringConfiguration"}


def _for_rgw(document: dict) -> dict:
    statements = []
    for statement in document["Statement"]:
        if isinstance(statement["Action"], list):
            statement = {**statement, "Action": [a for a in statement["Action"]
                                                 if a not in RGW_UNKNOWN_ACTIONS]}
        statements.append(statement)
    return {**document, "Statement": statements}


def _host_user(rgw, iam, spec: BucketSpec, host: str, legal_hold: bool = False):
    """An RGW user holding exactly what a backup host holds on AWS: the shared
    backup policy and the host's own policy (inline user policies here)."""
    uid = f"{spec.bucket}-{host}"
    key, secret = f"{uid}-key", f"{uid}-secret"
    rgw.admin("user", "create", "--uid", uid, "--display-name", uid, "--access-key", key,
              "--secret-key", secret)
    for name, document in (("backup", policies.backup_policy(spec)),
                           (spec.names.host_policy(host),
                            policies.host_policy(spec, host, legal_hold))):
        resolved = policies.resolve(document, partition="aws", account_id="", region=rgw.region)
        iam.put_user_policy(UserName=uid, PolicyName=name,
                            PolicyDocument=json.dumps(_for_rgw(resolved)))
    return key, secret


def _host_config(rgw, tmp_path: Path, spec: BucketSpec, host: str, key: tuple[str, str],
                 data: Path, extra: str = "") -> Path:
    etc = tmp_path / host
    (etc / "pickers.d").mkdir(parents=True)
    picker = etc / "pickers.d" / "10-data"
    picker.write_text(f"#!/bin/sh\necho {data}\n")
    picker.chmod(0o755)
    credentials = etc / "credentials"
    credentials.write_text(f"[default]\naws_access_key_id = {key[0]}\n"
                           f"aws_secret_access_key = {key[1]}\n")
    credentials.chmod(0o600)
    config = etc / "config.toml"
    config.write_text(f'[s3]\nbucket = "{spec.bucket}"\nendpoint_url = "{rgw.endpoint_url}"\n'
                      f'region = "{rgw.region}"\ncredentials_file = "credentials"\n'
                      f'[host]\nname = "{host}"\n[retention]\ndaily_days = 1\n{extra}'
                      f'[local]\ncache_dir = "{etc / "cache"}"\n'
                      f'state_file = "{etc / "state.json"}"\n')
    return config


def _cli(config: Path, *args: str):  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from s3archive.cli.main import cli

    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def test_host_policies_isolate_hosts_on_rgw(rgw, tmp_path: Path) -> None:
    """RGW evaluates user policies with Resource ARNs and the s3:prefix and
    s3:object-lock-legal-hold conditions: the exact shipped backup and host
    policies let each host archive (and rebuild its cache from its own
    runs) and nothing of another host's: no write, overwrite, read or list;
    no reads of another host's packs, no deletes, no legal holds.  A host
    configured for held runs places holds (on its own runs and packs only)."""
    import boto3
    from botocore.config import Config

    from s3archive.store.s3_store import content_md5

    bucket = f"iso-{os.getpid()}"
    admin = rgw.client()
    admin.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    rgw.admin("caps", "add", "--uid", "s3archive-test", "--caps", "user-policy=*")
    iam = boto3.client("iam", endpoint_url=rgw.endpoint_url, region_name=rgw.region,
                       aws_access_key_id=rgw.access_key, aws_secret_access_key=rgw.secret_key)
    spec = BucketSpec(bucket=bucket, endpoint_url=rgw.endpoint_url, region=rgw.region)
    configs, clients = {}, {}
    for host in ("host-a", "host-b", "held"):
        data = tmp_path / f"{host}-data"
        data.mkdir()
        (data / "file.txt").write_text(f"{host}\n" * 1000)
        key = _host_user(rgw, iam, spec, host, legal_hold=host == "held")
        configs[host] = _host_config(rgw, tmp_path, spec, host, key, data,
                                     "legal_hold = true\n" if host == "held" else "")
        clients[host] = boto3.client(
            "s3", endpoint_url=rgw.endpoint_url, region_name=rgw.region,
            aws_access_key_id=key[0], aws_secret_access_key=key[1],
            config=Config(s3={"addressing_style": "path"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))
        archived = _cli(configs[host], "archive", "--json")
        assert archived.exit_code == 0, archived.output
    # The cache lost: rebuilt from the host's own latest run, under its policy.
    shutil.rmtree(tmp_path / "host-a" / "cache")
    again = _cli(configs["host-a"], "-v", "archive")
    assert again.exit_code == 0, again.output
    assert "rebuilt the local cache from run" in again.stderr

    versions = admin.list_object_versions(Bucket=bucket)["Versions"]
    run_of = {h: next(v for v in versions if v["Key"].startswith(f"runs/{h}/"))
              for h in ("host-a", "host-b", "held")}
    owner = {h: f"{bucket}-{h}" for h in ("host-a", "host-b", "held")}
    pack = next(v for v in versions if v["Key"].startswith("data/")
                and v["Owner"]["ID"] == owner["host-b"])
    own_pack = next(v for v in versions if v["Key"].startswith("data/")
                    and v["Owner"]["ID"] == owner["host-a"])
    meta_pack = next(v for v in versions if v["Key"].startswith("meta/")
                     and v["Owner"]["ID"] == owner["host-b"])
    a = clients["host-a"]
    body = b"planted"
    put = {"Body": body, "ContentMD5": content_md5(body)}
    # Its own runs: listed and read.
    assert _code(a.list_object_versions, Bucket=bucket, Prefix="runs/host-a/") == "ok"
    assert _code(a.get_object, Bucket=bucket, Key=run_of["host-a"]["Key"]) == "ok"
    # Another host's runs: no write, no overwrite, no read, no list.
    b_key = run_of["host-b"]["Key"]
    assert _code(a.put_object, Bucket=bucket, Key="runs/host-b/29991231T000000Z.jsonl.zst",
                 **put) == "AccessDenied"
    assert _code(a.put_object, Bucket=bucket, Key=b_key, **put) == "AccessDenied"
    assert _code(a.get_object, Bucket=bucket, Key=b_key) == "AccessDenied"
    assert _code(a.get_object, Bucket=bucket, Key=b_key,
                 VersionId=run_of["host-b"]["VersionId"]) == "AccessDenied"
    for prefix in ("runs/host-b/", "runs/", "runs/host-", ""):
        assert _code(a.list_object_versions, Bucket=bucket,
                     Prefix=prefix) == "AccessDenied", prefix
        assert _code(a.list_objects_v2, Bucket=bucket, Prefix=prefix) == "AccessDenied", prefix
    assert _code(a.put_object, Bucket=bucket, Key="runs/host-a-evil/x.jsonl.zst",
                 **put) == "AccessDenied"
    denied = _cli(configs["host-a"], "ls", "latest", "--host", "host-b")
    assert denied.exit_code == 1 and "AccessDenied" in denied.stderr
    assert len(denied.stderr.strip().splitlines()) == 1
    # No reads of another host's packs (RGW lets an object's writer read it
    # back through its ACL; AWS with BucketOwnerEnforced does not), no
    # deletes, no legal holds, on its own objects neither.
    assert _code(a.get_object, Bucket=bucket, Key=pack["Key"]) == "AccessDenied"
    assert _code(a.get_object, Bucket=bucket, Key=own_pack["Key"]) == "ok"  # RGW's ACL
    # Metadata packs are readable by name (a host reads its own runs' trees), but no
    # host can list them, and their names are random: only a run names them.
    assert _code(a.get_object, Bucket=bucket, Key=meta_pack["Key"]) == "ok"
    for prefix in ("meta/", "data/", "meta/" + meta_pack["Key"][5:7]):
        assert _code(a.list_object_versions, Bucket=bucket,
                     Prefix=prefix) == "AccessDenied", prefix
    assert _code(a.delete_object, Bucket=bucket, Key=own_pack["Key"],
                 VersionId=own_pack["VersionId"]) == "AccessDenied"
    assert _code(a.delete_object, Bucket=bucket, Key=pack["Key"],
                 VersionId=pack["VersionId"]) == "AccessDenied"
    assert _code(a.delete_object, Bucket=bucket, Key=run_of["host-a"]["Key"],
                 VersionId=run_of["host-a"]["VersionId"],
                 BypassGovernanceRetention=True) == "AccessDenied"
    for key, version in ((pack["Key"], pack["VersionId"]),
                         (own_pack["Key"], own_pack["VersionId"]),
                         (run_of["host-a"]["Key"], run_of["host-a"]["VersionId"])):
        for state in ("ON", "OFF"):
            assert _code(a.put_object_legal_hold, Bucket=bucket, Key=key, VersionId=version,
                         LegalHold={"Status": state}) == "AccessDenied", (key, state)
    # A host asked for held runs placed its holds and cannot lift them.
    held = run_of["held"]
    head = clients["held"].head_object(Bucket=bucket, Key=held["Key"],
                                       VersionId=held["VersionId"])
    assert head["ObjectLockLegalHoldStatus"] == "ON"
    # Lifting is denied by the s3:object-lock-legal-hold condition, which AWS
    # sets (test_setup_template.py::test_legal_holds_are_an_operators_act...)
    # and RGW 16 does not: there the writer of a held object may lift its
    # hold (through the object's ACL).  Pinned here so the README stays true.
    assert _code(clients["held"].put_object_legal_hold, Bucket=bucket, Key=held["Key"],
                 VersionId=held["VersionId"], LegalHold={"Status": "OFF"}) == "ok"
    assert _code(clients["held"].put_object_legal_hold, Bucket=bucket, Key=b_key,
                 VersionId=run_of["host-b"]["VersionId"],
                 LegalHold={"Status": "ON"}) == "AccessDenied"


# ------------------------------------------------------------- cold data


def test_cold_after_writes_exactly_the_rules_intended(rgw) -> None:
    """RGW knows GLACIER_IR here (the session cluster adds the class): the
    lifecycle configuration read back is the expiry rules, unchanged, plus
    the one transition of data/, and the check accepts it."""
    from s3archive.setup import lifecycle

    run = create_resources(rgw, "setup-cold", "--no-bucket-policy", "--cold-after", "3")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert "lifecycle" in result["applied"]
    assert not [d for d in result["check"]["differences"] if d["setting"].startswith("lifecycle")]
    rules = [_with_filter(r) for r in
             rgw.client().get_bucket_lifecycle_configuration(Bucket="setup-cold")["Rules"]]
    assert sorted(rules, key=lambda r: r["ID"]) == sorted(lifecycle.s3_rules(3),
                                                          key=lambda r: r["ID"])
    cold = next(r for r in rules if r["ID"] == "s3archive-cold-data")
    assert cold == {"ID": "s3archive-cold-data", "Status": "Enabled",
                    "Filter": {"Prefix": "data/"},
                    "Transitions": [{"Days": 3, "StorageClass": "GLACIER_IR"}],
                    "NoncurrentVersionTransitions": [{"NoncurrentDays": 2,
                                                      "StorageClass": "GLACIER_IR"}]}
    # Run again without --cold-after: the rule goes, the expiry rules stay.
    again = create_resources(rgw, "setup-cold", "--no-bucket-policy")
    assert again.returncode == 0, again.stderr
    rules = rgw.client().get_bucket_lifecycle_configuration(Bucket="setup-cold")["Rules"]
    assert sorted(r["ID"] for r in rules) == sorted(r["ID"] for r in lifecycle.s3_rules())


def _with_filter(rule: dict) -> dict:
    """RGW answers an empty Filter prefix in the older shape, Prefix: ''."""
    if "Filter" in rule or "Prefix" not in rule:
        return rule
    rest = {k: v for k, v in rule.items() if k != "Prefix"}
    return {**rest, "Filter": {"Prefix": rule["Prefix"]}}


def test_check_flags_a_transition_of_metadata_read_back_from_rgw(rgw) -> None:
    """An operator's rule that moves runs/ (or the whole bucket) is named by
    the read-back check; the check asks the bucket, not our own rule list."""
    from s3archive.setup import lifecycle
    from s3archive.setup.bucket_check import check_bucket

    s3 = rgw.client()
    s3.create_bucket(Bucket="setup-cold-bad", ObjectLockEnabledForBucket=True)
    s3.put_bucket_versioning(Bucket="setup-cold-bad",
                             VersioningConfiguration={"Status": "Enabled"})
    rogue = {"ID": "operator-runs", "Status": "Enabled", "Filter": {"Prefix": "runs/"},
             "Transitions": [{"Days": 10, "StorageClass": "GLACIER_IR"}]}
    s3.put_bucket_lifecycle_configuration(
        Bucket="setup-cold-bad",
        LifecycleConfiguration={"Rules": [*lifecycle.s3_rules(30), rogue]})
    spec = BucketSpec(bucket="setup-cold-bad", endpoint_url=rgw.endpoint_url, cold_after=30)
    found = [(d.setting, d.actual) for d in check_bucket(s3, spec, None).differences
             if d.setting.startswith("lifecycle")]
    assert found == [("lifecycle transition",
                      "rule operator-runs (prefix 'runs/') moves GLACIER_IR objects under "
                      "runs/: metadata and format-1 packs must stay STANDARD")]
