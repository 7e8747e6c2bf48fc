"""Reading S3 answers: the store's clock from a Date header."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from s3archive.store.errors import server_time


@pytest.mark.parametrize("date", [
    "Sun, 29 Nov 2026 19:28:38 GMT",
    "Sun, 29 Nov 2026 19:28:38 -0000",  # RFC 5322: UTC, zone unknown
    # a proxy that adds its own Date: the header arrives twice, joined by a comma
    "Sun, 29 Nov 2026 19:28:38 GMT, Sun, 29 Nov 2026 19:28:38 GMT",
])
def test_the_store_clock_is_always_an_aware_utc_time(date: str) -> None:
    moment = server_time({"ResponseMetadata": {"HTTPHeaders": {"date": date}}})
    assert moment == datetime(2026, 11, 29, 19, 28, 38, tzinfo=timezone.utc)
    assert moment is not None and moment.utcoffset() is not None


def test_no_or_unreadable_date_is_none() -> None:
    assert server_time({}) is None
    assert server_time({"ResponseMetadata": {"HTTPHeaders": {"date": "yesterday"}}}) is None
