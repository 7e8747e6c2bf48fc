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
import subprocess
import sys
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
                    "cloudformation", "--endpoint-url", moto.endpoint_url, "--json")
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
    assert "IAM role cfn-bucket-s3archive-backup" not in settings  # moto does make roles
    assert result["outputs"]["BucketName"] == "cfn-bucket"


def test_s3_api_method_on_moto_is_configured_as_asked(moto: MotoServer) -> None:
    moto.set_iam_enforcement(False)
    run = s3archive(moto, "create-resources", "--bucket", "api-bucket", "--endpoint-url",
                    moto.endpoint_url, "--iam", "--no-bucket-policy", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["method"] == "s3-api"
    # With an endpoint URL, BlockPublicAcls stays off (Ceph RGW would deny
    # every PUT); everything else is as asked.
    assert [(d["setting"], d["actual"]) for d in result["check"]["differences"]] == [
        ("public access block", "off: BlockPublicAcls")]
    assert result["outputs"]["BackupGroupName"] == "s3archive-api-bucket-backup"


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


def test_least_privilege_end_to_end(moto: MotoServer, tmp_path: Path) -> None:
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

    root = tmp_path / "root"
    written = s3archive(moto, "write-config", "--root", str(root), "--bucket", bucket,
                        "--endpoint-url", moto.endpoint_url, "--host-name", "lp-host",
                        "--create-user", "lp-host-backup", "--cache-dir", str(tmp_path / "cache"),
                        "--state-file", str(tmp_path / "state/last-run.json"), "--daily-days", "2")
    assert written.returncode == 0, written.stderr
    config = root / "etc/s3archive/config.toml"
    credentials = root / "etc/s3archive/credentials"
    assert credentials.stat().st_mode & 0o777 == 0o600
    secret_line = next(l for l in credentials.read_text().splitlines()
                       if l.startswith("aws_secret_access_key"))
    assert secret_line.split("=", 1)[1].strip() not in written.stdout + written.stderr
    key_id = next(l for l in credentials.read_text().splitlines()
                  if l.startswith("aws_access_key_id")).split("=", 1)[1].strip()
    backup_secret = secret_line.split("=", 1)[1].strip()
    restore_key = _access_key(moto, "lp-restorer", "s3archive-lp-bucket-restore")

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n" * 1000)
    (data / "sub" / "b.bin").write_bytes(os.urandom(70_000))
    picker = root / "etc/s3archive/pickers.d/50-test-data"
    picker.write_text(f"#!/bin/sh\necho {data}\n")
    picker.chmod(0o755)

    moto.set_iam_enforcement(True)
    try:
        # The backup credentials run archive end to end ...
        archive = s3archive(moto, "--config", str(config), "archive", "--json", admin=False)
        assert archive.returncode == 0, archive.stderr
        backup = moto.client("s3", key_id, backup_secret)
        versions = backup.list_object_versions(Bucket=bucket)["Versions"]
        assert any(v["Key"].startswith("packs/") for v in versions)
        assert any(v["Key"].startswith("runs/") for v in versions)
        pack = next(v for v in versions if v["Key"].startswith("packs/"))
        # ... and are denied deletes, bucket changes and other buckets.
        assert _denied(backup.delete_object, Bucket=bucket, Key=pack["Key"],
                       VersionId=pack["VersionId"]) == "AccessDenied"
        assert _denied(backup.put_bucket_policy, Bucket=bucket,
                       Policy=json.dumps({"Version": "2012-10-17", "Statement": []})) == "AccessDenied"
        assert _denied(backup.put_bucket_lifecycle_configuration, Bucket=bucket,
                       LifecycleConfiguration={"Rules": [{"ID": "x", "Status": "Enabled",
                                                          "Filter": {"Prefix": ""},
                                                          "Expiration": {"Days": 1}}]}) == "AccessDenied"
        assert _denied(backup.put_object_lock_configuration, Bucket=bucket,
                       ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}) == "AccessDenied"
        assert _denied(backup.get_object, Bucket="someone-elses", Key="secret") == "AccessDenied"
        assert _denied(backup.list_objects_v2, Bucket="someone-elses") == "AccessDenied"

        # Restore credentials restore ...
        restore_creds = tmp_path / "restore-credentials"
        fd = os.open(restore_creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"[default]\naws_access_key_id = {restore_key[0]}\n"
                         f"aws_secret_access_key = {restore_key[1]}\n")
        restore_config = tmp_path / "restore.toml"
        restore_config.write_text(config.read_text().replace(
            'credentials_file = "credentials"', f'credentials_file = "{restore_creds}"'))
        target = tmp_path / "restored"
        restored = s3archive(moto, "--config", str(restore_config), "restore", "latest",
                             "--target", str(target), admin=False)
        assert restored.returncode == 0, restored.stderr
        assert (target / data.relative_to("/") / "a.txt").read_text() == "alpha\n" * 1000
        assert (target / data.relative_to("/") / "sub/b.bin").read_bytes() == \
            (data / "sub" / "b.bin").read_bytes()
        # ... and cannot write.
        reader = moto.client("s3", *restore_key)
        assert _denied(reader.put_object, Bucket=bucket, Key="packs/zz/junk",
                       Body=b"junk") == "AccessDenied"
        assert _denied(reader.delete_object, Bucket=bucket, Key=pack["Key"],
                       VersionId=pack["VersionId"]) == "AccessDenied"
    finally:
        moto.set_iam_enforcement(False)
