"""The S3-API method: configure the bucket with plain S3 calls.

For S3-compatible stores without CloudFormation (Ceph RGW, MinIO, ...).  A
setting the store rejects is reported, not fatal: the read-back check that
follows names every difference, and only a missing lock or versioning fails.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from s3archive.errors import StoreError, UsageError
from s3archive.setup import lifecycle, policies
from s3archive.setup.spec import BucketSpec
from s3archive.store.errors import describe_error, error_code

log = logging.getLogger(__name__)


@dataclass
class SetupReport:
    created: bool = False
    applied: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # "what: why"
    notes: list[str] = field(default_factory=list)


def configure_bucket(s3: Any, spec: BucketSpec, account_id: str | None) -> SetupReport:
    from botocore.exceptions import BotoCoreError, ClientError

    report = SetupReport()
    report.created = _create_bucket(s3, spec)

    def attempt(what: str, call: Any, **kwargs: Any) -> None:
        try:
            call(Bucket=spec.bucket, **kwargs)
        except (ClientError, BotoCoreError) as err:
            report.rejected.append(f"{what}: {describe_error(err)}")
        else:
            report.applied.append(what)

    attempt("versioning", s3.put_bucket_versioning,
            VersioningConfiguration={"Status": "Enabled"})
    attempt("object lock default retention", s3.put_object_lock_configuration,
            ObjectLockConfiguration=lock_configuration(spec))
    attempt("encryption", s3.put_bucket_encryption,
            ServerSideEncryptionConfiguration=encryption_configuration(spec))
    # Ceph RGW 16 denies every PUT, the owner's too, once BlockPublicAcls is
    # on: S3-compatible stores get the other three settings only.
    block_acls = spec.endpoint_url is None
    if not block_acls:
        report.notes.append("public access block: BlockPublicAcls left off for an "
                            "S3-compatible store (Ceph RGW 16 then denies every PUT); "
                            "IgnorePublicAcls still ignores any public ACL")
    attempt("public access block", s3.put_public_access_block,
            PublicAccessBlockConfiguration=dict(BlockPublicAcls=block_acls,
                                                IgnorePublicAcls=True,
                                                BlockPublicPolicy=True,
                                                RestrictPublicBuckets=True))
    attempt("object ownership", s3.put_bucket_ownership_controls,
            OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    attempt("lifecycle", s3.put_bucket_lifecycle_configuration,
            LifecycleConfiguration={"Rules": lifecycle.s3_rules(spec.cold_after)})
    if spec.bucket_policy:
        document = resolved_bucket_policy(spec, account_id)
        report.notes += policies.bucket_policy_notes(spec)
        if account_id is None:
            report.notes.append("the store has no STS: DenyBucketChangesExceptRoot names "
                                "an account root it cannot match")
        # Last: the policy may forbid the changes above to anyone but the root.
        attempt("bucket policy", s3.put_bucket_policy, Policy=json.dumps(document))
    return report


def lock_configuration(spec: BucketSpec) -> dict[str, Any]:
    return {"ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": spec.lock_mode,
                                          "Days": spec.default_retention_days}}}


def encryption_configuration(spec: BucketSpec) -> dict[str, Any]:
    if spec.kms_key_id:
        default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": spec.kms_key_id}
        return {"Rules": [{"ApplyServerSideEncryptionByDefault": default,
                           "BucketKeyEnabled": True}]}
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def resolved_bucket_policy(spec: BucketSpec, account_id: str | None) -> dict[str, Any]:
    return policies.resolve(policies.bucket_policy(spec), partition=spec.partition,
                            account_id=account_id or "", region=spec.region)


def _create_bucket(s3: Any, spec: BucketSpec) -> bool:
    """Create the bucket with Object Lock; False if we already own it."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.head_bucket(Bucket=spec.bucket)
    except ClientError as err:
        if error_code(err) not in ("404", "NoSuchBucket", "NotFound"):
            raise StoreError(f"bucket {spec.bucket}: {describe_error(err)}") from None
    else:
        log.info("bucket %s exists and is yours: configuring it", spec.bucket)
        return False
    kwargs: dict[str, Any] = {"Bucket": spec.bucket, "ObjectLockEnabledForBucket": True}
    if spec.region != "us-east-1" and spec.endpoint_url is None:
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": spec.region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as err:
        code = error_code(err)
        if code == "BucketAlreadyOwnedByYou":
            log.info("bucket %s exists and is yours: configuring it", spec.bucket)
            return False
        if code == "BucketAlreadyExists":
            raise UsageError(f"--bucket {spec.bucket}: the name is taken by another account") from None
        raise StoreError(f"creating bucket {spec.bucket}: {describe_error(err)}") from None
    except BotoCoreError as err:
        raise StoreError(f"creating bucket {spec.bucket}: {describe_error(err)}") from None
    return True
