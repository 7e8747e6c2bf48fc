"""The lifecycle rules that make lifecycle the garbage collector.

Current versions get a delete marker after one day; a version expires one day
after it became non-current -- S3 never removes a version whose lock is still
in force, so a locked pack lives exactly as long as its lock; delete markers
left without versions are removed; stale multipart uploads are aborted.

With ``--cold-after DAYS`` one more rule moves data packs (``data/``, format
2) to GLACIER_IR DAYS days after they were written; never ``meta/``,
``runs/``, ``keys/`` or ``packs/`` (``s3archive/storage_classes.py``).  A pack
stops being current a day after it is written (the first rule's delete
marker), so the rule moves non-current versions DAYS - 1 days after that
(at least 1: S3 counts non-current days from 1), and current ones -- a pack
written again the same day, or a bucket without the first rule -- at DAYS.
"""

from __future__ import annotations

from typing import Any

from s3archive.config import MAX_RETENTION_DAYS
from s3archive.errors import UsageError
from s3archive.storage_classes import DATA_PREFIX, GLACIER_IR

EXPIRE_CURRENT_DAYS = 1
NONCURRENT_DAYS = 1
ABORT_MULTIPART_DAYS = 1
COLD_RULE_ID = "s3archive-cold-data"
# S3 accepts 0 days for a GLACIER_IR transition (the 30-day minimum is
# STANDARD_IA's and ONEZONE_IA's), but non-current days start at 1 and a
# pack is non-current from its second day: 1 is the earliest that means what
# it says.  The upper bound is that of every days option (36500).
COLD_AFTER_MIN = 1
COLD_AFTER_MAX = MAX_RETENTION_DAYS


def validate_cold_after(days: int | None) -> None:
    if days is not None and not COLD_AFTER_MIN <= days <= COLD_AFTER_MAX:
        raise UsageError(f"--cold-after {days}: must be between {COLD_AFTER_MIN} and "
                         f"{COLD_AFTER_MAX} days")


def _noncurrent_days(cold_after: int) -> int:
    return max(1, cold_after - EXPIRE_CURRENT_DAYS)


def cold_rule(cold_after: int) -> dict[str, Any]:
    """The transition of data packs, S3 API shape.  Like the IAM policies,
    it assumes no [s3] prefix (data packs at the bucket's top)."""
    return {"ID": COLD_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": DATA_PREFIX},
            "Transitions": [{"Days": cold_after, "StorageClass": GLACIER_IR}],
            "NoncurrentVersionTransitions": [{"NoncurrentDays": _noncurrent_days(cold_after),
                                              "StorageClass": GLACIER_IR}]}


def s3_rules(cold_after: int | None = None) -> list[dict[str, Any]]:
    """Rules in the S3 API's shape (PutBucketLifecycleConfiguration)."""
    validate_cold_after(cold_after)
    return _expiry_rules() + ([cold_rule(cold_after)] if cold_after is not None else [])


def _expiry_rules() -> list[dict[str, Any]]:
    return [
        {"ID": "s3archive-expire-versions", "Status": "Enabled", "Filter": {"Prefix": ""},
         "Expiration": {"Days": EXPIRE_CURRENT_DAYS},
         "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS}},
        # ExpiredObjectDeleteMarker cannot share an Expiration with Days.
        {"ID": "s3archive-remove-expired-delete-markers", "Status": "Enabled",
         "Filter": {"Prefix": ""}, "Expiration": {"ExpiredObjectDeleteMarker": True}},
        {"ID": "s3archive-abort-incomplete-uploads", "Status": "Enabled",
         "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS}},
    ]


def cloudformation_rules(cold_after: int | None = None) -> list[dict[str, Any]]:
    """The same rules in AWS::S3::Bucket LifecycleConfiguration shape."""
    validate_cold_after(cold_after)
    rules: list[dict[str, Any]] = [
        {"Id": "s3archive-expire-versions", "Status": "Enabled",
         "ExpirationInDays": EXPIRE_CURRENT_DAYS,
         "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS}},
        {"Id": "s3archive-remove-expired-delete-markers", "Status": "Enabled",
         "ExpiredObjectDeleteMarker": True},
        {"Id": "s3archive-abort-incomplete-uploads", "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS}},
    ]
    if cold_after is not None:
        rules.append({"Id": COLD_RULE_ID, "Status": "Enabled", "Prefix": DATA_PREFIX,
                      "Transitions": [{"TransitionInDays": cold_after,
                                       "StorageClass": GLACIER_IR}],
                      "NoncurrentVersionTransitions": [{
                          "TransitionInDays": _noncurrent_days(cold_after),
                          "StorageClass": GLACIER_IR}]})
    return rules


def missing_behaviours(rules: list[dict[str, Any]],
                       cold_after: int | None = None) -> list[str]:
    """What of the above a bucket's real rules (S3 API shape) do not do
    (``storage_classes.misplaced_transitions`` names transitions that do too
    much; one of data packs alone to GLACIER_IR is accepted, asked for or not)."""
    enabled = [r for r in rules if r.get("Status") == "Enabled" and _whole_bucket(r)]
    missing = []
    if not any(r.get("Expiration", {}).get("Days") == EXPIRE_CURRENT_DAYS for r in enabled):
        missing.append(f"delete marker on current versions after {EXPIRE_CURRENT_DAYS} day")
    if not any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == NONCURRENT_DAYS
               for r in enabled):
        missing.append(f"expiry of non-current versions after {NONCURRENT_DAYS} day")
    if not any(r.get("Expiration", {}).get("ExpiredObjectDeleteMarker") for r in enabled):
        missing.append("removal of expired delete markers")
    if not any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
               == ABORT_MULTIPART_DAYS for r in enabled):
        missing.append(f"abort of incomplete multipart uploads after {ABORT_MULTIPART_DAYS} day")
    if cold_after is not None and not any(_moves_data_cold(r, cold_after) for r in rules):
        missing.append(f"transition of {DATA_PREFIX} to {GLACIER_IR} after {cold_after} days "
                       f"(non-current versions after {_noncurrent_days(cold_after)})")
    return missing


def _moves_data_cold(rule: dict[str, Any], cold_after: int) -> bool:
    wanted = cold_rule(cold_after)
    flt = rule.get("Filter") or {}
    return (rule.get("Status") == "Enabled" and set(flt) == {"Prefix"}
            and flt.get("Prefix") == DATA_PREFIX
            and rule.get("Transitions") == wanted["Transitions"]
            and rule.get("NoncurrentVersionTransitions") == wanted["NoncurrentVersionTransitions"])


def _whole_bucket(rule: dict[str, Any]) -> bool:
    flt = rule.get("Filter")
    if flt is None:
        return not rule.get("Prefix")
    return set(flt) <= {"Prefix"} and not flt.get("Prefix")
