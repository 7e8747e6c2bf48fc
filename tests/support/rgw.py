"""A throw-away single-node Ceph RGW cluster on 127.0.0.1: a real S3 for tests.

Ceph's RADOS Gateway (Debian packages, ceph 16.2) enforces Object Lock like
AWS, so it is the endpoint that proves s3archive's retention behaviour
(``RGW.md`` in the shared design notes gives the facts behind the settings).

One cluster is one monitor, one OSD on ``memstore`` (all data in RAM) and one
radosgw, all under one directory with their own free ports, so two clusters
can run side by side (e.g. to benchmark s3archive against restic)::

    with RGWCluster() as rgw:
        s3 = rgw.client()
        s3.create_bucket(Bucket="backups", ObjectLockEnabledForBucket=True)

Lifecycle runs in test time: ``rgw lc debug interval = 10`` makes a lifecycle
"day" 10 seconds, at any hour; Object Lock retain-until dates stay real time.
radosgw's single lifecycle thread wakes every 10 s but acts on a given bucket
only about every 20 s, so a due version goes after 10-30 s. To act at once,
run ``cluster.admin("lc", "process")``: it processes every bucket with a
lifecycle configuration synchronously (about 2 s).

Daemons are stopped by PID (SIGTERM, SIGKILL after a grace period), radosgw
first, then the OSD, then the monitor. Clusters still running when the
interpreter exits are stopped by an ``atexit`` hook, and every daemon carries
a parent-death signal (``setpriv --pdeathsig``) so that even a killed test
runner leaves nothing behind. (The parent-death signal follows the *thread*
that started the cluster: start clusters from a thread that outlives them.)

Run as a script for benchmarks::

    python tests/support/rgw.py --dir DIR

prints one JSON line (endpoint_url, access_key, secret_key, region, pids) and
serves until SIGTERM or SIGINT, then stops the cluster cleanly.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["RGWCluster", "RGWError", "rgw_available"]

REQUIRED_BINARIES = (
    "monmaptool",
    "ceph-mon",
    "ceph-osd",
    "radosgw",
    "radosgw-admin",
    "ceph",
)
DEFAULT_MEMSTORE_BYTES = 4 * 1024**3
DEFAULT_ACCESS_KEY = "S3ARCHIVETESTKEY0001"
DEFAULT_SECRET_KEY = "s3archive-test-secret-key-not-for-production"
DEFAULT_REGION = "us-east-1"
STOP_GRACE_SECONDS = 15.0

# Ports: one block of consecutive free ports per cluster, below the kernel's
# ephemeral range so that outgoing connections never take them meanwhile.
_PORT_RANGE = (10000, 32000)
_PORT_BLOCK = 12  # mon, rgw, then the OSD's messengers ("ms bind port min/max")
_LOG_TAIL_LINES = 40
# What a cluster creates in its directory; a reused directory is cleared of these.
_OWN_SUBDIRS = ("run", "log", "mon", "osd")
_OWN_FILES = ("ceph.conf", "monmap")


class RGWError(RuntimeError):
    """The cluster could not be started or a command against it failed."""


def rgw_available() -> str | None:
    """Return why an RGW cluster cannot run here, or None when it can."""
    missing = [name for name in REQUIRED_BINARIES if shutil.which(name) is None]
    if missing:
        return (
            f"Ceph RGW not installed (missing {', '.join(missing)}; "
            "apt-get install ceph-mon ceph-osd radosgw ceph-common)"
        )
    try:
        import boto3  # noqa: F401
    except ImportError:
        return "boto3 is not installed"
    return None


# --------------------------------------------------------------------------
# Ports


_reserved_ports: set[int] = set()
_reserved_lock = threading.Lock()


def _port_is_free(port: int) -> bool:
    """True when nothing listens on (or holds) 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reserve_port_block(size: int = _PORT_BLOCK) -> list[int]:
    """Pick ``size`` consecutive free ports at a random place in the range.

    Ports handed out in this process are remembered, so concurrent clusters
    in one process never share them; between processes the random base makes
    a clash improbable.
    """
    low, high = _PORT_RANGE
    with _reserved_lock:
        for _ in range(500):
            base = random.randrange(low, high - size)
            block = list(range(base, base + size))
            if _reserved_ports.intersection(block):
                continue
            if all(_port_is_free(port) for port in block):
                _reserved_ports.update(block)
                return block
    raise RGWError(f"no block of {size} free ports in {low}-{high}")


