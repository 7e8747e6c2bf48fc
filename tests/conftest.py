"""Shared pytest fixtures and markers for the s3archive test suite."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.rgw import RGWCluster, rgw_available


# Where test trees live.  An archive records the ancestors of every path it
# picks, so a test that archives a tree twice and expects nothing new needs
# ancestors whose mtime no one else changes meanwhile.  /tmp is a poor parent:
# every process creating a temporary file there (the other xdist worker, a CLI
# subprocess, the RGW cluster) changes its mtime.  One directory per session
# under /var/tmp is changed only when a session starts.
STABLE_TEMP = Path("/var/tmp") / f"s3archive-tests-{os.getuid()}"
KEEP_SESSIONS_SECONDS = 2 * 86400


def _session_basetemp() -> Path:
    STABLE_TEMP.mkdir(mode=0o700, exist_ok=True)
    cutoff = time.time() - KEEP_SESSIONS_SECONDS
    for old in STABLE_TEMP.glob("run-*"):
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:
            pass
    return Path(tempfile.mkdtemp(prefix="run-", dir=STABLE_TEMP))


def pytest_configure(config: pytest.Config) -> None:
    # the xdist controller (or a plain session) chooses; workers get <basetemp>/gwN from it
    if config.option.basetemp is None and not hasattr(config, "workerinput") \
            and os.access("/var/tmp", os.W_OK):
        config.option.basetemp = str(_session_basetemp())
    config.addinivalue_line(
        "markers", "slow: takes tens of seconds (e.g. RGW lifecycle in test time)"
    )
    config.addinivalue_line(
        "markers", "scale: 100,000 files or more; left out of the suite (pyproject addopts), "
                   "run from bench/ with `python -m pytest -m scale`")


@pytest.fixture(scope="session")
def rgw() -> Iterator[RGWCluster]:
    """One throw-away Ceph RGW cluster for the whole session (a real S3),
    which also knows the storage class GLACIER_IR (``--cold-after``).

    Skips with the reason when the Ceph binaries are not installed.
    """
    reason = rgw_available()
    if reason is not None:
        pytest.skip(reason)
    with RGWCluster(storage_classes=("GLACIER_IR",)) as cluster:
        yield cluster
