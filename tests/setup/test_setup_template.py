"""create-resources at the template level: the CloudFormation template passes
cfn-lint, and every bucket-policy and IAM statement does what the issue asks.

The statements are evaluated here, with a small evaluator of AWS's rules
(tests/support/setup_policy_eval.py), because neither test store can: moto
ignores IAM conditions and s3:BypassGovernanceRetention and applies every
bucket-policy Deny to every caller; RGW ignores
s3:object-lock-remaining-retention-days and s3:x-amz-object-lock-mode.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from s3archive.setup import policies
from s3archive.setup.cloudformation import template
from s3archive.setup.spec import BucketSpec
from support.setup_policy_eval import combined, decision, denying_sids

BUCKET = "acme-backups"
ACCOUNT = "111122223333"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
OBJ = f"{BUCKET_ARN}/data/ab/abcdef"  # a data pack (format 2)
META = f"{BUCKET_ARN}/meta/ab/abcdef"
FORMAT1_PACK = f"{BUCKET_ARN}/packs/ab/abcdef"
MANIFEST = f"{BUCKET_ARN}/runs/host1/2026.jsonl.zst"
OTHER_MANIFEST = f"{BUCKET_ARN}/runs/host2/2026.jsonl.zst"
TLS = {"aws:SecureTransport": "true", "aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:user/backup"}
LOCKED_PUT = {**TLS, "s3:x-amz-object-lock-mode": "GOVERNANCE",
              "s3:object-lock-remaining-retention-days": "30"}


def resolved(document: dict) -> dict:
    return policies.resolve(document, partition="aws", account_id=ACCOUNT, region="us-east-1")


@pytest.fixture
def spec() -> BucketSpec:
    return BucketSpec(bucket=BUCKET, max_retention_days=400, lock_mode="COMPLIANCE",
                      default_retention_days=3)


def print_template(*args: str) -> str:
    result = CliRunner().invoke(cli, ["create-resources", "--bucket", BUCKET, "--print-template",
                                      *args], catch_exceptions=False,
                                env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                                     "AWS_CONFIG_FILE": "/nonexistent",
                                     "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                                     "AWS_EC2_METADATA_DISABLED": "true"})
    assert result.exit_code == 0, result.output
    return result.output


# ------------------------------------------------------------------ template


@pytest.mark.parametrize("args", [[], ["--kms-key-id", "alias/backup", "--no-bucket-policy",
                                       "--host", "web1", "--host", "db.example.org",
                                       "--legal-hold"],
                                  ["--lock-mode", "COMPLIANCE", "--max-retention-days", "36500"],
                                  ["--cold-after", "30"]])
def test_printed_template_passes_cfn_lint_without_errors_or_warnings(tmp_path: Path,
                                                                      args: list[str]) -> None:
    cfn_lint = _cfn_lint()
    path = tmp_path / "template.json"
    path.write_text(print_template(*args))
    lint = subprocess.run([cfn_lint, "--format", "parseable", str(path)],
                          capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout == "", lint.stdout + lint.stderr


def test_cfn_lint_catches_a_broken_template(tmp_path: Path) -> None:
    """The lint test above can fail: a property typo is reported."""
    cfn_lint = _cfn_lint()
    document = json.loads(print_template())
    document["Resources"]["Bucket"]["Properties"]["ObjectLockEnable"] = True
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document))
    lint = subprocess.run([cfn_lint, str(path)], capture_output=True, text=True)
    assert lint.returncode != 0


def _cfn_lint() -> str:
    """The cfn-lint of the environment running the tests: a venv's bin/ need
    not be on PATH (the README runs .venv/bin/python -m pytest)."""
    beside = Path(sys.executable).parent / "cfn-lint"
    found = str(beside) if beside.is_file() else shutil.which("cfn-lint")
    if found is None:
        pytest.skip("cfn-lint is not installed")
    return found


def test_print_template_makes_no_aws_call() -> None:
    # No credentials and an unroutable endpoint: any call would fail the command.
    output = print_template("--endpoint-url", "http://127.0.0.1:9")
    assert json.loads(output)["Resources"]["Bucket"]["Properties"]["BucketName"] == BUCKET


def test_bucket_properties(spec: BucketSpec) -> None:
    props = template(spec)["Resources"]["Bucket"]["Properties"]
    assert props["ObjectLockEnabled"] is True
    assert props["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 3}}}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True}
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    rules = props["LifecycleConfiguration"]["Rules"]
    assert all(r["Status"] == "Enabled" and "Prefix" not in r for r in rules)
    assert any(r.get("ExpirationInDays") == 1
               and r.get("NoncurrentVersionExpiration") == {"NoncurrentDays": 1} for r in rules)
    assert any(r.get("ExpiredObjectDeleteMarker") is True for r in rules)
    assert any(r.get("AbortIncompleteMultipartUpload") == {"DaysAfterInitiation": 1}
               for r in rules)


def test_kms_key_replaces_sse_s3() -> None:
    spec = BucketSpec(bucket=BUCKET, kms_key_id="1234abcd-12ab-34cd-56ef-1234567890ab")
    sse = template(spec)["Resources"]["Bucket"]["Properties"]["BucketEncryption"][
        "ServerSideEncryptionConfiguration"][0]
    assert sse["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "1234abcd-12ab-34cd-56ef-1234567890ab"}
    backup = resolved(policies.backup_policy(spec))
    key_arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert decision(backup, "kms:GenerateDataKey", key_arn) == "Allow"
    assert decision(resolved(policies.restore_policy(spec)), "kms:Decrypt", key_arn) == "Allow"


def test_outputs_and_exports_name_bucket_roles_and_groups(spec: BucketSpec) -> None:
    outputs = template(spec)["Outputs"]
    for name in ("BucketName", "RestoreRoleArn", "AuditRoleArn",
                 "BackupGroupName", "RestoreGroupName", "AuditGroupName"):
        assert "Export" in outputs[name], name
    assert outputs["BucketName"]["Value"] == {"Ref": "Bucket"}
    resources = template(spec)["Resources"]
    for kind in ("Backup", "Restore", "Audit"):
        assert resources[f"{kind}Group"]["Properties"]["ManagedPolicyArns"] == [
            {"Ref": f"{kind}Policy"}]
    for kind in ("Restore", "Audit"):
        assert resources[f"{kind}Role"]["Properties"]["ManagedPolicyArns"] == [
            {"Ref": f"{kind}Policy"}]
    # No backup role shared by hosts: it could write every host's runs.
    assert "BackupRole" not in resources and "BackupRoleArn" not in outputs
    assert not any(r["Type"] == "AWS::IAM::InstanceProfile" for r in resources.values())


def test_each_host_gets_a_role_with_its_own_runs_only() -> None:
    spec = BucketSpec(bucket=BUCKET, hosts=("web1", "db.example.org"))
    resources, outputs = template(spec)["Resources"], template(spec)["Outputs"]
    for index, host in ((1, "web1"), (2, "db.example.org")):
        role = resources[f"Host{index}Role"]["Properties"]
        assert role["RoleName"] == f"acme-backups-host-{host}"
        assert role["ManagedPolicyArns"] == [{"Ref": "BackupPolicy"},
                                             {"Ref": f"Host{index}Policy"}]
        assert role["Tags"] == [{"Key": "s3archive-host", "Value": host}]
        assert unwrap_sub(resources[f"Host{index}Policy"]["Properties"]["PolicyDocument"]) == \
            policies.host_policy(spec, host)
        assert resources[f"Host{index}InstanceProfile"]["Properties"]["Roles"] == [
            {"Ref": f"Host{index}Role"}]
        assert outputs[f"Host{index}RoleArn"]["Description"] == f"role of backup host {host}"
    web1 = resolved(combined(policies.backup_policy(spec), policies.host_policy(spec, "web1")))
    assert decision(web1, "s3:PutObject", f"{BUCKET_ARN}/runs/web1/r.jsonl.zst") == "Allow"
    assert decision(web1, "s3:PutObject",
                    f"{BUCKET_ARN}/runs/db.example.org/r.jsonl.zst") == "ImplicitDeny"


@pytest.mark.parametrize("host", ["*", "web?", "a/b", "${aws:username}", "", "_x", "a" * 64])
def test_host_names_that_would_widen_a_policy_are_refused(host: str) -> None:
    result = CliRunner().invoke(cli, ["create-resources", "--bucket", BUCKET, "--host", host,
                                      "--print-template"])
    assert result.exit_code == 2
    assert "--host" in result.output


@pytest.mark.parametrize("args,message", [
    (["--legal-hold", "--print-template"], "--legal-hold applies to the roles of --host"),
    (["--host", "web1", "--endpoint-url", "http://127.0.0.1:9", "--no-iam"],
     "--host makes an IAM role: it needs --iam"),
])
def test_host_options_that_would_do_nothing_are_refused(args: list[str], message: str) -> None:
    # Refused before any AWS call (the endpoint is unroutable).
    result = CliRunner().invoke(cli, ["create-resources", "--bucket", BUCKET, *args])
    assert result.exit_code == 2
    assert message in result.output


def test_a_role_name_too_long_for_iam_is_refused() -> None:
    with pytest.raises(Exception, match="at most 34 characters"):
        BucketSpec(bucket=BUCKET, hosts=("h" * 35,))


def test_no_bucket_policy_leaves_the_policy_out(spec: BucketSpec) -> None:
    assert "BucketPolicy" in template(spec)["Resources"]
    no_policy = BucketSpec(bucket=BUCKET, bucket_policy=False)
    assert "BucketPolicy" not in template(no_policy)["Resources"]


def test_template_policy_is_the_one_evaluated_here(spec: BucketSpec) -> None:
    """The template carries exactly the documents tested below (Fn::Sub aside)."""
    resources = template(spec)["Resources"]
    document = unwrap_sub(resources["BucketPolicy"]["Properties"]["PolicyDocument"])
    assert document == policies.bucket_policy(spec)
    for kind in ("backup", "restore", "audit"):
        managed = resources[f"{kind.capitalize()}Policy"]["Properties"]["PolicyDocument"]
        assert unwrap_sub(managed) == policies.ROLE_POLICIES[kind](spec)
    assert not [r for r in resources if r.startswith("Host")]  # no --host
    sids = [s["Sid"] for s in document["Statement"]]
    assert sids == ["DenyInsecureTransport", "DenyPutWithoutLockMode",
                    "DenyRetentionAboveMaximum", "DenyBucketChangesExceptRoot"]


def unwrap_sub(value):
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"}:
            return value["Fn::Sub"]
        return {k: unwrap_sub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_sub(v) for v in value]
    return value


# ------------------------------------------------------------- bucket policy


def test_bucket_policy_denies_plain_http(spec: BucketSpec) -> None:
    policy = resolved(policies.bucket_policy(spec))
    assert denying_sids(policy, "s3:GetObject", OBJ,
                        {**LOCKED_PUT, "aws:SecureTransport": "false"}) == {"DenyInsecureTransport"}
    # BoolIfExists: a request without the key (RGW over HTTP) is denied too.
    no_key = {k: v for k, v in LOCKED_PUT.items() if k != "aws:SecureTransport"}
    assert "DenyInsecureTransport" in denying_sids(policy, "s3:ListBucket", BUCKET_ARN, no_key)
    assert denying_sids(policy, "s3:GetObject", OBJ, LOCKED_PUT) == set()


def test_bucket_policy_denies_put_without_lock_mode(spec: BucketSpec) -> None:
    policy = resolved(policies.bucket_policy(spec))
    unlocked = {k: v for k, v in LOCKED_PUT.items()
                if not k.startswith("s3:")}
    assert denying_sids(policy, "s3:PutObject", OBJ, unlocked) == {"DenyPutWithoutLockMode"}
    assert denying_sids(policy, "s3:PutObject", OBJ, LOCKED_PUT) == set()


def test_bucket_policy_caps_retention_for_put_and_retention_updates(spec: BucketSpec) -> None:
    policy = resolved(policies.bucket_policy(spec))
    century = {**LOCKED_PUT, "s3:object-lock-remaining-retention-days": "36500"}
    for action in ("s3:PutObject", "s3:PutObjectRetention"):
        assert denying_sids(policy, action, OBJ, century) == {"DenyRetentionAboveMaximum"}
        at_max = {**LOCKED_PUT, "s3:object-lock-remaining-retention-days": "400"}
        assert denying_sids(policy, action, OBJ, at_max) == set()


@pytest.mark.parametrize("action", ["s3:DeleteBucket", "s3:PutBucketPolicy",
                                    "s3:DeleteBucketPolicy", "s3:PutLifecycleConfiguration",
                                    "s3:PutBucketObjectLockConfiguration",
                                    "s3:PutBucketVersioning"])
def test_bucket_policy_reserves_bucket_changes_to_the_root(spec: BucketSpec, action: str) -> None:
    policy = resolved(policies.bucket_policy(spec))
    admin = {**TLS, "aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/Admin"}
    assert denying_sids(policy, action, BUCKET_ARN, admin) == {"DenyBucketChangesExceptRoot"}
    assert denying_sids(policy, action, BUCKET_ARN, {**TLS, "aws:PrincipalArn": ROOT}) == set()


def test_endpoint_policy_leaves_out_what_s3_compatible_stores_cannot_evaluate() -> None:
    http = BucketSpec(bucket=BUCKET, endpoint_url="http://127.0.0.1:7480")
    sids = [s["Sid"] for s in policies.bucket_policy(http)["Statement"]]
    assert sids == ["DenyRetentionAboveMaximum", "DenyBucketChangesExceptRoot"]
    assert len(policies.bucket_policy_notes(http)) == 2
    https = BucketSpec(bucket=BUCKET, endpoint_url="https://s3.example.net")
    assert [s["Sid"] for s in policies.bucket_policy(https)["Statement"]][0] == \
        "DenyInsecureTransport"


# ------------------------------------------------------------------ IAM


def backup_host(spec: BucketSpec, host: str = "host1", legal_hold: bool | None = None) -> dict:
    """Everything one backup host's credentials hold: the shared backup policy
    (group or role) and the host's own policy."""
    return resolved(combined(policies.backup_policy(spec),
                             policies.host_policy(spec, host, legal_hold)))


