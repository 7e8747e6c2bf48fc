"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 endpoint (RGW).

Point the store at ``proxy.endpoint_url`` (path-style, plain HTTP): every
request is forwarded to the upstream endpoint unchanged (the ``Host`` header
too, so SigV4 signatures stay valid), and some requests meet a fault.  Which
ones is decided by a :class:`FaultPlan`, seeded: a request's fate is a hash
of the seed, the request (method, path without the query's version id,
range) and how often that same request was seen before, so it does not
depend on the order in which threads happen to send requests.  With ``evenly``,
exactly every ``1/rate``-th request (in arrival order) meets a fault, its
kind drawn from the seed and the request's number: the count is exact, which
requests are hit depends on the threads.

Faults (``KINDS``):

* ``error_500`` / ``slow_down``: not forwarded; answered 500 InternalError /
  503 SlowDown (S3's own error XML);
* ``reset_before``: not forwarded; the connection is reset (TCP RST) before
  any response;
* ``lost_ack``: forwarded (the store acted on it), then the connection is
  reset instead of answering: a PUT's acknowledgement lost;
* ``delay``: forwarded, answered after a pause (up to ``max_delay``);
* ``reset_mid_body``: GET with a body: the headers and part of the body are
  sent, then the connection is reset;
* ``truncate``: GET with a body: a well-formed answer with a shorter body
  (Content-Length says the shorter length; Content-Range is left alone);
* ``corrupt``: GET with a body: one to three bytes flipped, length unchanged.

The body faults apply only to GET answers with a body: a request of another
method that draws one draws again among the other kinds, a GET answered
without a body loses its answer instead (so the rate holds for every request).
``FaultPlan.spare`` keeps chosen requests fault-free (e.g. lost
acknowledgements of manifest PUTs).  ``stats`` counts requests and faults.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("error_500", "slow_down", "reset_before", "lost_ack", "delay", "reset_mid_body",
         "truncate", "corrupt")
BODY_KINDS = frozenset({"reset_mid_body", "truncate", "corrupt"})
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                         "te", "trailer", "upgrade", "expect", "content-length"})


@dataclass(frozen=True)
class Request:
    """What a plan decides on."""

    method: str
    key: str  # the object key below the bucket ("" for bucket requests)
    query: str  # the query without versionId
    range: str | None
    seen: int  # how often this same request came before (0: the first try)
    number: int = 0  # how many requests (of any kind) came before this one


@dataclass(frozen=True)
class FaultPlan:
    rate: float = 0.10
    kinds: tuple[str, ...] = KINDS
    seed: int = 0
    first_tries_only: bool = False  # fault only a request's first try (retries get through)
    evenly: bool = False  # exactly every 1/rate-th request in arrival order, not by chance
    max_delay: float = 0.3
    spare: Callable[[Request, str], bool] | None = None  # (request, kind) -> no fault

    def decide(self, request: Request) -> str | None:
        """The fault for ``request``, or None; ``spared:KIND`` when ``spare`` said no."""
        if self.rate <= 0 or (self.first_tries_only and request.seen > 0):
            return None
        if self.evenly:  # which requests is up to the threads' order; how many is not
            n = request.number
            if int((n + 1) * self.rate) == int(n * self.rate):
                return None
            draw = random.Random(hashlib.sha256(repr((self.seed, n)).encode()).digest())
        else:
            digest = hashlib.sha256(repr((self.seed, request.method, request.key,
                                          request.query, request.range,
                                          request.seen)).encode()).digest()
            draw = random.Random(digest)
            if draw.random() >= self.rate:
                return None
        kind = draw.choice(self.kinds)
        if kind in BODY_KINDS and request.method != "GET":  # nothing to break: draw again
            others = [k for k in self.kinds if k not in BODY_KINDS]
            kind = draw.choice(others) if others else "reset_before"
        if self.spare is not None and self.spare(request, kind):
            return f"spared:{kind}"
        return kind


NO_FAULTS = FaultPlan(rate=0.0)


@dataclass
class FaultStats:
    requests: Counter[str] = field(default_factory=Counter)  # by method
    faults: Counter[str] = field(default_factory=Counter)  # by kind
    spared: Counter[str] = field(default_factory=Counter)  # drawn, but spared by the plan
    faulted: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, method, key)


