"""Fixtures of the archive tests."""

from __future__ import annotations

import pytest

import s3archive.archive.file_stage as file_stage
from s3archive.config import ContentSettings


@pytest.fixture(params=["workers", "threads"])
def read_by(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test twice: files read by content worker processes (started at the
    first batch, however small the tree), then by threads (``[content] workers = 0``)."""
    if request.param == "workers":
        monkeypatch.setattr(file_stage, "WORKERS_AFTER_FILES", 0)
    else:
        monkeypatch.setattr(ContentSettings, "content_workers", lambda self: 0)
    return request.param
