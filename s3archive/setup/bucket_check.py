"""Read a bucket's real configuration back and name every difference.

CloudFormation (moto's, at least) can report success while ignoring half of a
bucket's properties, and S3-compatible stores reject some settings: what the
bucket really does is only known by asking it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from s3archive.setup import lifecycle
from s3archive.setup.bucket_setup import encryption_configuration
from s3archive.setup.spec import BucketSpec
from s3archive.storage_classes import misplaced_transitions
from s3archive.store.errors import describe_error


@dataclass(frozen=True)
class Difference:
    setting: str
    wanted: str
    actual: str
    fatal: bool = False  # no Object Lock or no versioning: backups are not protected

    def __str__(self) -> str:
        return f"{self.setting}: wanted {self.wanted}, found {self.actual}"


@dataclass
class CheckResult:
    bucket: str
    differences: list[Difference] = field(default_factory=list)

    @property
    def fatal(self) -> bool:
        return any(d.fatal for d in self.differences)

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "fatal": self.fatal,
                "differences": [{"setting": d.setting, "wanted": d.wanted,
                                 "actual": d.actual, "fatal": d.fatal}
                                for d in self.differences]}


def check_bucket(s3: Any, spec: BucketSpec, expected_policy: dict[str, Any] | None) -> CheckResult:
    """Compare the bucket with ``spec``; ``expected_policy`` None means no policy wanted."""
    result = CheckResult(bucket=spec.bucket)
    add = result.differences.append
    _check_lock(s3, spec, add)
    versioning = _read(s3.get_bucket_versioning, spec.bucket)
    status = versioning.value.get("Status") if versioning.ok else versioning.error
    if status != "Enabled":
        add(Difference("versioning", "Enabled", str(status or "never enabled"), fatal=True))
    _check_lifecycle(s3, spec, add)
    _check_encryption(s3, spec, add)
    _check_public_access(s3, spec, add)
    _check_ownership(s3, spec, add)
    _check_policy(s3, spec, expected_policy, add)
    return result


@dataclass(frozen=True)
class _Answer:
    ok: bool
    value: dict[str, Any]
    error: str = ""
    code: str = ""


def _read(call: Any, bucket: str) -> _Answer:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = call(Bucket=bucket)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        return _Answer(False, {}, f"none ({code or describe_error(err)})", code)
    except BotoCoreError as err:
        return _Answer(False, {}, f"unreadable ({describe_error(err)})")
    response.pop("ResponseMetadata", None)
    return _Answer(True, response)


def _check_lock(s3: Any, spec: BucketSpec, add: Any) -> None:
    answer = _read(s3.get_object_lock_configuration, spec.bucket)
    conf = answer.value.get("ObjectLockConfiguration", {})
    if conf.get("ObjectLockEnabled") != "Enabled":
        add(Difference("object lock", "Enabled", answer.error or "not enabled", fatal=True))
        return
    rule = conf.get("Rule", {}).get("DefaultRetention", {})
    wanted = f"{spec.lock_mode} {spec.default_retention_days} days"
    actual = (f"{rule.get('Mode')} {rule['Days']} days" if "Days" in rule
              else f"{rule.get('Mode')} {rule['Years']} years" if "Years" in rule else "none")
    if actual != wanted:
        add(Difference("default retention", wanted, actual))


def _check_lifecycle(s3: Any, spec: BucketSpec, add: Any) -> None:
    answer = _read(s3.get_bucket_lifecycle_configuration, spec.bucket)
    rules = answer.value.get("Rules", [])
    for behaviour in lifecycle.missing_behaviours(rules, spec.cold_after):
        add(Difference("lifecycle", behaviour, answer.error or "no such rule"))
    for why in misplaced_transitions(rules):
        add(Difference("lifecycle transition", "data packs (data/) only, to GLACIER_IR", why))


def _check_encryption(s3: Any, spec: BucketSpec, add: Any) -> None:
    answer = _read(s3.get_bucket_encryption, spec.bucket)
    wanted = encryption_configuration(spec)["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    rules = answer.value.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    found = [r.get("ApplyServerSideEncryptionByDefault", {}) for r in rules]
    if not any(f.get("SSEAlgorithm") == wanted["SSEAlgorithm"]
               and f.get("KMSMasterKeyID") == wanted.get("KMSMasterKeyID")
               and not (wanted["SSEAlgorithm"] == "aws:kms" and not f.get("KMSMasterKeyID"))
               for f in found) and not _kms_arn_matches(found, wanted):
        add(Difference("encryption", _describe_sse(wanted),
                       ", ".join(_describe_sse(f) for f in found) or answer.error or "none"))


def _kms_arn_matches(found: list[dict[str, Any]], wanted: dict[str, Any]) -> bool:
    key = wanted.get("KMSMasterKeyID")
    return bool(key) and any(f.get("SSEAlgorithm") == "aws:kms"
                             and str(f.get("KMSMasterKeyID", "")).endswith(key) for f in found)


def _describe_sse(rule: dict[str, Any]) -> str:
    key = rule.get("KMSMasterKeyID")
    return f"{rule.get('SSEAlgorithm')}" + (f" with key {key}" if key else "")


def _check_public_access(s3: Any, spec: BucketSpec, add: Any) -> None:
    answer = _read(s3.get_public_access_block, spec.bucket)
    conf = answer.value.get("PublicAccessBlockConfiguration", {})
    flags = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    off = [f for f in flags if conf.get(f) is not True]
    if off:
        add(Difference("public access block", "all four settings on",
                       answer.error or f"off: {', '.join(off)}"))


def _check_ownership(s3: Any, spec: BucketSpec, add: Any) -> None:
    answer = _read(s3.get_bucket_ownership_controls, spec.bucket)
    rules = answer.value.get("OwnershipControls", {}).get("Rules", [])
    found = [r.get("ObjectOwnership") for r in rules]
    if "BucketOwnerEnforced" not in found:
        add(Difference("object ownership", "BucketOwnerEnforced",
                       ", ".join(map(str, found)) or answer.error or "none"))


def _check_policy(s3: Any, spec: BucketSpec, expected: dict[str, Any] | None, add: Any) -> None:
    answer = _read(s3.get_bucket_policy, spec.bucket)
    if expected is None:
        if answer.ok and answer.value.get("Policy"):
            add(Difference("bucket policy", "none (--no-bucket-policy)", "a policy is set"))
        return
    if not answer.ok:
        add(Difference("bucket policy", "statements " + _sids(expected), answer.error))
        return
    try:
        actual = json.loads(answer.value.get("Policy", ""))
    except ValueError:
        add(Difference("bucket policy", "statements " + _sids(expected), "unparsable JSON"))
        return
    wanted = {s["Sid"]: _normalise(s) for s in expected["Statement"]}
    found = {s.get("Sid", ""): _normalise(s) for s in actual.get("Statement", [])}
    for sid, statement in wanted.items():
        if sid not in found:
            add(Difference(f"bucket policy statement {sid}", "present", "missing"))
        elif found[sid] != statement:
            add(Difference(f"bucket policy statement {sid}", json.dumps(statement, sort_keys=True),
                           json.dumps(found[sid], sort_keys=True)))
    for sid in found.keys() - wanted.keys():
        add(Difference(f"bucket policy statement {sid or '(no Sid)'}", "absent", "present"))


def _sids(policy: dict[str, Any]) -> str:
    return ", ".join(s["Sid"] for s in policy["Statement"])


def _normalise(value: Any) -> Any:
    """Stores rewrite policies (one-element lists become strings, "*" becomes
    {"AWS": "*"}, numbers become strings): compare in one canonical shape."""
    if isinstance(value, dict):
        out = {k: _normalise(v) for k, v in value.items() if k != "Sid"}
        if out.get("Principal") in (["*"], {"AWS": ["*"]}):
            out["Principal"] = {"AWS": ["*"]}
        return out
    if isinstance(value, (list, tuple)):
        items = [_normalise(v) if isinstance(v, dict) else _scalar(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return [_scalar(value)]


def _scalar(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_iam(iam: Any, spec: BucketSpec) -> list[Difference]:
    """The roles and groups both methods create, host roles included
    (moto's CloudFormation, for one, skips groups while reporting success)."""
    from botocore.exceptions import BotoCoreError, ClientError

    names = spec.names
    differences = []
    wanted = [("IAM group", iam.get_group, {"GroupName": group}) for group in names.groups.values()]
    wanted += [("IAM role", iam.get_role, {"RoleName": role})
               for role in [*names.roles.values(), *map(names.host_role, spec.hosts)]]
    for what, call, name in wanted:
        try:
            call(**name)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            differences.append(Difference(f"{what} {next(iter(name.values()))}", "present",
                                          "missing" if code == "NoSuchEntity" else code))
        except BotoCoreError as err:
            differences.append(Difference(f"{what} {next(iter(name.values()))}", "present",
                                          f"unreadable ({describe_error(err)})"))
    return differences
