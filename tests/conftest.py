"""Shared pytest fixtures and markers for the s3archive test suite."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.rgw import RGWCluster, rgw_available


# Where test trees live.  An archive records the ancestors of every path it
# picks, so a test that archives a tree twice and expects nothing new needs
# ancestors whose mtime no one changes meanwhile.  /tmp is a poor parent:
# every process creating a temporary file there (the other xdist worker, a CLI
# subprocess, the RGW cluster) changes its mtime.  A session takes one of a
# few fixed slots under /var/tmp (a lock file held while it runs) and pytest
# empties the slot's `run` directory at the start: after a slot exists, a
# session creates nothing in a directory another session's trees lie below.
STABLE_TEMP = Path("/var/tmp") / f"s3archive-tests-{os.getuid()}"
SLOTS = 32
_held_slot: list[int] = []
# SQLite puts an unnamed temporary database (the run index, verify's spool) in
# $SQLITE_TMPDIR, else $TMPDIR, else /var/tmp: an archive in one test then moved
# /var/tmp's mtime, an ancestor of every test tree, under another test's runs.
# Its own directory beside the slots (children of the CLI inherit it).
if os.access("/var/tmp", os.W_OK) and "SQLITE_TMPDIR" not in os.environ:
    STABLE_TEMP.mkdir(mode=0o700, exist_ok=True)
    (STABLE_TEMP / "sqlite-tmp").mkdir(mode=0o700, exist_ok=True)
    os.environ["SQLITE_TMPDIR"] = str(STABLE_TEMP / "sqlite-tmp")


def _session_basetemp() -> Path:
    STABLE_TEMP.mkdir(mode=0o700, exist_ok=True)
    for number in range(SLOTS):
        slot = STABLE_TEMP / f"slot-{number}"
        slot.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(slot / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held_slot.append(fd)  # released when the session's process ends
        return slot / "run"
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
