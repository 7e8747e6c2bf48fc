"""The demo's embedded S3 endpoint (moto over HTTP on 127.0.0.1), and its
objects kept beside ``demo --keep DIR`` so ``demo --serve DIR`` can bring the
same endpoint back for exploring.

moto keeps everything in memory; its S3 objects are picklable (moto's own
``FakeKey.__getstate__``), which is how the demo bucket is saved, version ids
and locks included: the kept manifests pin those versions.  A pickle runs
code when loaded, so ``--serve`` loads only a file this user owns that
nobody else may write, in a directory nobody else may write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from s3archive.errors import UsageError

STATE_NAME = "endpoint-s3.pickle"
STATE_FORMAT = 1


@contextlib.contextmanager
def moto_endpoint(port: int = 0) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    if port:
        _check_port_free(port)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        host, bound = server.get_host_and_port()
        yield f"http://{host}:{bound}"
    finally:
        server.stop()


def _s3_backend() -> Any:
    """moto's S3 state for the default account: what its server serves."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def save_bucket(work: Path, bucket: str) -> Path:
    """Write the endpoint's bucket (every version, its lock) into ``work``."""
    path = work / STATE_NAME
    data = pickle.dumps({"format": STATE_FORMAT, "buckets": {bucket: _s3_backend().buckets[bucket]}})
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return path


def kept_config(work: Path) -> Path:
    return work / "root" / "etc" / "s3archive" / "config.toml"


@contextlib.contextmanager
def serve_kept(work: Path) -> Iterator[str]:
    """The endpoint of a ``demo --keep`` directory again, on the port its
    config names, with the bucket as the demo left it."""
    import tomllib

    work = work.absolute()
    state, config = work / STATE_NAME, kept_config(work)
    if not state.is_file() or not config.is_file():
        raise UsageError(f"{work}: not a directory kept by `s3archive demo --keep` "
                         f"(no {STATE_NAME} or root/etc/s3archive/config.toml)")
    _check_private(work)
    _check_private(state)
    try:
        endpoint = tomllib.loads(config.read_text())["s3"]["endpoint_url"]
        port = urlsplit(endpoint).port
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{config}: cannot read s3.endpoint_url ({err})") from None
    if not port:
        raise UsageError(f"{config}: s3.endpoint_url {endpoint!r} names no port")
    with open(state, "rb") as handle:
        try:
            saved = pickle.load(handle)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
            raise UsageError(f"{state}: cannot be read ({err}); was it written by another "
                             "moto version?") from None
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise UsageError(f"{state}: not a saved demo endpoint (format {STATE_FORMAT})")
    with moto_endpoint(port) as url:
        _s3_backend().buckets.update(saved["buckets"])
        yield url


def _check_private(path: Path) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise UsageError(f"{path}: must be owned by you and writable by nobody else "
                         "(it is loaded as code: a pickle)")


def _check_port_free(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            raise UsageError(f"127.0.0.1:{port} (the kept config's endpoint) is in use: "
                             f"{err.strerror}; stop what listens there, or is a "
                             "`demo --serve` already running?") from None
