"""The bucket policy and the IAM policies, as plain policy documents.

Documents are written with the CloudFormation pseudo parameters
``${AWS::Partition}`` and ``${AWS::AccountId}`` in their ARNs:
``cloudformation`` wraps such strings in ``Fn::Sub``, ``resolve`` substitutes
real values for the S3-API method.  Every statement has a ``Sid`` so that the
read-back check and the tests can name it.

Per-host isolation uses one policy per host (``host_policy``), not IAM
policy variables: the ARNs name ``runs/<host>/`` literally, so what a host
may touch does not depend on its user's name or tags, a renamed user keeps
its policy, a role-based host gets a role of its own, and the isolation is
the same on every store that evaluates Resource ARNs (moto included, which
substitutes no policy variables).  Every backup host shares ``backup_policy``
(new packs, retention extensions, the lock configuration) and has its own
``host_policy`` (its runs: write, read, list).
"""

from __future__ import annotations

from typing import Any

from s3archive.setup.spec import (DATA_PREFIX, INDEX_PREFIX, KEYS_PREFIX, MANIFEST_PREFIX,
                                  META_PREFIX, PACK_PREFIX, BucketSpec)

VERSION = "2012-10-17"
ROOT_ARN = "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"

# Bucket-level changes nobody but the account root may make (bucket policy) and
# the backup role may never make (IAM policy).
PROTECTED_BUCKET_ACTIONS = (
    "s3:DeleteBucket",
    "s3:DeleteBucketPolicy",
    "s3:PutBucketPolicy",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketVersioning",
)
BACKUP_DENIED_ACTIONS = (
    "s3:Delete*",
    "s3:BypassGovernanceRetention",
    "s3:CreateBucket",
    "s3:PutBucket*",
    "s3:PutLifecycleConfiguration",
    "s3:PutEncryptionConfiguration",
    "s3:PutReplicationConfiguration",
    "s3:PutAccelerateConfiguration",
    "s3:PutInventoryConfiguration",
    "s3:PutAnalyticsConfiguration",
    "s3:PutMetricsConfiguration",
    "s3:PutIntelligentTieringConfiguration",
    "s3:PutObjectAcl",
    "s3:PutObjectVersionAcl",
)


def _arns(spec: BucketSpec) -> tuple[str, str, str]:
    bucket = f"arn:${{AWS::Partition}}:s3:::{spec.bucket}"
    return bucket, f"{bucket}/*", f"{bucket}/{MANIFEST_PREFIX}*"


def _host_runs(host: str) -> str:
    return f"{MANIFEST_PREFIX}{host}/"


def bucket_policy(spec: BucketSpec) -> dict[str, Any]:
    """The bucket policy; see ``bucket_policy_notes`` for what a store skips."""
    bucket, objects, _ = _arns(spec)
    statements: list[dict[str, Any]] = []
    if _wants_tls_statement(spec):
        statements.append({
            "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*",
            "Action": "s3:*", "Resource": [bucket, objects],
            # BoolIfExists: absent key (plain HTTP on RGW) counts as insecure too.
            "Condition": {"BoolIfExists": {"aws:SecureTransport": "false"}}})
    if spec.endpoint_url is None:
        statements.append({
            "Sid": "DenyPutWithoutLockMode", "Effect": "Deny", "Principal": "*",
            "Action": "s3:PutObject", "Resource": objects,
            "Condition": {"Null": {"s3:x-amz-object-lock-mode": "true"}}})
    statements.append({
        "Sid": "DenyRetentionAboveMaximum", "Effect": "Deny", "Principal": "*",
        "Action": ["s3:PutObject", "s3:PutObjectRetention"], "Resource": objects,
        "Condition": {"NumericGreaterThan": {
            "s3:object-lock-remaining-retention-days": str(spec.max_retention_days)}}})
    statements.append({
        "Sid": "DenyBucketChangesExceptRoot", "Effect": "Deny", "Principal": "*",
        "Action": list(PROTECTED_BUCKET_ACTIONS), "Resource": bucket,
        "Condition": {"ArnNotEquals": {"aws:PrincipalArn": ROOT_ARN}}})
    return {"Version": VERSION, "Statement": statements}


def bucket_policy_notes(spec: BucketSpec) -> list[str]:
    """Statements left out for an S3-compatible endpoint, and why."""
    notes = []
    if not _wants_tls_statement(spec):
        notes.append("DenyInsecureTransport left out: the endpoint is plain HTTP "
                     "(the statement would deny every request)")
    if spec.endpoint_url is not None:
        notes.append("DenyPutWithoutLockMode left out: S3-compatible stores such as Ceph RGW "
                     "do not set s3:x-amz-object-lock-mode and would deny every PUT; "
                     "the bucket's default retention locks unlocked PUTs instead")
    return notes