def _release_ports(ports: Sequence[int]) -> None:
    with _reserved_lock:
        _reserved_ports.difference_update(ports)


# --------------------------------------------------------------------------
# Daemons


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last lines of a log file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not readable)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _clean_env() -> dict[str, str]:
    """The environment for Ceph commands: no stray CEPH_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CEPH_")}


def _pdeathsig_prefix() -> list[str]:
    """Wrap a command so that it is killed if our process dies (Linux)."""
    if sys.platform.startswith("linux") and shutil.which("setpriv"):
        return ["setpriv", "--pdeathsig", "KILL", "--"]
    return []


@dataclass
class _Daemon:
    """One foreground Ceph daemon process and its log files."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    output_path: Path
    output: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def describe_failure(self) -> str:
        """Exit status plus the tails of the daemon's log and stdout/stderr."""
        return (
            f"{self.name} (pid {self.pid}) exited with status "
            f"{self.process.returncode}\n"
            f"--- tail of {self.log_path} ---\n{_tail(self.log_path)}\n"
            f"--- tail of {self.output_path} ---\n{_tail(self.output_path)}"
        )

    def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps."""
        try:
            if self.alive():
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=grace)
        finally:
            self.output.close()

    def rss_bytes(self) -> int:
        """Resident set size from /proc, 0 when the process is gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


# --------------------------------------------------------------------------
# The cluster


_live_clusters: set[RGWCluster] = set()
_live_lock = threading.Lock()


def _stop_live_clusters() -> None:
    """atexit hook: stop every cluster this interpreter left running."""
    with _live_lock:
        clusters = list(_live_clusters)
    for cluster in clusters:
        cluster.stop()


atexit.register(_stop_live_clusters)


