"""The shipped IAM policies allow exactly what a fleet needs (docs/FORMAT.md part 2, 16):
a backup host writes, lists and reads its group's index objects and extends the lock
of packs another host uploaded; it cannot read data, another host's runs, or delete
anything.  The policy documents are evaluated here; ``test_fleet_on_moto_with_iam``
runs two hosts and the auditor's ``fleet`` through the real CLI with IAM enforced."""

from __future__ import annotations

import json
import os
import shlex
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


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_walkthrough() -> list[list[str]]:
    """The s3archive commands of the README's "Running a fleet" block, in order."""
    text = README.read_text()
    block = text.split("<!-- fleet-walkthrough -->\n```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.splitlines() if line.startswith("s3archive ")]


def test_readme_fleet_walkthrough(moto: MotoServer, tmp_path: Path) -> None:
    """A new user's fleet from the README, on moto with IAM enforced: the bucket, two
    hosts with users of their own, their runs (the second uploads under 1 % of the
    first's bytes), and the auditor's fleet view; the host policies allow the group
    index and leases of each other's packs, and nothing of another host's runs."""
    from botocore.exceptions import ClientError

    steps = readme_walkthrough()
    assert [step[1] for step in steps] == ["create-resources", "write-config",
                                           "write-config", "archive", "fleet"], steps
    bucket = steps[0][steps[0].index("--bucket") + 1]
    moto.set_iam_enforcement(False)
    setup = _cli(moto, *steps[0][1:], "--endpoint-url", moto.endpoint_url,
                 "--no-bucket-policy")  # moto applies bucket-policy Denies to everyone
    assert setup.returncode == 0, setup.stderr
    data = tmp_path / "image"
    data.mkdir()
    (data / "image.bin").write_bytes(os.urandom(600_000))
    configs, keys = [], []
    for step in steps[1:3]:
        host = step[step.index("--host-name") + 1]
        root = tmp_path / host
        written = _cli(moto, *step[1:], "--endpoint-url", moto.endpoint_url, "--root",
                       str(root), "--cache-dir", str(root / "cache"), "--state-file",
                       str(root / "state.json"))
        assert written.returncode == 0, written.stderr
        etc = root / "etc/s3archive"
        values = dict(line.split(" = ", 1) for line in
                      (etc / "credentials").read_text().splitlines() if " = " in line)
        keys.append((values["aws_access_key_id"], values["aws_secret_access_key"]))
        picker = etc / "pickers.d/50-image"
        picker.write_text(f"#!/bin/sh\necho {data}\n")
        picker.chmod(0o755)
        configs.append(etc / "config.toml")
    iam = moto.client("iam")
    iam.create_user(UserName="auditor")
    iam.add_user_to_group(GroupName=f"s3archive-{bucket}-audit", UserName="auditor")
    audit_key = iam.create_access_key(UserName="auditor")["AccessKey"]
    audit_creds = tmp_path / "audit-credentials"
    audit_creds.write_text(f"[default]\naws_access_key_id = {audit_key['AccessKeyId']}\n"
                           f"aws_secret_access_key = {audit_key['SecretAccessKey']}\n")
    audit_creds.chmod(0o600)
    audit_config = tmp_path / "audit.toml"
    audit_config.write_text(configs[0].read_text().replace(
        'credentials_file = "credentials"', f'credentials_file = "{audit_creds}"'))

    moto.set_iam_enforcement(True)
    try:
        runs = []
        for config in configs:
            run = _cli(moto, "--config", str(config), *steps[3][1:], "--json", admin=False)
            assert run.returncode == 0, run.stderr
            runs.append(json.loads(run.stdout))
        a, b = runs
        assert a["bytes_uploaded"] > 600_000
        assert b["bytes_uploaded"] < 0.01 * a["bytes_uploaded"], (a, b)
        # web2 reads the group index, but not web1's runs, and deletes nothing (moto
        # ignores the s3:prefix conditions of listing: the evaluator test proves them)
        web2 = moto.client("s3", *keys[1])
        index = web2.list_objects_v2(Bucket=bucket, Prefix="index/plain-all/")["Contents"]
        assert len(index) == 1 and "-web1-" in index[0]["Key"]
        assert web2.get_object(Bucket=bucket, Key=index[0]["Key"])["Body"].read()
        for call, kwargs in ((web2.delete_object, {"Key": index[0]["Key"]}),
                             (web2.get_object, {"Key": f"runs/web1/{a['run_id']}.jsonl.zst"})):
            with pytest.raises(ClientError) as denied:
                call(Bucket=bucket, **kwargs)
            assert denied.value.response["Error"]["Code"] == "AccessDenied"
        # the auditor's view of the fleet: both hosts, web2 sharing web1's data
        textfile = tmp_path / "textfile" / "s3archive-fleet.prom"
        fleet = [str(textfile) if arg.endswith(".prom") else arg for arg in steps[4][1:]]
        view = _cli(moto, "--config", str(audit_config), *fleet, "--json", admin=False)
        assert view.returncode == 0, view.stderr
        hosts = {h["host"]: h for h in json.loads(view.stdout)["hosts"]}
        assert sorted(hosts) == ["web1", "web2"]
        assert hosts["web2"]["bytes_shared"] >= 600_000
        assert hosts["web2"]["bytes_uploaded"] == b["bytes_uploaded"]
        assert 's3archive_fleet_last_run_shared_bytes{host="web2"}' in textfile.read_text()
        # the auditor reads no data and writes nothing
        auditor = moto.client("s3", audit_key["AccessKeyId"], audit_key["SecretAccessKey"])
        with pytest.raises(ClientError):
            auditor.put_object(Bucket=bucket, Key="runs/web1/x.jsonl.zst", Body=b"x")
    finally:
        moto.set_iam_enforcement(False)


def test_write_config_writes_the_dedup_group(tmp_path: Path) -> None:
    from s3archive.config import load_config

    for group, expected in (("web", "web"), ("none", None), (None, "all")):
        root = tmp_path / str(group)
        args = ["write-config", "--bucket", "acme-backups", "--host-name", "web3",
                "--root", str(root), "--no-enable"]
        result = CliRunner().invoke(cli, args + (["--dedup-group", group] if group else []))
        assert result.exit_code == 0, result.output
        config = load_config(root / "etc/s3archive/config.toml")
        assert config.dedup_group == expected
    bad = CliRunner().invoke(cli, ["write-config", "--bucket", "acme-backups", "--root",
                                   str(tmp_path / "bad"), "--no-enable", "--dedup-group", "a/b"])
    assert bad.exit_code == 2 and "--dedup-group 'a/b': must be 1-64 characters" in bad.output
