"""Retention: the tier of a run, its retain-until, and the lease of reused packs.

Invariant (docs/FORMAT.md): every pack version a manifest references is
locked at least until that manifest's ``retain_until``.  New packs are locked
to ``retain_until + slack``; a reused pack whose known lock ends earlier is
extended to ``retain_until + slack`` — or, when the run needs less than
``repack_below`` of its bytes, the needed chunks are written into a new pack
and the old one is left to lapse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from s3archive.clock import isoformat
from s3archive.config import RetentionSettings
from s3archive.errors import ConfigError

TIER_ORDER = ("daily", "weekly", "monthly", "yearly")
FIXED_TIER = "until"

# A cached pack whose lock ends within this margin of the run's start is not
# reused: once its lock lapses, lifecycle may remove it before the run gets to
# extend it.  (A locked version cannot be removed, so inside the margin reuse
# is safe; should a pack vanish anyway, the run notices when it extends the
# lock and writes the chunks again.)
REUSE_MARGIN = timedelta(hours=1)


@dataclass(frozen=True)
class RunRetention:
    tier: str
    retain_until: datetime  # the manifest's lock, and the floor for every pack it needs
    pack_until: datetime  # what new and extended packs are locked to (with slack)
    mode: str


def choose_tier(started: datetime, earlier_starts: list[datetime]) -> str:
    """Promote the first run of an ISO week, month or year."""
    earlier = [s for s in earlier_starts if s < started]
    if not any(s.year == started.year for s in earlier):
        return "yearly"
    if not any((s.year, s.month) == (started.year, started.month) for s in earlier):
        return "monthly"
    if not any(s.isocalendar()[:2] == started.isocalendar()[:2] for s in earlier):
        return "weekly"
    return "daily"


def plan_run_retention(settings: RetentionSettings, started: datetime,
                       earlier_starts: list[datetime]) -> RunRetention:
    cap = started + timedelta(days=settings.max_days)
    if settings.until is not None:
        until = settings.until
        tier = FIXED_TIER
    else:
        tier = choose_tier(started, earlier_starts)
        until = started + timedelta(days=settings.days_for(tier))
    until = until.replace(microsecond=0) + timedelta(seconds=1)  # S3 keeps whole seconds
    pack_until = min(until + timedelta(days=settings.slack_days), max(cap, until))
    return RunRetention(tier=tier, retain_until=until, pack_until=pack_until, mode=settings.mode)


class RetainUntilPast(ConfigError):
    """The run's retain-until is not in the future by the store's clock."""


def check_retain_until(retention: RunRetention, store_now: datetime) -> None:
    """A lock must end in the future by the store's clock, or S3 refuses the PUT
    (InvalidArgument); say so before anything is uploaded."""
    if retention.retain_until <= store_now:
        raise RetainUntilPast(
            f"retain-until {isoformat(retention.retain_until)} is in the past (the store's "
            f"time is {isoformat(store_now)}): check retention.until in the configuration "
            "and this host's clock")


def stronger_mode(a: str | None, b: str | None) -> str:
    """COMPLIANCE can never be turned back into GOVERNANCE."""
    return "COMPLIANCE" if "COMPLIANCE" in (a, b) else "GOVERNANCE"


@dataclass(frozen=True)
class PackDecision:
    key: str
    action: str  # "keep" | "extend" | "rewrite"
    used_bytes: int
    size: int


def decide_pack(key: str, known_until: datetime, size: int, used_bytes: int,
                needed_until: datetime, repack_below: float) -> PackDecision:
    if known_until >= needed_until:
        return PackDecision(key, "keep", used_bytes, size)
    if size > 0 and used_bytes / size < repack_below:
        return PackDecision(key, "rewrite", used_bytes, size)
    return PackDecision(key, "extend", used_bytes, size)