def test_backup_host_may_do_what_archive_needs(spec: BucketSpec) -> None:
    backup = backup_host(spec)
    for pack in (OBJ, META):
        assert decision(backup, "s3:PutObject", pack) == "Allow"
        assert decision(backup, "s3:PutObjectRetention", pack) == "Allow"
    # format-1 packs are reused and leased, never written again
    assert decision(backup, "s3:PutObjectRetention", FORMAT1_PACK) == "Allow"
    assert decision(backup, "s3:PutObject", FORMAT1_PACK) == "ImplicitDeny"
    assert decision(backup, "s3:GetBucketObjectLockConfiguration", BUCKET_ARN) == "Allow"
    for action in ("s3:PutObject", "s3:PutObjectRetention", "s3:GetObject",
                   "s3:GetObjectVersion"):
        assert decision(backup, action, MANIFEST) == "Allow", action
    for prefix in ("runs/host1/", "runs/host1/2026"):
        assert decision(backup, "s3:ListBucketVersions", BUCKET_ARN,
                        {"s3:prefix": prefix}) == "Allow", prefix
    # Data is never read back by the backup credentials; metadata packs are (a host's
    # own trees: ls, a lost cache rebuilt), by name only (no listing, see below).
    assert decision(backup, "s3:GetObject", OBJ) == "ImplicitDeny"
    assert decision(backup, "s3:GetObject", FORMAT1_PACK) == "ImplicitDeny"
    assert decision(backup, "s3:GetObject", META) == "Allow"
    assert decision(backup, "s3:GetObject", "arn:aws:s3:::other-bucket/runs/x") == "ImplicitDeny"


