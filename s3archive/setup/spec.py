"""What ``create-resources`` is asked to build, and the names derived from it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from s3archive.config import LOCK_MODES, MAX_RETENTION_DAYS
from s3archive.errors import UsageError
from s3archive.setup import lifecycle

ROLE_KINDS = ("backup", "restore", "audit")
# Kinds with one role shared by its users.  Backup has none: a role shared by
# hosts could write every host's runs, so each backup host gets its own role
# (``--host``) or IAM user (``write-config --create-user``).
SHARED_ROLE_KINDS = ("restore", "audit")
MANIFEST_PREFIX = "runs/"
PACK_PREFIX = "packs/"  # format 1 packs: read, leased, no longer written
DATA_PREFIX = "data/"  # format 2 data packs (may go cold: --cold-after)
META_PREFIX = "meta/"  # format 2 metadata packs (always hot)
KEYS_PREFIX = "keys/"  # copies of dedup secrets, encrypted to the restore recipients
INDEX_PREFIX = "index/"  # group index objects: what each dedup group stores (FORMAT2 16)
# A host name that goes into an IAM policy ARN: no wildcard (* ?), no policy
# variable ($), no '/' -- it must name exactly one runs/<host>/ prefix.
_IAM_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_ROLE_HOST_CHARS = 34  # role names are limited to 64 characters


@dataclass(frozen=True)
class BucketSpec:
    """The bucket, its protections and its IAM, as requested on the command line."""

    bucket: str
    region: str = "us-east-1"
    lock_mode: str = "GOVERNANCE"
    default_retention_days: int = 1
    max_retention_days: int = 3660
    kms_key_id: str | None = None
    bucket_policy: bool = True
    # S3-compatible stores (an endpoint URL is set) do not populate every
    # condition key AWS does; see policies.bucket_policy.
    endpoint_url: str | None = None
    # Backup hosts that get a role of their own (EC2 instance profiles, roles
    # assumed by hosts); hosts with IAM users get theirs from write-config.
    hosts: tuple[str, ...] = ()
    # Those hosts may place (never lift) legal holds: [retention] legal_hold.
    legal_hold: bool = False
    # Days after which lifecycle moves data packs (data/) to GLACIER_IR.
    cold_after: int | None = None

    def __post_init__(self) -> None:
        validate_bucket_name(self.bucket)
        for host in self.hosts:
            validate_iam_host_name(host, "--host")
            if len(host) > _ROLE_HOST_CHARS:
                raise UsageError(f"--host {host!r}: at most {_ROLE_HOST_CHARS} characters for "
                                 "a role name; give a longer-named host an IAM user instead "
                                 "(write-config --create-user)")
        if len(set(self.hosts)) != len(self.hosts):
            raise UsageError("--host: a host is named twice")
        if self.lock_mode not in LOCK_MODES:
            raise UsageError(f"--lock-mode {self.lock_mode!r}: must be GOVERNANCE or COMPLIANCE")
        for option, value in (("--default-retention-days", self.default_retention_days),
                              ("--max-retention-days", self.max_retention_days)):
            if not 1 <= value <= MAX_RETENTION_DAYS:
                raise UsageError(f"{option} {value}: must be between 1 and {MAX_RETENTION_DAYS}")
        lifecycle.validate_cold_after(self.cold_after)
        if self.default_retention_days > self.max_retention_days:
            raise UsageError(f"--default-retention-days {self.default_retention_days} exceeds "
                             f"--max-retention-days {self.max_retention_days}")

    @property
    def partition(self) -> str:
        return partition_of(self.region)

    @property
    def bucket_arn(self) -> str:
        return f"arn:{self.partition}:s3:::{self.bucket}"

    @property
    def names(self) -> "ResourceNames":
        return ResourceNames.for_bucket(self.bucket)


@dataclass(frozen=True)
class ResourceNames:
    """IAM names derived from the bucket name (the same for both methods)."""

    bucket: str
    groups: dict[str, str]
    roles: dict[str, str]
    policies: dict[str, str]

    @classmethod
    def for_bucket(cls, bucket: str) -> "ResourceNames":
        # Role names are limited to 64 characters, group and policy names to 128.
        stem = bucket.replace(".", "-")
        return cls(bucket=bucket,
                   groups={k: f"s3archive-{stem}-{k}" for k in ROLE_KINDS},
                   roles={k: f"{stem[:44]}-s3archive-{k}" for k in SHARED_ROLE_KINDS},
                   policies={k: f"s3archive-{stem}-{k}" for k in ROLE_KINDS})

    @property
    def _stem(self) -> str:
        return self.bucket.replace(".", "-")

    def host_policy(self, host: str) -> str:
        """The policy giving ``host`` its runs/<host>/ (managed or inline)."""
        return f"s3archive-{self._stem[:48]}-host-{host}"

    def host_role(self, host: str) -> str:
        return f"{self._stem[:24]}-host-{host}"


def validate_iam_host_name(name: str, option: str) -> None:
    if not _IAM_HOST_NAME.fullmatch(name):
        raise UsageError(f"{option} {name!r}: a host name in an IAM policy must be 1-63 of "
                         "A-Z, a-z, 0-9, '.', '_', '-' and start with a letter or digit "
                         "(no wildcards)")


def backup_group_name(bucket: str) -> str:
    return ResourceNames.for_bucket(bucket).groups["backup"]


def default_stack_name(bucket: str) -> str:
    return "s3archive-" + re.sub(r"[^A-Za-z0-9-]", "-", bucket)


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def validate_bucket_name(name: str) -> None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name) or ".." in name:
        raise UsageError(f"--bucket {name!r}: not a valid S3 bucket name "
                         "(3-63 characters of a-z, 0-9, '.', '-')")
