"""The store's own S3 client (``make_client``: the handlers it installs included)
over a fresh bucket of the suite's RGW."""

from __future__ import annotations

import random
from typing import Any

import botocore.session

from s3archive.config import S3Settings
from s3archive.store.s3_store import S3Store, make_client


def rgw_store(rgw: Any, prefix: str, locked: bool = True, retry: bool = True) -> S3Store:
    """An ``S3Store`` over a new bucket ``prefix-<random>`` (Object Lock on if ``locked``)."""
    session = botocore.session.Session()
    session.set_credentials(rgw.access_key, rgw.secret_key)
    session.set_config_variable("region", rgw.region)
    bucket = f"{prefix}-{random.Random().getrandbits(40):010x}"
    rgw.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=locked)
    return S3Store(make_client(S3Settings(bucket=bucket, endpoint_url=rgw.endpoint_url),
                               session=session, retry=retry), bucket)