@pytest.mark.parametrize("action", ["s3:PutObject", "s3:PutObjectRetention", "s3:GetObject",
                                    "s3:GetObjectVersion", "s3:PutObjectLegalHold"])
def test_backup_host_cannot_touch_another_hosts_runs(spec: BucketSpec, action: str) -> None:
    backup = backup_host(spec, legal_hold=True)
    for resource in (OTHER_MANIFEST, f"{BUCKET_ARN}/runs/host10/x",  # host1 is a prefix of it
                     f"{BUCKET_ARN}/runs/x.jsonl.zst", f"{BUCKET_ARN}/elsewhere"):
        assert decision(backup, action, resource,
                        {"s3:object-lock-legal-hold": "ON"}) == "ImplicitDeny", resource


@pytest.mark.parametrize("prefix", [None, "", "runs/", "runs/host", "runs/host10/",
                                    "runs/host2/", "packs/", "data/", "meta/", "runs/host1"])
def test_backup_host_cannot_list_beyond_its_runs(spec: BucketSpec, prefix: str | None) -> None:
    backup = backup_host(spec)
    context = {} if prefix is None else {"s3:prefix": prefix}
    for action in ("s3:ListBucket", "s3:ListBucketVersions"):
        assert decision(backup, action, BUCKET_ARN, context) == "ImplicitDeny", (action, prefix)


