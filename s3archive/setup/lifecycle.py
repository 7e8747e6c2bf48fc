"""The lifecycle rules that make lifecycle the garbage collector.

Current versions get a delete marker after one day; a version expires one day
after it became non-current -- S3 never removes a version whose lock is still
in force, so a locked pack lives exactly as long as its lock; delete markers
left without versions are removed; stale multipart uploads are aborted.
"""

from __future__ import annotations

from typing import Any

EXPIRE_CURRENT_DAYS = 1
NONCURRENT_DAYS = 1
ABORT_MULTIPART_DAYS = 1


def s3_rules() -> list[dict[str, Any]]:
    """Rules in the S3 API's shape (PutBucketLifecycleConfiguration)."""
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


def cloudformation_rules() -> list[dict[str, Any]]:
    """The same rules in AWS::S3::Bucket LifecycleConfiguration shape."""
    return [
        {"Id": "s3archive-expire-versions", "Status": "Enabled",
         "ExpirationInDays": EXPIRE_CURRENT_DAYS,
         "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS}},
        {"Id": "s3archive-remove-expired-delete-markers", "Status": "Enabled",
         "ExpiredObjectDeleteMarker": True},
        {"Id": "s3archive-abort-incomplete-uploads", "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS}},
    ]


def missing_behaviours(rules: list[dict[str, Any]]) -> list[str]:
    """What of the above a bucket's real rules (S3 API shape) do not do."""
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
    return missing


def _whole_bucket(rule: dict[str, Any]) -> bool:
    flt = rule.get("Filter")
    if flt is None:
        return not rule.get("Prefix")
    return set(flt) <= {"Prefix"} and not flt.get("Prefix")
