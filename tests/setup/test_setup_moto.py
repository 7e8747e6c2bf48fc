"""create-resources and write-config against moto over HTTP: the
CloudFormation API path, and least privilege with IAM enforcement on.

moto is where IAM is enforced, and it is not faithful everywhere: its
CloudFormation ignores a bucket's lock, versioning, lifecycle and policy and
IAM groups (the read-back check must catch that), it ignores IAM policy
conditions and s3:BypassGovernanceRetention, and applies every bucket-policy
Deny to every caller (so the bucket here has --no-bucket-policy).  Those
statements are tested at the template level in test_setup_template.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.moto_server import MotoServer, moto_server

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """moto 5 miscomputes the SigV4 signature of S3 requests whose query has a
    '/' (ListObjectVersions Prefix=runs/host/) and answers SignatureDoesNotMatch.
    The server runs in this process, so its S3 signature comparison is switched
    off here: the caller is still identified by its access key id (an unknown
    key is refused) and every request is still authorised against its IAM
    policies, which is what these tests are about."""
    from moto.iam.access_control import S3IAMRequest

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3IAMRequest, "check_signature", lambda self: None)
        with moto_server() as server:
            yield server


def s3archive(moto: MotoServer, *args: str, admin: bool = True,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess; admin credentials in the environment only
    for the setup commands (archive and restore use the credentials file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PYTHONPATH=str(REPO), AWS_CONFIG_FILE="/nonexistent",
               AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_EC2_METADATA_DISABLED="true")
    if admin:
        env.update(moto.admin_env())
    return subprocess.run([sys.executable, "-m", "s3archive", *args], capture_output=True,
                          text=True, env=env, cwd=cwd or REPO, timeout=120)


def test_cloudformation_success_is_not_trusted(moto: MotoServer) -> None:
    """moto's stack reports CREATE_COMPLETE but the bucket has no lock,
    versioning, lifecycle or policy and no groups exist: exit 1, all named."""
    moto.set_iam_enforcement(False)
    run = s3archive(moto, "create-resources", "--bucket", "cfn-bucket", "--method",
                    "cloudformation", "--endpoint-url", moto.endpoint_url, "--host", "web1",
                    "--json")
    assert run.returncode == 1, run.stderr
    result = json.loads(run.stdout)
    assert result["method"] == "cloudformation"
    assert moto.client("cloudformation").describe_stacks(
        StackName="s3archive-cfn-bucket")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    settings = {d["setting"]: d for d in result["check"]["differences"]}
    assert settings["object lock"]["fatal"] and settings["versioning"]["fatal"]
    assert "lifecycle" in settings
    assert any(s.startswith("bucket policy") for s in settings)
    assert "IAM group s3archive-cfn-bucket-backup" in settings
    assert "IAM role cfn-bucket-s3archive-restore" not in settings  # moto does make roles
    assert "IAM role cfn-bucket-host-web1" not in settings
    assert result["outputs"]["BucketName"] == "cfn-bucket"


def test_s3_api_method_on_moto_is_configured_as_asked(moto: MotoServer) -> None:
    moto.set_iam_enforcement(False)
    run = s3archive(moto, "create-resources", "--bucket", "api-bucket", "--endpoint-url",
                    moto.endpoint_url, "--iam", "--no-bucket-policy", "--host", "web1",
                    "--host", "db1", "--legal-hold", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["method"] == "s3-api"
    # With an endpoint URL, BlockPublicAcls stays off (Ceph RGW would deny
    # every PUT); everything else is as asked.
    assert [(d["setting"], d["actual"]) for d in result["check"]["differences"]] == [
        ("public access block", "off: BlockPublicAcls")]
    assert result["outputs"]["BackupGroupName"] == "s3archive-api-bucket-backup"
    # Each --host has a role of its own: the shared backup policy and its runs.
    iam = moto.client("iam")
    for index, host in ((1, "web1"), (2, "db1")):
        role = f"api-bucket-host-{host}"
        assert result["outputs"][f"Host{index}RoleArn"].endswith(f":role/{role}")
        attached = {p["PolicyName"] for p in
                    iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]}
        assert attached == {"s3archive-api-bucket-backup", f"s3archive-api-bucket-host-{host}"}
        profile = iam.get_instance_profile(InstanceProfileName=role)["InstanceProfile"]
        assert [r["RoleName"] for r in profile["Roles"]] == [role]
        arn = next(p["PolicyArn"] for p in
                   iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
                   if p["PolicyName"].endswith(host))
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        document = iam.get_policy_version(PolicyArn=arn, VersionId=version)[
            "PolicyVersion"]["Document"]
        if isinstance(document, str):
            document = json.loads(urllib.parse.unquote(document))
        sids = [st["Sid"] for st in document["Statement"]]
        assert sids == ["WriteAndReadOwnRuns", "ListOwnRuns",
                        "PlaceLegalHoldsOnOwnRunsAndPacks", "DenyLiftingLegalHolds"]
        assert document["Statement"][0]["Resource"] == f"arn:aws:s3:::api-bucket/runs/{host}/*"
    assert "BackupRoleArn" not in result["outputs"]
    # Running it again updates in place.
    again = s3archive(moto, "create-resources", "--bucket", "api-bucket", "--endpoint-url",
                      moto.endpoint_url, "--iam", "--no-bucket-policy", "--host", "web1",
                      "--json")
    assert again.returncode == 0, again.stderr


def _archive_available() -> bool:
    from s3archive.cli.main import cli

    return "archive" in cli.commands and "restore" in cli.commands


def _access_key(moto: MotoServer, user: str, group: str) -> tuple[str, str]:
    iam = moto.client("iam")
    iam.create_user(UserName=user)
    iam.add_user_to_group(GroupName=group, UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _denied(call, **kwargs) -> str:  # type: ignore[no-untyped-def]
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return str(caught.value.response["Error"]["Code"])


def _write_host(moto: MotoServer, tmp_path: Path, bucket: str, host: str,
                *extra: str) -> tuple[Path, tuple[str, str], Path]:
    """write-config --create-user for ``host``; a picker of its own data.
    Returns the config, the user's key and the data directory."""
    root = tmp_path / host
    written = s3archive(moto, "write-config", "--root", str(root), "--bucket", bucket,
                        "--endpoint-url", moto.endpoint_url, "--host-name", host,
                        "--create-user", f"{host}-backup", "--cache-dir",
                        str(tmp_path / host / "cache"), "--state-file",
                        str(tmp_path / host / "state/last-run.json"), "--daily-days", "2", *extra)
    assert written.returncode == 0, written.stderr
    credentials = root / "etc/s3archive/credentials"
    assert credentials.stat().st_mode & 0o777 == 0o600
    values = dict(line.split(" = ", 1) for line in credentials.read_text().splitlines()
                  if " = " in line)
    assert values["aws_secret_access_key"] not in written.stdout + written.stderr
    assert f'name = "{host}"' in (root / "etc/s3archive/config.toml").read_text()
    data = tmp_path / f"{host}-data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text(f"{host} alpha\n" * 1000)
    (data / "sub" / "b.bin").write_bytes(os.urandom(70_000))
    picker = root / "etc/s3archive/pickers.d/50-test-data"
    picker.write_text(f"#!/bin/sh\necho {data}\n")
    picker.chmod(0o755)
    return (root / "etc/s3archive/config.toml",
            (values["aws_access_key_id"], values["aws_secret_access_key"]), data)