def _wants_tls_statement(spec: BucketSpec) -> bool:
    return spec.endpoint_url is None or spec.endpoint_url.startswith("https://")


def backup_policy(spec: BucketSpec) -> dict[str, Any]:
    """What every backup host may do: add packs, extend their locks (any host's: a run
    leases every pack it references), read metadata packs, add, list and read group
    index objects, read the bucket's lock configuration.  No run access (see
    ``host_policy``), no reads of data packs, no deletes, no governance bypass, no bucket changes, no
    legal holds (granted per host, placing only, with ``legal_hold``)."""
    bucket, objects, _ = _arns(spec)
    # packs, and the copies of dedup secrets (encrypted to the restore keys) under keys/
    new_packs = [f"{bucket}/{DATA_PREFIX}*", f"{bucket}/{META_PREFIX}*",
                 f"{bucket}/{KEYS_PREFIX}*"]
    statements: list[dict[str, Any]] = [
        {"Sid": "AddPacksAndExtendTheirLocks", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:PutObjectRetention"], "Resource": new_packs},
        # format-1 packs are no longer written, but a run still reuses and leases them
        {"Sid": "ExtendLocksOfFormat1Packs", "Effect": "Allow",
         "Action": "s3:PutObjectRetention", "Resource": f"{bucket}/{PACK_PREFIX}*"},
        # a host reads its own runs' trees (ls, a lost cache rebuilt); it cannot list
        # meta/ and pack names are random, so it reaches only the packs its runs name
        # (with encryption every blob is sealed to the restore key anyway); never data
        {"Sid": "ReadMetadataPacks", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:GetObjectVersion"],
         "Resource": f"{bucket}/{META_PREFIX}*"},
        # the dedup groups' index (docs/FORMAT.md part 2, 16): each run adds objects (locked,
        # new keys) and reads what the other hosts of its group added since its last run;
        # no deletes (below).  An encrypted group's objects open only with its dedup secret.
        {"Sid": "WriteAndReadGroupIndex", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:PutObjectRetention", "s3:GetObject",
                    "s3:GetObjectVersion"],
         "Resource": f"{bucket}/{INDEX_PREFIX}*"},
        {"Sid": "ListGroupIndex", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": bucket, "Condition": {"StringLike": {"s3:prefix": [f"{INDEX_PREFIX}*"]}}},
        {"Sid": "ReadLockConfiguration", "Effect": "Allow",
         "Action": ["s3:GetBucketObjectLockConfiguration", "s3:GetBucketVersioning",
                    "s3:GetBucketLocation"],
         "Resource": bucket},
        {"Sid": "DenyDeletesBypassAndBucketChanges", "Effect": "Deny",
         "Action": list(BACKUP_DENIED_ACTIONS), "Resource": [bucket, objects]},
    ]
    statements += _kms_statements(spec, ["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt"])
    return {"Version": VERSION, "Statement": statements}


def host_policy(spec: BucketSpec, host: str, legal_hold: bool | None = None) -> dict[str, Any]:
    """What one backup host may do besides ``backup_policy``: write, read and
    list its own runs (``runs/<host>/``) and nothing of another host's; with
    ``legal_hold`` (default: the spec's), place -- never lift -- legal holds
    on its runs and on packs.  ``host`` must have passed
    ``spec.validate_iam_host_name`` (no wildcards)."""
    bucket, _, _ = _arns(spec)
    runs = _host_runs(host)
    own_runs = f"{bucket}/{runs}*"
    statements: list[dict[str, Any]] = [
        # PutObjectRetention: AWS requires it for a PUT that carries a lock.
        {"Sid": "WriteAndReadOwnRuns", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:PutObjectRetention", "s3:GetObject",
                    "s3:GetObjectVersion"],
         "Resource": own_runs},
        {"Sid": "ListOwnRuns", "Effect": "Allow",
         "Action": ["s3:ListBucket", "s3:ListBucketVersions"], "Resource": bucket,
         "Condition": {"StringLike": {"s3:prefix": [runs, f"{runs}*"]}}},
    ]
    # The Denies matter where an object's writer is otherwise allowed to
    # change it (RGW falls back to the object's ACL, which its writer owns).
    if spec.legal_hold if legal_hold is None else legal_hold:
        statements += [
            {"Sid": "PlaceLegalHoldsOnOwnRunsAndPacks", "Effect": "Allow",
             "Action": "s3:PutObjectLegalHold",
             "Resource": [own_runs] + [f"{bucket}/{prefix}*" for prefix in
                                       (PACK_PREFIX, DATA_PREFIX, META_PREFIX)],
             "Condition": {"StringEquals": {"s3:object-lock-legal-hold": "ON"}}},
            {"Sid": "DenyLiftingLegalHolds", "Effect": "Deny",
             "Action": "s3:PutObjectLegalHold", "Resource": f"{bucket}/*",
             "Condition": {"StringNotEquals": {"s3:object-lock-legal-hold": "ON"}}}]
    else:
        statements.append({"Sid": "DenyLegalHolds", "Effect": "Deny",
                           "Action": "s3:PutObjectLegalHold", "Resource": f"{bucket}/*"})
    return {"Version": VERSION, "Statement": statements}


