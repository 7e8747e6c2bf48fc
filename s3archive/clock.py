"""Time in one place, in UTC, and injectable for tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

from s3archive.errors import S3ArchiveError

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def isoformat(moment: datetime) -> str:
    """``2026-11-21T23:58:00.123456Z``: UTC, explicit, sortable."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without time zone: {text!r}")
    return moment.astimezone(timezone.utc)


# S3 refuses requests signed more than 15 minutes off its own clock
# (RequestTimeTooSkewed); a run refuses the same before it uploads anything,
# also against stores that do not check.
MAX_CLOCK_SKEW = timedelta(minutes=15)


def describe_skew(host_now: datetime, store_now: datetime) -> str:
    """``this host's clock is 400 days behind the store's (host …, store …)``."""
    skew = host_now - store_now
    ahead = skew > timedelta(0)
    size = abs(skew)
    if size >= timedelta(days=2):  # (the Date header has whole seconds: round)
        amount = f"{round(size / timedelta(days=1))} days"
    elif size >= timedelta(hours=2):
        amount = f"{round(size / timedelta(hours=1))} hours"
    elif size >= timedelta(minutes=2):
        amount = f"{round(size / timedelta(minutes=1))} minutes"
    else:
        amount = f"{size.total_seconds():.0f} seconds"
    return (f"this host's clock is {amount} {'ahead of' if ahead else 'behind'} the store's "
            f"(host {isoformat(host_now)[:19]}Z, store {isoformat(store_now)[:19]}Z): "
            "set the clock (NTP, e.g. systemd-timesyncd) and run again")


class ClockSkewed(S3ArchiveError):
    """This host's clock and the store's disagree by more than ``MAX_CLOCK_SKEW``."""


def check_clock(host_now: datetime, store_now: datetime | None) -> None:
    """Refuse to work with a clock the store (or S3's request signing) would not accept."""
    if store_now is not None and abs(host_now - store_now) > MAX_CLOCK_SKEW:
        raise ClockSkewed(describe_skew(host_now, store_now))
