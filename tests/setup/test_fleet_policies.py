"""The shipped IAM policies allow exactly what a fleet needs (docs/FORMAT.md part 2, 16):
a backup host writes, lists and reads its group's index objects and extends the lock
of packs another host uploaded; it cannot read data, another host's runs, or delete
anything.  The policy documents are evaluated here; ``test_fleet_on_moto_with_iam``
runs two hosts and the auditor's ``fleet`` through the real CLI with IAM enforced."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from s3archive.setup import policies
from s3archive.setup.spec import BucketSpec
from support.moto_server import MotoServer, moto_server
from support.setup_policy_eval import combined, decision

BUCKET = "fleet-policies"
ARN = f"arn:aws:s3:::{BUCKET}"


def _resolved(document: dict) -> dict:
    return policies.resolve(document, partition="aws", account_id="123456789012",
                            region="us-east-1")


def test_backup_hosts_share_the_group_index_and_lease_each_others_packs() -> None:
    spec = BucketSpec(bucket=BUCKET)
    web1 = _resolved(combined(policies.backup_policy(spec), policies.host_policy(spec, "web1")))
    index = f"{ARN}/index/plain-all/20270110/20270110T014217Z-web2-20270110T013004Z-p0.idx"
    for action in ("s3:PutObject", "s3:PutObjectRetention", "s3:GetObject",
                   "s3:GetObjectVersion"):
        assert decision(web1, action, index) == "Allow", action
    assert decision(web1, "s3:ListBucket", ARN, {"s3:prefix": "index/plain-all/20270110/"}) \
        == "Allow"
    # another host's pack: lease it, never read it
    assert decision(web1, "s3:PutObjectRetention", f"{ARN}/data/ab/abcd") == "Allow"
    assert decision(web1, "s3:GetObject", f"{ARN}/data/ab/abcd") == "ImplicitDeny"
    # another host's runs: neither read nor list
    assert decision(web1, "s3:GetObject", f"{ARN}/runs/web2/r.jsonl.zst") == "ImplicitDeny"
    assert decision(web1, "s3:ListBucket", ARN, {"s3:prefix": "runs/web2/"}) == "ImplicitDeny"
    assert decision(web1, "s3:ListBucket", ARN, {"s3:prefix": ""}) == "ImplicitDeny"
    # delete nothing, not even an index object
    for key in (index, f"{ARN}/data/ab/abcd", f"{ARN}/runs/web1/r.jsonl.zst"):
        assert decision(web1, "s3:DeleteObject", key) == "Deny"
        assert decision(web1, "s3:DeleteObjectVersion", key) == "Deny"
    assert decision(web1, "s3:BypassGovernanceRetention", index) == "Deny"
    # the auditor reads runs and locks, never the index or data
    audit = _resolved(policies.audit_policy(spec))
    assert decision(audit, "s3:GetObject", f"{ARN}/runs/web2/r.jsonl.zst") == "Allow"
    assert decision(audit, "s3:GetObject", index) == "ImplicitDeny"
    assert decision(audit, "s3:PutObject", f"{ARN}/runs/web2/r.jsonl.zst") == "ImplicitDeny"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """As in test_setup_moto.py: moto 5 miscomputes some S3 SigV4 signatures, so the
    comparison is off; callers are still identified by key and authorised by IAM."""
    from moto.iam.access_control import S3IAMRequest

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3IAMRequest, "check_signature", lambda self: None)
        with moto_server() as server:
            yield server


@dataclass
class _Result:
    returncode: int
    stdout: str
    stderr: str


def _cli(moto: MotoServer, *args: str, admin: bool = True) -> _Result:
    """The real CLI, in this process (a subprocess per command costs seconds); admin
    credentials in the environment only for the setup commands."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               AWS_EC2_METADATA_DISABLED="true", JOURNAL_STREAM="")
    if admin:
        env.update(moto.admin_env())
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return _Result(result.exit_code, result.stdout, result.stderr)