def restore_policy(spec: BucketSpec) -> dict[str, Any]:
    bucket, objects, _ = _arns(spec)
    statements: list[dict[str, Any]] = [
        {"Sid": "ListBucket", "Effect": "Allow",
         "Action": ["s3:ListBucket", "s3:ListBucketVersions",
                    "s3:GetBucketObjectLockConfiguration", "s3:GetBucketLocation"],
         "Resource": bucket},
        {"Sid": "ReadObjects", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention",
                    "s3:GetObjectLegalHold"],
         "Resource": objects},
    ]
    statements += _kms_statements(spec, ["kms:Decrypt"])
    return {"Version": VERSION, "Statement": statements}


def audit_policy(spec: BucketSpec) -> dict[str, Any]:
    bucket, objects, manifests = _arns(spec)
    statements: list[dict[str, Any]] = [
        {"Sid": "ListAndReadBucketConfiguration", "Effect": "Allow",
         "Action": ["s3:ListBucket", "s3:ListBucketVersions",
                    "s3:GetBucketObjectLockConfiguration", "s3:GetBucketVersioning",
                    "s3:GetLifecycleConfiguration", "s3:GetBucketPolicy",
                    "s3:GetEncryptionConfiguration", "s3:GetBucketPublicAccessBlock",
                    "s3:GetBucketOwnershipControls", "s3:GetBucketLocation"],
         "Resource": bucket},
        {"Sid": "ReadManifests", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:GetObjectVersion"], "Resource": manifests},
        {"Sid": "ReadRetentionAndLegalHolds", "Effect": "Allow",
         "Action": ["s3:GetObjectRetention", "s3:GetObjectLegalHold"], "Resource": objects},
    ]
    statements += _kms_statements(spec, ["kms:Decrypt"])
    return {"Version": VERSION, "Statement": statements}


ROLE_POLICIES = {"backup": backup_policy, "restore": restore_policy, "audit": audit_policy}


def _kms_statements(spec: BucketSpec, actions: list[str]) -> list[dict[str, Any]]:
    if not spec.kms_key_id:
        return []
    return [{"Sid": "UseBucketKmsKey", "Effect": "Allow", "Action": actions,
             "Resource": kms_key_arn(spec.kms_key_id)}]


def kms_key_arn(key_id: str) -> str:
    if key_id.startswith("arn:"):
        return key_id
    if key_id.startswith("alias/"):
        return f"arn:${{AWS::Partition}}:kms:${{AWS::Region}}:${{AWS::AccountId}}:{key_id}"
    return f"arn:${{AWS::Partition}}:kms:${{AWS::Region}}:${{AWS::AccountId}}:key/{key_id}"


def trust_policy(kind: str) -> dict[str, Any]:
    """Who may assume a role: principals of this account (as their own IAM
    policies allow) and, for a backup host's role, EC2 instances through its
    instance profile."""
    principal: dict[str, Any] = {"AWS": ROOT_ARN}
    if kind == "backup":
        principal["Service"] = "ec2.amazonaws.com"
    return {"Version": VERSION, "Statement": [
        {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]}


def resolve(document: Any, *, partition: str, account_id: str, region: str) -> Any:
    """Substitute the pseudo parameters (for the S3-API method)."""
    if isinstance(document, dict):
        return {k: resolve(v, partition=partition, account_id=account_id, region=region)
                for k, v in document.items()}
    if isinstance(document, list):
        return [resolve(v, partition=partition, account_id=account_id, region=region)
                for v in document]
    if isinstance(document, str):
        return (document.replace("${AWS::Partition}", partition)
                .replace("${AWS::AccountId}", account_id).replace("${AWS::Region}", region))
    return document
