"""The S3 implementation of ObjectStore: the only boto3 data path."""

from __future__ import annotations

import base64
import configparser
import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from s3archive.config import S3Settings
from s3archive.errors import BucketNotFound, ConfigError, NoSuchVersion, StoreError
from s3archive.store.base import (BucketLockConfig, ObjectInfo, ObjectLock, PutResult,
                                  VersionEntry)
from s3archive.store.errors import describe_error, error_code, server_time

_MISSING = {"NoSuchKey", "NoSuchVersion", "404", "NotFound", "InvalidArgument"}


def content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode("ascii")


def make_session(settings: S3Settings) -> Any:
    """A boto3 session from the configured credentials source (never from argv)."""
    import boto3

    if settings.profile:
        return boto3.Session(profile_name=settings.profile, region_name=settings.region)
    if settings.credentials_file:
        keys = read_credentials_file(settings.credentials_file)
        session = boto3.Session(region_name=settings.region, **keys)
    else:
        session = boto3.Session(region_name=settings.region)
    if settings.role_arn:
        return _assumed_role_session(session, settings)
    return session


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


def _assumed_role_session(base: Any, settings: S3Settings) -> Any:
    import boto3
    import botocore.session
    from botocore.credentials import RefreshableCredentials

    sts = base.client("sts", endpoint_url=None)

    def refresh() -> dict[str, str]:
        creds = sts.assume_role(RoleArn=settings.role_arn,
                                RoleSessionName="s3archive")["Credentials"]
        return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"],
                "expiry_time": creds["Expiration"].isoformat()}

    core = botocore.session.get_session()
    core._credentials = RefreshableCredentials.create_from_metadata(
        metadata=refresh(), refresh_using=refresh, method="sts-assume-role")
    core.set_config_variable("region", settings.region)
    return boto3.Session(botocore_session=core)


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
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


class S3Store:
    """ObjectStore over one bucket and key prefix."""

    def __init__(self, client: Any, bucket: str, prefix: str = "",
                 single_attempt_client: Any = None):
        self.client = client
        # put_once: a client that makes one attempt (without one, put_once retries as put)
        self.single_attempt_client = single_attempt_client or client
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""

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
            raise StoreError(f"{what}: {describe_error(err)}") from None
        except BotoCoreError as err:
            raise StoreError(f"{what}: {describe_error(err)}") from None

    def put(self, key: str, body: bytes, lock: ObjectLock | None,
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
            kwargs["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        response = self._call(f"GET {key}", self.client.get_object, **kwargs)
        try:
            return response["Body"].read()
        except Exception as err:  # a broken connection mid-body
            raise StoreError(f"GET {key}: reading the body failed: {err}") from None

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
            last_modified=response.get("LastModified"))

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
        while True:
            page = self._call(f"ListObjectVersions {prefix}",
                              self.client.list_object_versions, **kwargs)
            for item in page.get("Versions", []):
                yield VersionEntry(key=self._rel(item["Key"]), version_id=item["VersionId"],
                                   size=int(item.get("Size", 0)),
                                   last_modified=item["LastModified"],
                                   is_latest=bool(item.get("IsLatest")))
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


def utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)