@pytest.mark.parametrize("action,resource", [
    ("s3:DeleteObject", OBJ), ("s3:DeleteObjectVersion", OBJ), ("s3:DeleteBucket", BUCKET_ARN),
    ("s3:DeleteObjectVersion", MANIFEST),
    ("s3:DeleteBucketPolicy", BUCKET_ARN), ("s3:BypassGovernanceRetention", OBJ),
    ("s3:PutBucketPolicy", BUCKET_ARN), ("s3:PutLifecycleConfiguration", BUCKET_ARN),
    ("s3:PutBucketObjectLockConfiguration", BUCKET_ARN), ("s3:PutBucketVersioning", BUCKET_ARN),
    ("s3:PutEncryptionConfiguration", BUCKET_ARN), ("s3:PutBucketPublicAccessBlock", BUCKET_ARN),
])
def test_backup_policy_explicitly_denies(spec: BucketSpec, action: str, resource: str) -> None:
    assert decision(backup_host(spec, legal_hold=True), action, resource) == "Deny"


def test_legal_holds_are_an_operators_act_unless_the_configuration_asks(spec: BucketSpec) -> None:
    # Explicit Denies: RGW would otherwise let an object's writer change it.
    plain = backup_host(spec)
    for state in ("ON", "OFF"):
        for resource in (OBJ, MANIFEST, OTHER_MANIFEST):
            assert decision(plain, "s3:PutObjectLegalHold", resource,
                            {"s3:object-lock-legal-hold": state}) == "Deny"
    held = backup_host(spec, legal_hold=True)
    for resource in (OBJ, MANIFEST):
        assert decision(held, "s3:PutObjectLegalHold", resource,
                        {"s3:object-lock-legal-hold": "ON"}) == "Allow"
        # Placing, never lifting.
        for context in ({"s3:object-lock-legal-hold": "OFF"}, {}):
            assert decision(held, "s3:PutObjectLegalHold", resource, context) == "Deny"
    # create-resources --legal-hold is what the host policy follows by default.
    assert policies.host_policy(BucketSpec(bucket=BUCKET, legal_hold=True), "h") == \
        policies.host_policy(spec, "h", legal_hold=True)