def test_least_privilege_end_to_end(moto: MotoServer, tmp_path: Path) -> None:
    """Two hosts with users from write-config --create-user, IAM enforced:
    each archives (and rebuilds its cache from its own runs), neither can
    write, overwrite or read the other's runs, read packs, delete or change
    the bucket; the restore role restores either host.

    moto substitutes no policy variables (hence one policy per host, with
    literal ARNs, which it does evaluate), ignores conditions and authorises
    PUT ?legal-hold as s3:PutObject: that a host cannot *list* another
    host's runs (the s3:prefix condition) nor place or lift legal holds is
    proven against RGW's policy evaluation in
    test_setup_rgw.py::test_host_policies_isolate_hosts_on_rgw."""
    if not _archive_available():
        pytest.skip("archive not yet available")
    moto.set_iam_enforcement(False)
    bucket = "lp-bucket"
    setup = s3archive(moto, "create-resources", "--bucket", bucket, "--endpoint-url",
                      moto.endpoint_url, "--iam", "--no-bucket-policy")
    assert setup.returncode == 0, setup.stderr
    admin_s3 = moto.client("s3")
    admin_s3.create_bucket(Bucket="someone-elses")
    admin_s3.put_object(Bucket="someone-elses", Key="secret", Body=b"not yours")
    config_a, key_a, _ = _write_host(moto, tmp_path, bucket, "host-a")
    config_b, key_b, data_b = _write_host(moto, tmp_path, bucket, "host-b")
    iam = moto.client("iam")
    assert iam.list_user_policies(UserName="host-a-backup")["PolicyNames"] == [
        "s3archive-lp-bucket-host-host-a"]
    # One IAM user serves one host: reusing host-a's user for host-c is refused.
    reused = s3archive(moto, "write-config", "--root", str(tmp_path / "c"), "--bucket", bucket,
                       "--endpoint-url", moto.endpoint_url, "--host-name", "host-c",
                       "--create-user", "host-a-backup")
    assert reused.returncode == 2
    assert "already holds s3archive-lp-bucket-host-host-a" in reused.stderr
    restore_key = _access_key(moto, "lp-restorer", "s3archive-lp-bucket-restore")

    moto.set_iam_enforcement(True)
    try:
        # Each host's credentials run archive end to end ...
        for config in (config_a, config_b):
            archive = s3archive(moto, "--config", str(config), "archive", "--json", admin=False)
            assert archive.returncode == 0, archive.stderr
        # ... and again with the cache lost: rebuilt from the host's own latest run.
        shutil.rmtree(tmp_path / "host-a" / "cache")
        again = s3archive(moto, "-v", "--config", str(config_a), "archive", admin=False)
        assert again.returncode == 0, again.stderr
        assert "rebuilt the local cache from run" in again.stderr
        own = s3archive(moto, "--config", str(config_a), "ls", "latest", admin=False)
        assert own.returncode == 0 and "a.txt" in own.stdout, own.stderr

        host_a = moto.client("s3", *key_a)
        moto.set_iam_enforcement(False)  # the admin key is no IAM user
        admin_versions = admin_s3.list_object_versions(Bucket=bucket)["Versions"]
        moto.set_iam_enforcement(True)
        b_run = next(v for v in admin_versions if v["Key"].startswith("runs/host-b/"))
        pack = next(v for v in admin_versions if v["Key"].startswith("data/"))
        # Host A cannot write, overwrite or read host B's runs ...
        assert _denied(host_a.put_object, Bucket=bucket, Key="runs/host-b/29991231T000000Z"
                       ".jsonl.zst", Body=b"planted") == "AccessDenied"
        assert _denied(host_a.put_object, Bucket=bucket, Key=b_run["Key"],
                       Body=b"overwritten") == "AccessDenied"
        assert _denied(host_a.get_object, Bucket=bucket, Key=b_run["Key"],
                       VersionId=b_run["VersionId"]) == "AccessDenied"
        other = s3archive(moto, "--config", str(config_a), "ls", "latest", "--host", "host-b",
                          admin=False)
        assert other.returncode == 1 and "AccessDenied" in other.stderr
        assert len(other.stderr.strip().splitlines()) == 1  # one line, no traceback
        # ... nor runs outside any host, nor read packs.
        assert _denied(host_a.put_object, Bucket=bucket, Key="runs/x.jsonl.zst",
                       Body=b"x") == "AccessDenied"
        assert _denied(host_a.get_object, Bucket=bucket, Key=pack["Key"]) == "AccessDenied"
        # No deletes, no bucket changes, no other buckets.  (moto authorises
        # PUT ?legal-hold and ?retention as s3:PutObject: legal holds are
        # proven on RGW and by the evaluator, not here.)
        assert _denied(host_a.delete_object, Bucket=bucket, Key=pack["Key"],
                       VersionId=pack["VersionId"]) == "AccessDenied"
        assert _denied(host_a.put_bucket_policy, Bucket=bucket,
                       Policy=json.dumps({"Version": "2012-10-17", "Statement": []})) == "AccessDenied"
        assert _denied(host_a.put_bucket_lifecycle_configuration, Bucket=bucket,
                       LifecycleConfiguration={"Rules": [{"ID": "x", "Status": "Enabled",
                                                          "Filter": {"Prefix": ""},
                                                          "Expiration": {"Days": 1}}]}) == "AccessDenied"
        assert _denied(host_a.put_object_lock_configuration, Bucket=bucket,
                       ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}) == "AccessDenied"
        assert _denied(host_a.get_object, Bucket="someone-elses", Key="secret") == "AccessDenied"
        assert _denied(host_a.list_objects_v2, Bucket="someone-elses") == "AccessDenied"
        # Host B's credentials are as confined (the policy is per host, not per "first").
        host_b = moto.client("s3", *key_b)
        a_run = next(v for v in admin_versions if v["Key"].startswith("runs/host-a/"))
        assert _denied(host_b.get_object, Bucket=bucket, Key=a_run["Key"]) == "AccessDenied"

        # Restore credentials (the operator's) restore any host ...
        restore_creds = tmp_path / "restore-credentials"
        fd = os.open(restore_creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"[default]\naws_access_key_id = {restore_key[0]}\n"
                         f"aws_secret_access_key = {restore_key[1]}\n")
        restore_config = tmp_path / "restore.toml"
        restore_config.write_text(config_b.read_text().replace(
            'credentials_file = "credentials"', f'credentials_file = "{restore_creds}"'))
        target = tmp_path / "restored"
        restored = s3archive(moto, "--config", str(restore_config), "restore", "latest",
                             "--target", str(target), admin=False)
        assert restored.returncode == 0, restored.stderr
        assert (target / data_b.relative_to("/") / "a.txt").read_text() == "host-b alpha\n" * 1000
        assert (target / data_b.relative_to("/") / "sub/b.bin").read_bytes() == \
            (data_b / "sub" / "b.bin").read_bytes()
        # ... and cannot write.
        reader = moto.client("s3", *restore_key)
        assert _denied(reader.put_object, Bucket=bucket, Key="data/zz/junk",
                       Body=b"junk") == "AccessDenied"
        assert _denied(reader.delete_object, Bucket=bucket, Key=pack["Key"],
                       VersionId=pack["VersionId"]) == "AccessDenied"
    finally:
        moto.set_iam_enforcement(False)


