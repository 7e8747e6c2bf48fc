"""Shared pytest fixtures and markers for the s3archive test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.rgw import RGWCluster, rgw_available


def pytest_configure(config: pytest.Config) -> None:
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
