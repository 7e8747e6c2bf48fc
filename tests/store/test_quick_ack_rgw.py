"""Responses on a kept-alive connection are acknowledged at once (store/quick_ack.py).

RGW writes a GET's headers and body in two pieces with Nagle's algorithm on; with
delayed acknowledgements each such request on a pooled connection waited ~40 ms
for the second piece (44 ms against 0.4 ms of work).  The store's client must not."""

from __future__ import annotations

import time
from typing import Any

from s3archive.store import quick_ack
from s3archive.store.s3_store import S3Store

from support.rgw_store import rgw_store

REQUESTS = 20
DELAYED_ACK_S = 0.040  # Linux's shortest delayed acknowledgement (TCP_DELACK_MIN)


def _store(rgw: Any) -> S3Store:
    return rgw_store(rgw, "quick-ack")


def _seconds_for_small_gets(store: S3Store) -> float:
    store.bucket_lock_config()  # the connection is made (and its first answer is quick anyway)
    began = time.monotonic()
    for _ in range(REQUESTS):
        store.bucket_lock_config()
    return time.monotonic() - began


def test_small_gets_on_a_pooled_connection_do_not_wait_for_a_delayed_ack(rgw: Any) -> None:
    store = _store(rgw)
    # without quick acknowledgements these take at least REQUESTS x 40 ms (0.8 s)
    assert _seconds_for_small_gets(store) < REQUESTS * DELAYED_ACK_S / 2


def test_a_client_whose_pools_are_not_botocores_own_is_left_as_it_is() -> None:
    class Other:
        pass

    client: Any = type("Client", (), {})()
    client._endpoint = type("Endpoint", (), {})()
    client._endpoint.http_session = type("Session", (), {})()
    client._endpoint.http_session._pool_classes_by_scheme = {"http": Other, "https": Other}
    assert quick_ack.install(client) is False
    assert client._endpoint.http_session._pool_classes_by_scheme == {"http": Other,
                                                                     "https": Other}