def test_create_user_needs_a_host_name_fit_for_a_policy(moto: MotoServer, tmp_path: Path) -> None:
    for host in ("*", "web?", "${aws:username}"):
        refused = s3archive(moto, "write-config", "--root", str(tmp_path / "r"), "--bucket",
                            "lp-bucket", "--endpoint-url", moto.endpoint_url, "--host-name", host,
                            "--create-user", "wild")
        assert refused.returncode == 2, refused.stderr
        assert "--host-name" in refused.stderr and "no wildcards" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1


def test_create_user_pins_this_host_and_asks_for_held_runs(moto: MotoServer,
                                                           tmp_path: Path) -> None:
    """Without --host-name the user is made for this machine's name, which the
    configuration then names; --legal-hold writes legal_hold = true and lets
    the user place (never lift) holds."""
    import socket

    moto.set_iam_enforcement(False)
    setup = s3archive(moto, "create-resources", "--bucket", "lh-bucket", "--endpoint-url",
                      moto.endpoint_url, "--iam", "--no-bucket-policy")
    assert setup.returncode == 0, setup.stderr
    root = tmp_path / "root"
    written = s3archive(moto, "write-config", "--root", str(root), "--bucket", "lh-bucket",
                        "--endpoint-url", moto.endpoint_url, "--create-user", "lh-user",
                        "--legal-hold")
    assert written.returncode == 0, written.stderr
    host = socket.gethostname()
    config = (root / "etc/s3archive/config.toml").read_text()
    assert f'name = "{host}"' in config
    assert "\nlegal_hold = true" in config
    iam = moto.client("iam")
    name = f"s3archive-lh-bucket-host-{host}"
    assert iam.list_user_policies(UserName="lh-user")["PolicyNames"] == [name]
    document = iam.get_user_policy(UserName="lh-user", PolicyName=name)["PolicyDocument"]
    if isinstance(document, str):
        document = json.loads(urllib.parse.unquote(document))
    held = {s["Sid"]: s for s in document["Statement"]}
    assert held["PlaceLegalHoldsOnOwnRunsAndPacks"]["Condition"] == {
        "StringEquals": {"s3:object-lock-legal-hold": "ON"}}
    assert "DenyLiftingLegalHolds" in held and "DenyLegalHolds" not in held
    groups = iam.list_groups_for_user(UserName="lh-user")["Groups"]
    assert [g["GroupName"] for g in groups] == ["s3archive-lh-bucket-backup"]


