"""A PUT is signed over its Content-MD5, not over a SHA-256 of its body
(store/md5_signed_body.py), and the body is still protected end to end: the
real RGW refuses a body changed after signing, with or without a matching
Content-MD5."""

from __future__ import annotations

import base64
import hashlib
import random
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest

from s3archive.errors import StoreError
from s3archive.store.base import ObjectLock
from s3archive.store.s3_store import S3Store

from support.rgw_store import rgw_store

UNSIGNED = b"UNSIGNED-PAYLOAD"


def _store(rgw: Any, locked: bool = True) -> S3Store:
    return rgw_store(rgw, "md5-signed", locked=locked, retry=False)


def _lock() -> ObjectLock:
    return ObjectLock("GOVERNANCE", datetime.now(timezone.utc).replace(microsecond=0)
                      + timedelta(hours=1))


def _on_send(store: S3Store, handler: Callable[[Any], None]) -> None:
    store.client.meta.events.register("before-send.s3.PutObject",
                                      lambda request, **_: handler(request))


def _signed_headers(headers: Any) -> list[str]:
    authorization = headers["Authorization"]
    authorization = authorization.decode() if isinstance(authorization, bytes) else authorization
    return authorization.split("SignedHeaders=")[1].split(",")[0].split(";")


def _body(request: Any) -> bytes:
    body = request.body
    return body.getvalue() if hasattr(body, "getvalue") else bytes(body)


def _value(headers: Any, name: str) -> bytes:
    value = headers[name]
    return value if isinstance(value, bytes) else value.encode()


def test_a_put_signs_its_content_md5_not_its_body_and_is_stored(rgw: Any) -> None:
    store = _store(rgw)
    sent: list[Any] = []
    _on_send(store, lambda request: sent.append(dict(request.headers)))
    body = bytearray(random.Random(1).randbytes(300_000))
    result = store.put("data/ab/pack", body, _lock())
    assert _value(sent[0], "X-Amz-Content-SHA256") == UNSIGNED
    assert "content-md5" in _signed_headers(sent[0])
    assert store.get("data/ab/pack", result.version_id) == body


def test_a_body_changed_after_signing_is_refused(rgw: Any) -> None:
    store = _store(rgw)

    def flip_a_byte(request: Any) -> None:
        changed = bytearray(_body(request))
        changed[1000] ^= 1
        request.body = bytes(changed)

    _on_send(store, flip_a_byte)
    with pytest.raises(StoreError, match="BadDigest"):
        store.put("data/ab/pack", random.Random(2).randbytes(100_000), _lock())
    assert list(store.list_versions("")) == []


def test_a_body_changed_with_its_content_md5_is_refused(rgw: Any) -> None:
    store = _store(rgw)

    def replace_body_and_md5(request: Any) -> None:
        changed = bytes(len(_body(request)))
        request.body = changed
        request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(changed).digest())

    _on_send(store, replace_body_and_md5)
    with pytest.raises(StoreError, match="SignatureDoesNotMatch"):
        store.put("data/ab/pack", random.Random(3).randbytes(100_000), _lock())
    assert list(store.list_versions("")) == []


def test_a_put_without_content_md5_keeps_its_body_hash(rgw: Any) -> None:
    store = _store(rgw, locked=False)
    sent: list[Any] = []
    _on_send(store, lambda request: sent.append(dict(request.headers)))
    body = b"no Content-MD5 here"
    store.client.put_object(Bucket=store.bucket, Key="plain", Body=body)
    assert _value(sent[0], "X-Amz-Content-SHA256") == hashlib.sha256(body).hexdigest().encode()