class FaultProxy:
    """The proxy server; use :func:`fault_proxy` to run one."""

    def __init__(self, upstream_url: str, plan: FaultPlan = NO_FAULTS):
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"the proxy speaks plain HTTP to its upstream, not {upstream_url}")
        self.upstream = (parsed.hostname, parsed.port or 80)
        self._plan = plan
        self.stats = FaultStats()
        self._seen: Counter[tuple[str, str, str, str | None]] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fault-proxy", daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        """A new plan; the counts of seen requests and the stats start again."""
        with self._lock:
            self._plan = plan
            self._seen.clear()
            self.stats = FaultStats()

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, method: str, path: str, range_header: str | None) -> tuple[str | None, str]:
        parts = urllib.parse.urlsplit(path)
        segments = parts.path.lstrip("/").split("/", 1)
        key = urllib.parse.unquote(segments[1]) if len(segments) > 1 else ""
        query = "&".join(sorted(q for q in parts.query.split("&")
                                if q and not q.startswith("versionId=")))
        identity = (method, key, query, range_header)
        with self._lock:
            seen = self._seen[identity]
            self._seen[identity] += 1
            number = sum(self.stats.requests.values())
            self.stats.requests[method] += 1
            kind = self._plan.decide(Request(method, key, query, range_header, seen, number))
            if kind is not None and kind.startswith("spared:"):
                self.stats.spared[kind.split(":", 1)[1]] += 1
                kind = None
            return kind, key

    def _count(self, kind: str, method: str, key: str) -> None:
        with self._lock:
            self.stats.faults[kind] += 1
            self.stats.faulted.append((kind, method, key))


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        upstream: http.client.HTTPConnection | None = None

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:
            self._proxy()

        do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

        # ------------------------------------------------------------ the exchange
        def _proxy(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            kind, key = proxy._decide(self.command, self.path, self.headers.get("Range"))
            if kind in ("reset_before", "error_500", "slow_down"):
                proxy._count(kind, self.command, key)
                if kind == "reset_before":
                    self._reset()
                else:
                    self._error(kind)
                return
            if kind == "delay":
                time.sleep(random.Random(self.path).uniform(0.05, proxy.plan.max_delay))
            try:
                status, reason, headers, payload = self._forward(body)
            except (OSError, http.client.HTTPException):
                self._reset()  # the upstream failed: the client sees a broken connection
                return
            if kind in BODY_KINDS and (self.command != "GET" or len(payload) < 2
                                       or status >= 300):
                kind = "lost_ack"  # no body to break: lose the answer instead
            if kind is not None:
                proxy._count(kind, self.command, key)
            if kind == "lost_ack":
                self._reset()
                return
            if kind == "truncate":
                payload = payload[:len(payload) // 2]
            elif kind == "corrupt":
                flipped = bytearray(payload)
                draw = random.Random(hashlib.sha256(payload).digest())
                for _ in range(draw.randint(1, 3)):
                    flipped[draw.randrange(len(flipped))] ^= 0xFF
                payload = bytes(flipped)
            self.send_response_only(status, reason)  # upstream's Date and Server, not ours
            for name, value in headers:
                self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if kind == "reset_mid_body":
                self.wfile.write(payload[:len(payload) // 2])
                self.wfile.flush()
                time.sleep(0.05)  # let the headers and the first half arrive
                self._reset()
                return
            self.wfile.write(payload)

        def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            headers = {name: value for name, value in self.headers.items()
                       if name.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            for attempt in (1, 2):  # a kept-alive upstream connection may have gone stale
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    self.upstream.request(self.command, self.path, body=body or None,
                                          headers=headers)
                    response = self.upstream.getresponse()
                    payload = response.read()
                except (OSError, http.client.HTTPException):
                    self.upstream.close()
                    self.upstream = None
                    if attempt == 2:
                        raise
                    continue
                kept = [(n, v) for n, v in response.getheaders()
                        if n.lower() not in _HOP_BY_HOP
                        or (self.command == "HEAD" and n.lower() == "content-length")]
                return response.status, response.reason, kept, payload
            raise AssertionError("unreachable")

        def _error(self, kind: str) -> None:
            status, code, message = ((503, "SlowDown", "Please reduce your request rate.")
                                     if kind == "slow_down"
                                     else (500, "InternalError", "We encountered an internal "
                                           "error. Please try again."))
            xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                   f"<Message>{message}</Message></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)

        def _reset(self) -> None:
            """Abort the client's connection with a TCP RST."""
            self.close_connection = True
            try:
                self.rfile.close()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
            except OSError:
                pass

        def finish(self) -> None:
            try:
                super().finish()
            except OSError:
                pass
            if self.upstream is not None:
                self.upstream.close()

    return Handler


@contextmanager
def fault_proxy(upstream_url: str, plan: FaultPlan = NO_FAULTS) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_url, plan).start()
    try:
        yield proxy
    finally:
        proxy.stop()
