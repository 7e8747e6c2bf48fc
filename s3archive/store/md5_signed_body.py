"""A PUT that carries Content-MD5 is signed without SigV4's hash of its body.

SigV4 signs a request's headers and, in ``x-amz-content-sha256``, either the
SHA-256 of its body or the string ``UNSIGNED-PAYLOAD``.  botocore hashes the
body over plain HTTP and skips it over HTTPS when the request carries a
checksum header; the hash costs a pass over every pack (SHA-256 here: ~0.19 s
of the client's CPU per 676 MB, and as much again in the server, which
hashes the body to compare).

Every PUT of the store carries ``Content-MD5`` (``S3Store._put``), which is
itself a signed header (SigV4 signs every header but ``expect``,
``user-agent``, ``transfer-encoding`` and ``x-amzn-trace-id``), and which S3
and Ceph RGW verify against the body they receive (``BadDigest``;
``tests/store/test_md5_signed_body_rgw.py``).  So the body stays protected
end to end without the payload hash, over HTTP as over HTTPS: changing it in
transit needs either a new Content-MD5, which breaks the signature, or a
second body of the same MD5 -- a second preimage of a body the attacker did
not choose, which nobody knows how to find (MD5's known collisions need both
messages crafted together).  The chunks inside are named by their SHA-256
besides, and every reader checks them.

Only a request that has ``Content-MD5`` when it is signed is changed, and
only when the client's configuration did not choose
(``s3.payload_signing_enabled``); everything else is signed as botocore
does.  (RGW does not verify ``x-amz-checksum-*`` headers: a request that
carries only those keeps its payload hash.)
"""

from __future__ import annotations

from typing import Any

from botocore.config import Config


def install(client: Any) -> None:
    """Sign ``client``'s PUTs that carry Content-MD5 without the body's SHA-256."""
    client.meta.events.register("before-sign.s3.PutObject", _sign_md5_not_body)


def _sign_md5_not_body(request: Any, **_: Any) -> None:
    if "Content-MD5" not in request.headers:
        return
    config = request.context.get("client_config")
    if config is None:
        return
    s3 = dict(getattr(config, "s3", None) or {})
    if s3.get("payload_signing_enabled") is not None:  # the configuration's own choice
        return
    s3["payload_signing_enabled"] = False
    # the request's own context: the client and its other requests are unchanged
    request.context["client_config"] = config.merge(Config(s3=s3))
