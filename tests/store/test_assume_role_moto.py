"""s3.role_arn together with s3.credentials_file: botocore's own assume-role
provider takes the file's keys as its source and asks the configured STS
endpoint.  moto over HTTP with IAM enforcement on: the host's user may only
assume the role, so S3 answers only to the role's temporary keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from support.moto_server import MotoServer, moto_server

BUCKET = "role-bucket"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """As in tests/setup/test_setup_moto.py: moto 5 miscomputes the SigV4
    signature of S3 queries with a '/', so only its signature comparison is
    off; callers are still identified by access key and authorised by IAM."""
    from moto.iam.access_control import S3IAMRequest

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3IAMRequest, "check_signature", lambda self: None)
        with moto_server() as server:
            yield server


@pytest.fixture(scope="module")
def host_keys(moto: MotoServer) -> Iterator[tuple[str, str, str]]:
    """A locked bucket, a role that may use it, and a user that may only assume the role."""
    moto.set_iam_enforcement(False)
    moto.client("s3").create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    iam = moto.client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName="backup", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName="backup", PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
                                                "Resource": "*"}]}))
    iam.create_user(UserName="host")
    iam.put_user_policy(UserName="host", PolicyName="assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole",
            "Resource": role["Role"]["Arn"]}]}))
    key = iam.create_access_key(UserName="host")["AccessKey"]
    moto.set_iam_enforcement(True)
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"], role["Role"]["Arn"]
    finally:
        moto.set_iam_enforcement(False)


def _config(tmp_path: Path, moto: MotoServer, keys: tuple[str, str, str], s3_extra: str) -> Path:
    (tmp_path / "credentials").write_text(
        f"[default]\naws_access_key_id = {keys[0]}\naws_secret_access_key = {keys[1]}\n")
    config = tmp_path / "config.toml"
    config.write_text(f'[s3]\nbucket = "{BUCKET}"\nendpoint_url = "{moto.endpoint_url}"\n'
                      f'credentials_file = "credentials"\n{s3_extra}\n'
                      f'[host]\nname = "web1"\n'
                      f'[local]\ncache_dir = "{tmp_path}/cache"\n'
                      f'state_file = "{tmp_path}/state.json"\n')
    return config


def _runs(config: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    done = CliRunner().invoke(cli, ["--config", str(config), "runs", "--json"])
    return done.exit_code, done.stdout, done.stderr


def test_role_is_assumed_with_the_keys_of_the_credentials_file(
        moto: MotoServer, host_keys: tuple[str, str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sts.models import sts_backends

    config = _config(tmp_path, moto, host_keys,
                     f'role_arn = "{host_keys[2]}"\nsts_endpoint_url = "{moto.endpoint_url}"')
    code, out, err = _runs(config, monkeypatch)
    assert code == 0, err
    assert json.loads(out) == []
    sessions = [r.session_name for r in sts_backends[DEFAULT_ACCOUNT_ID]["global"].assumed_roles]
    assert "s3archive" in sessions


def test_without_the_role_the_same_keys_are_refused(
        moto: MotoServer, host_keys: tuple[str, str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = _runs(_config(tmp_path, moto, host_keys, ""), monkeypatch)
    assert code == 1 and "AccessDenied" in err, err


def test_role_with_a_profile_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[s3]\nbucket = "b-b-b"\nprofile = "p"\n'
                      'role_arn = "arn:aws:iam::1:role/r"\n')
    done = CliRunner().invoke(cli, ["--config", str(config), "runs"])
    assert done.exit_code == 2
    assert "s3.profile and s3.role_arn are exclusive" in done.stderr