class RGWCluster:
    """A single-node Ceph cluster (mon, memstore OSD, radosgw) on 127.0.0.1.

    ``directory`` holds config, monitor store, logs and sockets; by default a
    fresh temporary directory that is removed on ``stop()`` (a given directory
    is kept, logs included). ``memstore_bytes`` is the OSD's capacity, held in
    RAM (memstore needs about twice the live data). Use as a context manager
    or call ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        memstore_bytes: int = DEFAULT_MEMSTORE_BYTES,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        region: str = DEFAULT_REGION,
        start_timeout: float = 60.0,
        stop_grace: float = STOP_GRACE_SECONDS,
        storage_classes: Sequence[str] = (),
    ) -> None:
        self._given_directory = directory is not None
        self._directory_arg = directory
        self.directory: Path | None = None
        self.memstore_bytes = memstore_bytes
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.storage_classes = tuple(storage_classes)
        self.fsid = str(uuid.uuid4())
        self._ports: list[int] = []
        self._daemons: list[_Daemon] = []
        self._started = False
        self.startup_seconds: float | None = None

    # -- public API ---------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint, e.g. ``http://127.0.0.1:12345``."""
        return f"http://127.0.0.1:{self.rgw_port}"

    @property
    def mon_port(self) -> int:
        return self._ports[0]

    @property
    def rgw_port(self) -> int:
        return self._ports[1]

    @property
    def conf_path(self) -> Path:
        return self._dir / "ceph.conf"

    @property
    def pids(self) -> list[int]:
        """PIDs of the running daemons (mon, osd, radosgw)."""
        return [d.pid for d in self._daemons if d.alive()]

    def start(self) -> RGWCluster:
        """Bring the cluster up and create the S3 user; stops it on failure."""
        if self._started:
            raise RGWError("cluster already started")
        self._started = True
        with _live_lock:
            _live_clusters.add(self)
        began = time.monotonic()
        try:
            self._prepare_directory()
            self._ports = _reserve_port_block()
            self._write_config()
            self._start_mon()
            self._start_osd()
            self._start_rgw()
            self._add_storage_classes()
            self._create_user()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop radosgw, then the OSD, then the monitor; idempotent."""
        for daemon in reversed(self._daemons):
            daemon.stop(self.stop_grace)
        self._daemons.clear()
        if self._ports:
            _release_ports(self._ports)
        with _live_lock:
            _live_clusters.discard(self)
        if self.directory is not None and not self._given_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RGWCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this cluster (path-style, HTTP).

        Keyword arguments override the ``botocore.config.Config`` settings.
        """
        import boto3
        from botocore.config import Config

        settings: dict[str, Any] = {
            "s3": {"addressing_style": "path"},
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "retries": {"max_attempts": 3, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 60,
        }
        settings.update(config)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**settings),
        )

    def admin(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``radosgw-admin ARGS`` against this cluster; return stdout."""
        return self._run(["radosgw-admin", "-n", "client.admin", *args], timeout)

    def ceph(self, *args: str, timeout: float = 60.0) -> str:
        """Run the ``ceph`` CLI against this cluster; return stdout."""
        return self._run(["ceph", "--connect-timeout", "20", *args], timeout)

    def rss_bytes(self) -> int:
        """Sum of the daemons' resident set sizes, in bytes."""
        return sum(d.rss_bytes() for d in self._daemons)

    def check_alive(self) -> None:
        """Raise RGWError (with the log tail) if a daemon has exited."""
        for daemon in self._daemons:
            if not daemon.alive():
                raise RGWError(daemon.describe_failure())

    def connection_info(self) -> dict[str, Any]:
        """What a client needs, as printed by the script entry point."""
        return {
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            "pids": self.pids,
        }

    # -- bring-up steps -----------------------------------------------------

    @property
    def _dir(self) -> Path:
        if self.directory is None:
            raise RGWError("cluster directory not prepared")
        return self.directory

    def _prepare_directory(self) -> None:
        if self._directory_arg is None:
            self.directory = Path(tempfile.mkdtemp(prefix="s3archive-rgw-"))
        else:
            self.directory = Path(self._directory_arg).resolve()
            self.directory.mkdir(parents=True, exist_ok=True)
        self._clear_previous_run()
        for sub in _OWN_SUBDIRS:
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        (self.directory / "mon" / "a").mkdir()
        (self.directory / "osd" / "0").mkdir()

    def _clear_previous_run(self) -> None:
        """Remove what an earlier cluster left in a reused directory (only ours)."""
        for sub in _OWN_SUBDIRS:
            shutil.rmtree(self._dir / sub, ignore_errors=True)
        for name in _OWN_FILES:
            (self._dir / name).unlink(missing_ok=True)

    def _write_config(self) -> None:
        self.conf_path.write_text(self._config_text())

    def _config_text(self) -> str:
        """ceph.conf: no cephx, fast paxos, single node, test-time lifecycle."""
        d = self._dir
        osd_ports = self._ports[2:]
        return f"""\
[global]
fsid = {self.fsid}
mon host = [v2:127.0.0.1:{self.mon_port}]
run dir = {d}/run
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
mon data = {d}/mon/$id
osd data = {d}/osd/$id
# no cephx on loopback; radosgw then needs "ms mon client mode = crc secure"
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms bind msgr1 = false
# fast paxos: each pool creation waits one proposal (start-up ~12 s -> ~1 s)
paxos propose interval = 0.05
paxos min wait = 0.01
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
# a lifecycle "day" is 10 s; one LC thread: several contend for the shard
# locks, and a loser sleeps 5 s uninterruptibly (slow, unpredictable stop)
rgw lc debug interval = 10
rgw lc max worker = 1
rgw gc obj min wait = 10
rgw gc processor period = 10

[osd]
# data in RAM; a misspelt objectstore silently falls back to bluestore
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}
ms bind port min = {osd_ports[0]}
ms bind port max = {osd_ports[-1]}

[client.admin]
# CLI runs (ceph, radosgw-admin) may overlap: no admin socket for them
admin socket =

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:{self.rgw_port}
"""

    def _start_mon(self) -> None:
        monmap = self._dir / "monmap"
        self._run(
            [
                "monmaptool", "--create", "--fsid", self.fsid,
                "--addv", "a", f"[v2:127.0.0.1:{self.mon_port}]",
                "--set-min-mon-release", "pacific", "--enable-all-features",
                str(monmap),
            ],
            30,
        )  # fmt: skip
        self._run(["ceph-mon", "--mkfs", "-i", "a", "--monmap", str(monmap)], 30)
        self._spawn("mon.a", ["ceph-mon", "-i", "a", "-f"])

    def _start_osd(self) -> None:
        osd_uuid = str(uuid.uuid4())
        osd_id = self.ceph("osd", "new", osd_uuid).strip()
        if osd_id != "0":
            raise RGWError(f"expected osd id 0, monitor gave {osd_id!r}")
        self._run(["ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid], 60)
        self._spawn("osd.0", ["ceph-osd", "-i", "0", "-f"])

    def _start_rgw(self) -> None:
        """Start radosgw; it creates its pools once the OSD is up."""
        self._spawn("client.rgw.a", ["radosgw", "-n", "client.rgw.a", "-f"])
        self._wait_for(self._endpoint_answers, "S3 endpoint to answer")

    def _add_storage_classes(self) -> None:
        """Storage classes besides STANDARD (e.g. GLACIER_IR), each with a pool
        of its own in the default placement, so PUTs and lifecycle
        transitions to them work and listings and HEAD report them.  radosgw
        creates the zone on its first start and reads it only at start-up:
        it is restarted once (about 0.4 s)."""
        if not self.storage_classes:
            return
        for name in self.storage_classes:
            self.admin("zonegroup", "placement", "add", "--rgw-zonegroup", "default",
                       "--placement-id", "default-placement", "--storage-class", name)
            self.admin("zone", "placement", "add", "--rgw-zone", "default",
                       "--placement-id", "default-placement", "--storage-class", name,
                       "--data-pool", f"default.rgw.{name.lower()}.data")
        radosgw = self._daemons.pop()
        radosgw.stop(self.stop_grace)
        self._start_rgw()

    def _create_user(self) -> None:
        self.admin(
            "user", "create", "--uid", "s3archive-test",
            "--display-name", "s3archive test user",
            "--access-key", self.access_key, "--secret-key", self.secret_key,
        )  # fmt: skip

    # -- helpers ------------------------------------------------------------

    def _spawn(self, name: str, command: list[str]) -> None:
        """Start a foreground daemon in its own session; remember its PID."""
        output_path = self._dir / "log" / f"{name}.out"
        output = output_path.open("ab")
        try:
            process = subprocess.Popen(
                [*_pdeathsig_prefix(), *command, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
                start_new_session=True,
            )
        except BaseException:
            output.close()
            raise
        log_path = self._dir / "log" / f"{name}.log"
        self._daemons.append(_Daemon(name, process, log_path, output_path, output))

    def _run(self, command: list[str], timeout: float) -> str:
        """Run a Ceph command with our config; raise RGWError on failure."""
        full = [*command, "-c", str(self.conf_path)]
        try:
            done = subprocess.run(
                full,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            self.check_alive()
            raise RGWError(f"{' '.join(command)} timed out after {timeout}s") from exc
        if done.returncode != 0:
            self.check_alive()
            raise RGWError(
                f"{' '.join(command)} failed with status {done.returncode}:\n"
                f"{done.stderr.strip()}\n{done.stdout.strip()}"
            )
        return done.stdout

    def _wait_for(self, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready()`` until true; fail fast if a daemon dies."""
        deadline = time.monotonic() + self.start_timeout
        while not ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RGWError(
                    f"timed out after {self.start_timeout}s waiting for {what}\n"
                    + "\n".join(
                        f"--- tail of {d.log_path} ---\n{_tail(d.log_path, 15)}"
                        for d in self._daemons
                    )
                )
            time.sleep(0.05)

    def _endpoint_answers(self) -> bool:
        """True once radosgw answers HTTP at all (any status code)."""
        try:
            with urllib.request.urlopen(self.endpoint_url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False


# --------------------------------------------------------------------------
# Script entry point (benchmarks)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run a throw-away Ceph RGW cluster until SIGTERM/SIGINT."
    )
    parser.add_argument("--dir", type=Path, default=None, help="cluster directory")
    parser.add_argument(
        "--memstore-bytes", type=int, default=DEFAULT_MEMSTORE_BYTES,
        help="OSD capacity, held in RAM (default: 4 GiB)",
    )  # fmt: skip
    parser.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Start a cluster, print its JSON connection line, serve until signalled."""
    args = _parse_args(argv)
    if reason := rgw_available():
        print(reason, file=sys.stderr)
        return 2
    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    cluster = RGWCluster(
        args.dir,
        memstore_bytes=args.memstore_bytes,
        access_key=args.access_key,
        secret_key=args.secret_key,
    )
    try:
        cluster.start()
        print(json.dumps(cluster.connection_info()), flush=True)
        while not stop_requested.wait(1.0):
            cluster.check_alive()
    except RGWError as exc:
        print(f"rgw: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
