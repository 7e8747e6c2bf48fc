"""Translate botocore and OS errors into one line for users."""

from __future__ import annotations

from datetime import datetime, timezone


def error_code(err: BaseException) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or type(err).__name__


def is_transport_failure(err: BaseException) -> bool:
    """True when ``err`` means the request did not complete, not that S3 said no.

    Connection refused/reset/closed, time-outs, a body that broke off or came
    back short, and 5xx answers (InternalError, ServiceUnavailable, SlowDown)
    that outlasted botocore's retries.
    """
    from botocore.exceptions import (ClientError, ConnectionError, HTTPClientError,
                                     IncompleteReadError)

    if isinstance(err, ClientError):
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return (status >= 500 and status != 501) or error_code(err) in ("SlowDown",
                                                                          "RequestTimeout")
    return isinstance(err, (ConnectionError, HTTPClientError, IncompleteReadError, OSError))


def transport_cause(err: BaseException) -> str:
    """A few words for a transport failure: "connection reset", "short body" ..."""
    from botocore.exceptions import (ClientError, ConnectTimeoutError, EndpointConnectionError,
                                     IncompleteReadError, ReadTimeoutError)

    text = str(err)
    if isinstance(err, ClientError):
        return f"{error_code(err)} (HTTP {err.response.get('ResponseMetadata', {}).get('HTTPStatusCode', '?')})"
    if isinstance(err, IncompleteReadError) or "IncompleteRead" in text:
        return "short body (the connection closed early)"
    if isinstance(err, (ReadTimeoutError, ConnectTimeoutError)) or "timed out" in text:
        return "timed out"
    if isinstance(err, EndpointConnectionError):
        return str(err)  # names the endpoint URL
    if "reset" in text.lower():
        return "connection reset"
    if "aborted" in text.lower() or "closed" in text.lower() or "RemoteDisconnected" in text:
        return "connection closed"
    return text or type(err).__name__


def describe_error(err: BaseException) -> str:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(err, NoCredentialsError):
        return "no AWS credentials found (set s3.profile, s3.credentials_file or s3.role_arn)"
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        if error.get("Code") == "RequestTimeTooSkewed":
            skew = _describe_skew(err.response)
            if skew:
                return skew
        operation = getattr(err, "operation_name", "request")
        return f"S3 {operation} failed: {error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    if isinstance(err, BotoCoreError):
        return f"S3 request failed: {err}"
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    return str(err)


def server_time(response: dict) -> datetime | None:
    """The store's clock from a response's ``Date`` header (None if absent)."""
    from email.utils import parsedate_to_datetime

    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        moment = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        return None
    if moment is not None and moment.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def _describe_skew(response: dict) -> str | None:
    from s3archive.clock import describe_skew, utc_now

    store_now = server_time(response)
    return describe_skew(utc_now(), store_now) if store_now else None
