"""Acknowledge each response at once: no 40 ms stall per request on a kept-alive connection.

A server that writes a response in two pieces (headers, then body) with Nagle's
algorithm on holds the second piece until the first is acknowledged, and Linux
delays that acknowledgement up to 40 ms on a connection it takes for
interactive.  Ceph RGW's beast frontend does this: every GET, list or lock query
on a pooled connection took 44 ms on loopback where 0.4 ms is the work
(measured with a raw socket against the test RGW; PUTs, whose answer is one
piece, were not affected).  ``TCP_QUICKACK`` turns delayed acknowledgements off
only until the kernel decides otherwise, so it is set again before each
response is read.  It changes when acknowledgements are sent, nothing that is
sent or received.

botocore offers no hook for a request's socket: its connection pool classes
are swapped for these subclasses in the client's own HTTP session (a private
attribute of botocore 1.x; where it is not there, the client is left as it is).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from botocore.awsrequest import (AWSHTTPConnection, AWSHTTPConnectionPool,
                                 AWSHTTPSConnection, AWSHTTPSConnectionPool)

log = logging.getLogger(__name__)

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def _ack_at_once(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None and _QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:  # (a socket closed under us: the read that follows says so)
            pass


class QuickAckHTTPConnection(AWSHTTPConnection):
    def getresponse(self) -> Any:  # type: ignore[override]
        _ack_at_once(self)
        return super().getresponse()


class QuickAckHTTPSConnection(AWSHTTPSConnection):
    def getresponse(self) -> Any:  # type: ignore[override]
        _ack_at_once(self)
        return super().getresponse()


class QuickAckHTTPConnectionPool(AWSHTTPConnectionPool):
    ConnectionCls = QuickAckHTTPConnection


class QuickAckHTTPSConnectionPool(AWSHTTPSConnectionPool):
    ConnectionCls = QuickAckHTTPSConnection


def install(client: Any) -> bool:
    """Make ``client``'s connections acknowledge responses at once; whether it could."""
    if _QUICKACK is None:
        return False
    pools = getattr(getattr(getattr(client, "_endpoint", None), "http_session", None),
                    "_pool_classes_by_scheme", None)
    if not isinstance(pools, dict) or pools.get("http") is not AWSHTTPConnectionPool \
            or pools.get("https") is not AWSHTTPSConnectionPool:
        log.debug("botocore's connection pools are not the ones known: delayed ACKs stay")
        return False
    # the pool manager holds this same dict: pools made from now on use these classes
    pools["http"] = QuickAckHTTPConnectionPool
    pools["https"] = QuickAckHTTPSConnectionPool
    return True
