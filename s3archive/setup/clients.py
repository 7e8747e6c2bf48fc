"""boto3 clients for the operator's own (administrator) credentials.

Credentials come from the default chain (environment, ``AWS_PROFILE``, the
instance profile): never from the command line.  With an endpoint URL every
service (S3, IAM, STS, CloudFormation) is asked at that endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s3archive.config import S3Settings
from s3archive.store.s3_store import make_client


@dataclass(frozen=True)
class AdminClients:
    region: str
    endpoint_url: str | None = None

    def _session(self) -> Any:
        import boto3

        return boto3.Session(region_name=self.region)

    def s3(self) -> Any:
        settings = S3Settings(bucket="-", region=self.region, endpoint_url=self.endpoint_url)
        return make_client(settings, session=self._session(), pool_size=4)

    def service(self, name: str) -> Any:
        from botocore.config import Config as BotoConfig

        return self._session().client(
            name, endpoint_url=self.endpoint_url,
            config=BotoConfig(retries={"mode": "standard", "max_attempts": 5}))

    def account_id(self) -> str | None:
        """The caller's account, or None where the store has no STS (e.g. RGW)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return str(self.service("sts").get_caller_identity()["Account"])
        except (ClientError, BotoCoreError):
            return None
