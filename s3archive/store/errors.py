"""Translate botocore and OS errors into one line for users."""

from __future__ import annotations


def error_code(err: BaseException) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or type(err).__name__


def describe_error(err: BaseException) -> str:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(err, NoCredentialsError):
        return "no AWS credentials found (set s3.profile, s3.credentials_file or s3.role_arn)"
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        operation = getattr(err, "operation_name", "request")
        return f"S3 {operation} failed: {error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    if isinstance(err, BotoCoreError):
        return f"S3 request failed: {err}"
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    return str(err)