def test_restore_policy_reads_and_lists_only(spec: BucketSpec) -> None:
    restore = resolved(policies.restore_policy(spec))
    for action, resource in (("s3:GetObject", OBJ), ("s3:GetObjectVersion", OBJ),
                             ("s3:ListBucket", BUCKET_ARN), ("s3:ListBucketVersions", BUCKET_ARN)):
        assert decision(restore, action, resource) == "Allow", action
    for action, resource in (("s3:PutObject", OBJ), ("s3:DeleteObjectVersion", OBJ),
                             ("s3:PutObjectRetention", OBJ), ("s3:PutBucketPolicy", BUCKET_ARN),
                             ("s3:BypassGovernanceRetention", OBJ)):
        assert decision(restore, action, resource) != "Allow", action


def test_audit_policy_lists_reads_manifests_retention_and_holds(spec: BucketSpec) -> None:
    audit = resolved(policies.audit_policy(spec))
    for action, resource in (("s3:ListBucketVersions", BUCKET_ARN), ("s3:GetObject", MANIFEST),
                             ("s3:GetObjectRetention", OBJ), ("s3:GetObjectLegalHold", OBJ),
                             ("s3:GetBucketObjectLockConfiguration", BUCKET_ARN)):
        assert decision(audit, action, resource) == "Allow", action
    for action, resource in (("s3:GetObject", OBJ), ("s3:PutObject", OBJ),
                             ("s3:DeleteObject", OBJ)):
        assert decision(audit, action, resource) != "Allow", action


def test_roles_trust_the_account_and_backup_trusts_ec2() -> None:
    backup = resolved(policies.trust_policy("backup"))["Statement"][0]["Principal"]
    assert backup == {"AWS": ROOT, "Service": "ec2.amazonaws.com"}
    assert resolved(policies.trust_policy("restore"))["Statement"][0]["Principal"] == {"AWS": ROOT}


def test_bucket_name_is_validated() -> None:
    result = CliRunner().invoke(cli, ["create-resources", "--bucket", "Bad_Name",
                                      "--print-template"])
    assert result.exit_code == 2
    assert "Bad_Name" in result.output