def test_shipped_read_policies_read_cold_data_without_a_restore_request(moto: MotoServer) -> None:
    """GLACIER_IR needs no RestoreObject: with IAM enforced, the restore
    group's policy (unchanged by --cold-after) lists, HEADs and reads a cold
    data pack, ranged too, and the audit group's reads its locks and the hot
    runs.  The contrast shows the test can fail: a GLACIER object is not
    readable at all, and RestoreObject is granted to nobody."""
    from s3archive.setup import lifecycle

    moto.set_iam_enforcement(False)
    bucket = "cold-bucket"
    setup = s3archive(moto, "create-resources", "--bucket", bucket, "--endpoint-url",
                      moto.endpoint_url, "--iam", "--no-bucket-policy", "--cold-after", "30")
    assert setup.returncode == 0, setup.stderr
    admin_s3 = moto.client("s3")
    assert admin_s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == \
        lifecycle.s3_rules(30)
    body = bytes(range(256)) * 64
    cold = admin_s3.put_object(Bucket=bucket, Key="data/ab/cold", Body=body,
                               StorageClass="GLACIER_IR")["VersionId"]
    admin_s3.put_object(Bucket=bucket, Key="data/ab/archived", Body=body,
                        StorageClass="GLACIER")
    admin_s3.put_object(Bucket=bucket, Key="runs/h1/20260101T000000Z.jsonl.zst", Body=b"run")
    restorer = moto.client("s3", *_access_key(moto, "cold-restorer",
                                               f"s3archive-{bucket}-restore"))
    auditor = moto.client("s3", *_access_key(moto, "cold-auditor", f"s3archive-{bucket}-audit"))
    moto.set_iam_enforcement(True)
    try:
        listed = restorer.list_object_versions(Bucket=bucket, Prefix="data/")["Versions"]
        assert {v["Key"]: v["StorageClass"] for v in listed} == {
            "data/ab/cold": "GLACIER_IR", "data/ab/archived": "GLACIER"}
        assert restorer.head_object(Bucket=bucket, Key="data/ab/cold",
                                    VersionId=cold)["StorageClass"] == "GLACIER_IR"
        assert restorer.get_object(Bucket=bucket, Key="data/ab/cold",
                                   VersionId=cold)["Body"].read() == body
        assert restorer.get_object(Bucket=bucket, Key="data/ab/cold", VersionId=cold,
                                   Range="bytes=256-511")["Body"].read() == body[256:512]
        assert _denied(restorer.get_object, Bucket=bucket,
                       Key="data/ab/archived") == "InvalidObjectState"
        assert _denied(restorer.restore_object, Bucket=bucket, Key="data/ab/archived",
                       RestoreRequest={"Days": 1}) == "AccessDenied"
        assert auditor.get_object(Bucket=bucket, Key="runs/h1/20260101T000000Z.jsonl.zst")[
            "Body"].read() == b"run"
        assert auditor.list_object_versions(Bucket=bucket)["Versions"]
        assert _denied(auditor.get_object, Bucket=bucket, Key="data/ab/cold") == "AccessDenied"
    finally:
        moto.set_iam_enforcement(False)