def _host(moto: MotoServer, tmp_path: Path, host: str, data: Path) -> tuple[Path, tuple[str, str]]:
    root = tmp_path / host
    written = _cli(moto, "write-config", "--root", str(root), "--bucket", BUCKET,
                   "--endpoint-url", moto.endpoint_url, "--host-name", host,
                   "--create-user", f"{host}-backup", "--cache-dir", str(root / "cache"),
                   "--state-file", str(root / "state.json"), "--daily-days", "2")
    assert written.returncode == 0, written.stderr
    etc = root / "etc/s3archive"
    values = dict(line.split(" = ", 1) for line in (etc / "credentials").read_text().splitlines()
                  if " = " in line)
    picker = etc / "pickers.d/50-data"
    picker.write_text(f"#!/bin/sh\necho {data}\n")
    picker.chmod(0o755)
    return etc / "config.toml", (values["aws_access_key_id"], values["aws_secret_access_key"])


def test_fleet_on_moto_with_iam(moto: MotoServer, tmp_path: Path) -> None:
    from botocore.exceptions import ClientError

    moto.set_iam_enforcement(False)
    setup = _cli(moto, "create-resources", "--bucket", BUCKET, "--endpoint-url",
                 moto.endpoint_url, "--iam", "--no-bucket-policy")
    assert setup.returncode == 0, setup.stderr
    data = tmp_path / "data"
    data.mkdir()
    (data / "image.bin").write_bytes(os.urandom(600_000))
    config_a, _ = _host(moto, tmp_path, "web1", data)
    config_b, key_b = _host(moto, tmp_path, "web2", data)
    iam = moto.client("iam")
    iam.create_user(UserName="auditor")
    iam.add_user_to_group(GroupName=f"s3archive-{BUCKET}-audit", UserName="auditor")
    audit_key = iam.create_access_key(UserName="auditor")["AccessKey"]
    audit_creds = tmp_path / "audit-credentials"
    audit_creds.write_text(f"[default]\naws_access_key_id = {audit_key['AccessKeyId']}\n"
                           f"aws_secret_access_key = {audit_key['SecretAccessKey']}\n")
    audit_creds.chmod(0o600)
    audit_config = tmp_path / "audit.toml"
    audit_config.write_text(config_a.read_text().replace(
        'credentials_file = "credentials"', f'credentials_file = "{audit_creds}"'))

    moto.set_iam_enforcement(True)
    try:
        first = _cli(moto, "--config", str(config_a), "archive", "--json", admin=False)
        assert first.returncode == 0, first.stderr
        second = _cli(moto, "--config", str(config_b), "archive", "--json", admin=False)
        assert second.returncode == 0, second.stderr
        a, b = json.loads(first.stdout), json.loads(second.stdout)
        assert a["bytes_uploaded"] > 600_000
        assert b["bytes_uploaded"] < 0.01 * a["bytes_uploaded"], (a, b)
        # web2 reads the group index, but not web1's runs, and deletes nothing (moto
        # ignores the s3:prefix conditions of listing: proven by the evaluator above)
        web2 = moto.client("s3", *key_b)
        index = web2.list_objects_v2(Bucket=BUCKET, Prefix="index/plain-all/")["Contents"]
        assert len(index) == 1 and "-web1-" in index[0]["Key"]
        assert web2.get_object(Bucket=BUCKET, Key=index[0]["Key"])["Body"].read()
        for call, kwargs in ((web2.delete_object, {"Key": index[0]["Key"]}),
                             (web2.get_object, {"Key": f"runs/web1/{a['run_id']}.jsonl.zst"})):
            with pytest.raises(ClientError) as denied:
                call(Bucket=BUCKET, **kwargs)
            assert denied.value.response["Error"]["Code"] == "AccessDenied"
        # the auditor sees the fleet: both hosts, web2 sharing web1's data
        view = _cli(moto, "--config", str(audit_config), "fleet", "--json", admin=False)
        assert view.returncode == 0, view.stderr
        hosts = {h["host"]: h for h in json.loads(view.stdout)["hosts"]}
        assert sorted(hosts) == ["web1", "web2"]
        assert hosts["web2"]["bytes_shared"] >= 600_000
        assert hosts["web2"]["bytes_uploaded"] == b["bytes_uploaded"]
    finally:
        moto.set_iam_enforcement(False)
