"""A moto server on 127.0.0.1 (over HTTP), with IAM enforcement on demand.

moto serves where RGW cannot: IAM enforcement of the roles and the
CloudFormation API path.  Enforcement is switched with moto's own
``/moto-api/reset-auth`` endpoint (what ``set_initial_no_auth_action_count``
posts in server mode): ``0`` checks every request against IAM, ``inf`` none.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

ADMIN_KEY = "AKIAMOTOADMIN0000001"
ADMIN_SECRET = "moto-admin-secret-not-used-for-auth"
REGION = "us-east-1"


@dataclass
class MotoServer:
    endpoint_url: str

    def set_iam_enforcement(self, on: bool) -> None:
        body = b"0" if on else b"inf"
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset-auth",
                                         data=body, method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", data=b"",
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def client(self, service: str, key: str = ADMIN_KEY, secret: str = ADMIN_SECRET) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=key, aws_secret_access_key=secret,
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 1}))

    def admin_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ADMIN_KEY, "AWS_SECRET_ACCESS_KEY": ADMIN_SECRET,
                "AWS_DEFAULT_REGION": REGION}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[MotoServer]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield MotoServer(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
