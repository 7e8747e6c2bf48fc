"""The S3 implementation of ObjectStore: the only boto3 data path."""

from __future__ import annotations

import base64
import configparser
import hashlib
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from s3archive.config import S3Settings
from s3archive.errors import (BucketNotFound, ConfigError, IntegrityError, NoSuchVersion,
                              StoreError, TransportError)
from s3archive.store.base import (BucketLockConfig, ObjectInfo, ObjectLock, PutResult,
                                  VersionEntry)
from s3archive.store.errors import (describe_error, error_code, is_transport_failure,
                                    server_time, transport_cause)

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "NoSuchVersion", "404", "NotFound", "InvalidArgument"}


def content_md5(body: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode("ascii")


def make_session(settings: S3Settings) -> Any:
    """A botocore session from the configured credentials source (never from argv).

    botocore's own session, not boto3's: boto3 adds nothing an S3 client of ours
    uses, and importing it and its transfer manager cost ~50 ms of CPU on every
    command (a third of the S3 client's start-up)."""
    if settings.role_arn and not settings.profile:
        return _assumed_role_session(settings)
    session = lean_botocore_session(profile=settings.profile or None)
    session.set_config_variable("region", settings.region)
    if settings.credentials_file and not settings.profile:
        keys = read_credentials_file(settings.credentials_file)
        session.set_credentials(keys["aws_access_key_id"], keys["aws_secret_access_key"],
                                keys.get("aws_session_token"))
    return session


# The services the store's sessions make clients for: S3, and STS for an assumed role.
ENDPOINT_SERVICES = frozenset({"s3", "sts"})


def lean_botocore_session(profile: str | None = None) -> Any:
    """A botocore session whose endpoint table keeps only ``ENDPOINT_SERVICES``.

    botocore's table (``endpoints.json``: every AWS service in every region)
    is loaded for each client and kept for the life of the process: about
    6.7 MiB of Python objects, a tenth of a cold ``ls`` or ``restore``'s peak
    memory.  Partitions, regions and their defaults are kept whole, so S3 and
    STS resolve exactly as with the whole table (and any other service by
    its partition's defaults).  A botocore without the hook keeps its own
    table: only memory is at stake."""
    import botocore.session

    from s3archive.store import service_loader

    core = botocore.session.Session(profile=profile)
    # (looks for the data of these services only: store/service_loader.py)
    core.lazy_register_component("data_loader", lambda: service_loader.create_loader(
        ENDPOINT_SERVICES, core.get_config_variable("data_path")))
    components = getattr(core, "_internal_components", None)
    if components is None or not hasattr(components, "lazy_register_component"):
        return core

    def endpoint_resolver() -> Any:
        from botocore.exceptions import DataNotFoundError
        from botocore.regions import EndpointResolver

        loader = core.get_component("data_loader")
        for base in loader.search_paths:  # as Loader.load_data_with_path, without its cache
            path = os.path.join(base, "endpoints")
            table = loader.file_loader.load_file(path)
            if table is not None:
                break
        else:
            raise DataNotFoundError(data_path="endpoints")
        for partition in table.get("partitions", []):
            partition["services"] = {name: service
                                     for name, service in partition.get("services", {}).items()
                                     if name in ENDPOINT_SERVICES}
        return EndpointResolver(table, uses_builtin_data=loader.is_builtin_path(path))

    components.lazy_register_component("endpoint_resolver", endpoint_resolver)
    return core


def read_credentials_file(path: Path) -> dict[str, str]:
    """Keys from an AWS-style credentials file (section ``[default]``)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read credentials file: {err.strerror}") from None
    except configparser.Error as err:
        raise ConfigError(f"{path}: not a valid credentials file: {err.message}") from None
    section = "default" if parser.has_section("default") else (parser.sections() or [None])[0]
    if section is None or not parser.has_option(section, "aws_access_key_id") \
            or not parser.has_option(section, "aws_secret_access_key"):
        raise ConfigError(f"{path}: needs aws_access_key_id and aws_secret_access_key "
                          "in a [default] section")
    keys = {"aws_access_key_id": parser.get(section, "aws_access_key_id"),
            "aws_secret_access_key": parser.get(section, "aws_secret_access_key")}
    if parser.has_option(section, "aws_session_token"):
        keys["aws_session_token"] = parser.get(section, "aws_session_token")
    return keys


ROLE_PROFILE = "s3archive-role"


def _assumed_role_session(settings: S3Settings) -> Any:
    """botocore's own assume-role provider (``role_arn`` with ``source_profile``,
    refreshed before expiry), configured by a private profile file that is
    read once and removed: the source keys are the credentials file's, else
    the environment's or the instance profile's."""
    import tempfile

    lines = [f"[profile {ROLE_PROFILE}]", f"role_arn = {settings.role_arn}",
             "role_session_name = s3archive", f"region = {settings.region}",
             "sts_regional_endpoints = regional"]
    core = lean_botocore_session()
    if settings.credentials_file:
        lines.append(f"source_profile = {_credentials_section(settings.credentials_file)}")
        core.set_config_variable("credentials_file", str(settings.credentials_file))
    else:
        source = "Environment" if os.environ.get("AWS_ACCESS_KEY_ID") else "Ec2InstanceMetadata"
        lines.append(f"credential_source = {source}")
        core.set_config_variable("credentials_file", os.devnull)
    if settings.sts_endpoint_url:
        lines += [f"services = {ROLE_PROFILE}", f"[services {ROLE_PROFILE}]", "sts =",
                  f"  endpoint_url = {settings.sts_endpoint_url}"]
    with tempfile.NamedTemporaryFile("w", prefix="s3archive-aws-config-") as config:
        config.write("\n".join(lines) + "\n")
        config.flush()
        core.set_config_variable("config_file", config.name)
        core.set_config_variable("profile", ROLE_PROFILE)
        core.full_config  # read now: the file is gone when this block ends
        core.get_credentials()  # source keys resolved now; STS is asked on first use
    return core


def _credentials_section(path: Path) -> str:
    read_credentials_file(path)  # the same checks and messages as without a role
    parser = configparser.ConfigParser(interpolation=None)
    with open(path, encoding="utf-8") as handle:
        parser.read_file(handle)
    return "default" if parser.has_section("default") else parser.sections()[0]


def make_client(settings: S3Settings, session: Any = None, pool_size: int = 16,
                retry: bool = True) -> Any:
    from botocore.config import Config as BotoConfig

    session = session or make_session(settings)
    config = BotoConfig(
        retries=({"mode": "standard", "max_attempts": 8} if retry
                 else {"mode": "standard", "total_max_attempts": 1}),
        max_pool_connections=pool_size,
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10, read_timeout=120,
    )
    # a botocore session (make_session) or a boto3 one (the operator's, setup/clients.py)
    create = getattr(session, "create_client", None) or session.client
    client = create("s3", endpoint_url=settings.endpoint_url, config=config)
    # (these import botocore: only once a client is made)
    from s3archive.store import md5_signed_body, quick_ack

    quick_ack.install(client)  # no 40 ms stall per response (store/quick_ack.py)
    md5_signed_body.install(client)  # a PUT's body is protected by its signed Content-MD5
    return client


@dataclass(frozen=True)
class BodyRetry:
    """How often a GET whose body broke after the headers is sent again.

    botocore retries a request that fails before its response headers
    (connection refused or reset, 5xx, SlowDown: ``max_attempts`` above); a
    body that breaks off, comes back short or garbled after the headers is
    not botocore's to retry, so ``S3Store.get`` does it: ``attempts`` GETs in
    all, with exponential back-off (full jitter) between them.
    """

    attempts: int = 5
    first_delay: float = 0.1
    max_delay: float = 2.0

    def pause(self, failed_attempt: int) -> None:
        ceiling = min(self.max_delay, self.first_delay * 2 ** (failed_attempt - 1))
        time.sleep(random.uniform(ceiling / 2, ceiling))


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)$")
_PLAIN_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')


class S3Store:
    """The full store (every capability) over one bucket and key prefix."""

    def __init__(self, client: Any, bucket: str, prefix: str = "",
                 single_attempt_client: Any = None, body_retry: BodyRetry = BodyRetry(),
                 page_size: int | None = None):
        self.client = client
        # put_once: a client that makes one attempt (without one, put_once retries as put)
        self.single_attempt_client = single_attempt_client or client
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.body_retry = body_retry
        self.page_size = page_size  # listing page size (None: the store's, 1000 on S3)

    @classmethod
    def from_settings(cls, settings: S3Settings, pool_size: int = 16) -> "S3Store":
        session = make_session(settings)
        return cls(make_client(settings, session, pool_size=pool_size), settings.bucket,
                   settings.prefix, make_client(settings, session, pool_size=2, retry=False))

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _rel(self, full_key: str) -> str:
        return full_key[len(self.prefix):]

    def _call(self, what: str, method: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(Bucket=self.bucket, **kwargs)
        except ClientError as err:
            code = error_code(err)
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING and (status == 404 or code.startswith("NoSuch")):
                raise NoSuchVersion(f"{what}: no such object version") from None
            if code == "NoSuchBucket":
                raise BucketNotFound.named(self.bucket) from None
            if is_transport_failure(err):
                raise TransportError(f"{what}: could not complete after {_tries(err)}: "
                                     f"{transport_cause(err)}") from None
            raise StoreError(f"{what}: {describe_error(err)}") from None
        except BotoCoreError as err:
            if is_transport_failure(err):
                raise TransportError(f"{what}: could not complete after {_tries(err)}: "
                                     f"{transport_cause(err)}") from None
            raise StoreError(f"{what}: {describe_error(err)}") from None

    def put(self, key: str, body: bytes | bytearray, lock: ObjectLock | None,
            legal_hold: bool = False) -> PutResult:
        return self._put(self.client, key, body, lock, legal_hold)

    def put_once(self, key: str, body: bytes, lock: ObjectLock | None,
                 legal_hold: bool = False) -> PutResult:
        return self._put(self.single_attempt_client, key, body, lock, legal_hold)

    def _put(self, client: Any, key: str, body: bytes, lock: ObjectLock | None,
             legal_hold: bool) -> PutResult:
        kwargs: dict[str, Any] = {"Key": self._key(key), "Body": body,
                                  "ContentMD5": content_md5(body),
                                  "ContentLength": len(body)}
        if lock is not None:
            kwargs["ObjectLockMode"] = lock.mode
            kwargs["ObjectLockRetainUntilDate"] = lock.retain_until
        if legal_hold:
            kwargs["ObjectLockLegalHoldStatus"] = "ON"
        try:
            response = self._call(f"PUT {key}", client.put_object, **kwargs)
        except StoreError as err:
            if lock is not None and "InvalidArgument" in str(err):
                raise StoreError(f"PUT {key}: the store refused the lock until "
                                 f"{lock.retain_until.isoformat()} ({err}): a retain-until "
                                 "must lie in the future by the store's clock") from None
            raise
        version = response.get("VersionId")
        if not version or version == "null":
            version = "null"
        return PutResult(key=key, version_id=version, size=len(body))

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        kwargs: dict[str, Any] = {"Key": self._key(key)}
        if version_id and version_id != "null":
            kwargs["VersionId"] = version_id
        if byte_range is not None:
            first, last = byte_range
            if not 0 <= first <= last:
                raise ValueError(f"GET {key}: invalid byte range {byte_range!r}")
            kwargs["Range"] = f"bytes={first}-{last}"
        what = f"GET {key}" + (f" bytes {byte_range[0]}-{byte_range[1]}" if byte_range else "")
        attempts = max(1, self.body_retry.attempts)
        causes: list[str] = []
        for attempt in range(1, attempts + 1):
            response = self._call(what, self.client.get_object, **kwargs)
            stream = response["Body"]
            try:
                body = stream.read()
            except Exception as err:  # noqa: BLE001 - sorted below
                if not is_transport_failure(err) and not _is_urllib3_error(err):
                    raise StoreError(f"{what}: reading the body failed: {err}") from None
                causes.append(transport_cause(err))
            else:
                problem = _body_problem(response, body, byte_range)
                if problem is None:
                    return _clamp(body, byte_range) if _served_whole(response, byte_range) \
                        else body
                causes.append(problem)
            finally:
                stream.close()
            if attempt < attempts:
                log.info("%s: %s; trying again (%d of %d)", what, causes[-1], attempt + 1,
                         attempts)
                self.body_retry.pause(attempt)
        if all(cause == _MD5_MISMATCH for cause in causes):
            raise IntegrityError(f"{what}: {_MD5_MISMATCH} in each of {attempts} reads")
        raise TransportError(f"{what}: could not read the body after {attempts} "
                             f"{'try' if attempts == 1 else 'tries'}: {causes[-1]}")

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo:
        kwargs: dict[str, Any] = {"Key": self._key(key)}
        if version_id and version_id != "null":
            kwargs["VersionId"] = version_id
        response = self._call(f"HEAD {key}", self.client.head_object, **kwargs)
        until = response.get("ObjectLockRetainUntilDate")
        return ObjectInfo(
            key=key, version_id=response.get("VersionId") or "null",
            size=int(response.get("ContentLength", 0)),
            lock_mode=response.get("ObjectLockMode"),
            retain_until=until.astimezone(timezone.utc) if until else None,
            legal_hold=response.get("ObjectLockLegalHoldStatus") == "ON",
            last_modified=response.get("LastModified"),
            storage_class=response.get("StorageClass"))

    def extend_retention(self, key: str, version_id: str, lock: ObjectLock) -> None:
        try:
            self._call(f"PutObjectRetention {key}", self.client.put_object_retention,
                       Key=self._key(key), VersionId=version_id,
                       Retention={"Mode": lock.mode, "RetainUntilDate": lock.retain_until})
        except NoSuchVersion:
            raise
        except StoreError as err:
            if "InvalidArgument" in str(err):
                raise StoreError(f"PutObjectRetention {key}: the store refused the lock until "
                                 f"{lock.retain_until.isoformat()} ({err}): a retain-until "
                                 "must lie in the future by the store's clock") from None
            raise

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        self._call(f"PutObjectLegalHold {key}", self.client.put_object_legal_hold,
                   Key=self._key(key), VersionId=version_id,
                   LegalHold={"Status": "ON" if on else "OFF"})

    def list_versions(self, prefix: str) -> Iterator[VersionEntry]:
        kwargs: dict[str, Any] = {"Prefix": self._key(prefix)}
        if self.page_size:
            kwargs["MaxKeys"] = self.page_size
        while True:
            page = self._call(f"ListObjectVersions {prefix}",
                              self.client.list_object_versions, **kwargs)
            for item in page.get("Versions", []):
                yield VersionEntry(key=self._rel(item["Key"]), version_id=item["VersionId"],
                                   size=int(item.get("Size", 0)),
                                   last_modified=item["LastModified"],
                                   is_latest=bool(item.get("IsLatest")),
                                   storage_class=item.get("StorageClass"))
            for item in page.get("DeleteMarkers", []):
                yield VersionEntry(key=self._rel(item["Key"]), version_id=item["VersionId"],
                                   size=0, last_modified=item["LastModified"],
                                   is_latest=bool(item.get("IsLatest")), is_delete_marker=True)
            if not page.get("IsTruncated"):
                return
            kwargs["KeyMarker"] = page["NextKeyMarker"]
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker", "")

    def list_keys(self, prefix: str) -> Iterator[VersionEntry]:
        kwargs: dict[str, Any] = {"Prefix": self._key(prefix)}
        if self.page_size:
            kwargs["MaxKeys"] = self.page_size
        while True:
            page = self._call(f"ListObjectsV2 {prefix}", self.client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                yield VersionEntry(key=self._rel(item["Key"]), version_id="",
                                   size=int(item.get("Size", 0)),
                                   last_modified=item["LastModified"], is_latest=True)
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def delete_version(self, key: str, version_id: str) -> None:
        self._call(f"DELETE {key}", self.client.delete_object, Key=self._key(key),
                   VersionId=version_id)

    def bucket_lock_config(self) -> BucketLockConfig:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as err:
            if error_code(err) in ("ObjectLockConfigurationNotFoundError",
                                   "ObjectLockConfigurationNotFound", "NoSuchObjectLockConfiguration"):
                return BucketLockConfig(enabled=False, server_time=server_time(err.response))
            if error_code(err) == "NoSuchBucket":
                raise BucketNotFound.named(self.bucket) from None
            raise StoreError(f"GetObjectLockConfiguration: {describe_error(err)}") from None
        conf = response.get("ObjectLockConfiguration", {})
        rule = conf.get("Rule", {}).get("DefaultRetention", {})
        return BucketLockConfig(enabled=conf.get("ObjectLockEnabled") == "Enabled",
                                default_mode=rule.get("Mode"), default_days=rule.get("Days"),
                                default_years=rule.get("Years"),
                                server_time=server_time(response))


    def usage(self) -> None:
        """S3Store does not count; ``CountingStore`` does."""
        return None


_MD5_MISMATCH = "the body does not match its MD5 ETag"


def _tries(err: BaseException) -> str:
    response = getattr(err, "response", None) or {}
    retries = response.get("ResponseMetadata", {}).get("RetryAttempts")
    return f"{int(retries) + 1} tries" if retries is not None else "retries"


def _is_urllib3_error(err: BaseException) -> bool:
    from urllib3.exceptions import HTTPError

    return isinstance(err, HTTPError)


def _served_whole(response: dict[str, Any], byte_range: tuple[int, int] | None) -> bool:
    """A ranged GET answered with the whole object (200, no Content-Range)."""
    return byte_range is not None and not response.get("ContentRange")


def _clamp(body: bytes, byte_range: tuple[int, int] | None) -> bytes:
    assert byte_range is not None
    return body[byte_range[0]:byte_range[1] + 1]


def _body_problem(response: dict[str, Any], body: bytes,
                  byte_range: tuple[int, int] | None) -> str | None:
    """Why a body that arrived must not be returned (a transport fault), or None.

    The body must have the length the response announced; a ranged body must
    cover exactly the requested range (clamped at the end of the object); a
    whole, unencrypted single-PUT object must match its ETag, which is its MD5.
    """
    announced = response.get("ContentLength")
    if announced is not None and int(announced) != len(body):
        return f"short body ({len(body)} of {announced} bytes)"
    if byte_range is not None:
        content_range = response.get("ContentRange")
        if not content_range:
            return None if len(body) > byte_range[0] else "range not served"
        match = _CONTENT_RANGE.match(content_range)
        if match is None:
            return f"unreadable Content-Range {content_range!r}"
        first, last = int(match.group(1)), int(match.group(2))
        total = None if match.group(3) == "*" else int(match.group(3))
        expected_last = byte_range[1] if total is None else min(byte_range[1], total - 1)
        if first != byte_range[0] or last != expected_last or len(body) != last - first + 1:
            return (f"short body ({len(body)} bytes for bytes {byte_range[0]}-{byte_range[1]}, "
                    f"Content-Range {content_range})")
        return None
    etag = _PLAIN_ETAG.match(response.get("ETag") or "")
    encrypted = (response.get("ServerSideEncryption", "") or "").startswith("aws:kms") \
        or bool(response.get("SSECustomerAlgorithm"))
    if etag and not encrypted and hashlib.md5(body).hexdigest() != etag.group(1).lower():
        return _MD5_MISMATCH
    return None


def utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)
