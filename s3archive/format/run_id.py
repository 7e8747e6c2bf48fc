"""Run ids: the UTC second a run started, and a random suffix (docs/FORMAT.md 7.1).

``20261122T003410Z-k3f9a2``: ids sort by start time, to the second; the
suffix (6 characters of Crockford's lowercase base32, 30 random bits) makes
two writers that share a host name and a start second write different keys
without coordinating: S3 offers no create-only PUT that every store keeps
(Ceph RGW 16 accepts ``If-None-Match: *`` on a versioned bucket and writes a
second version).  Earlier writers used the bare second, with ``-1``, ``-2``…
on a clash: readers accept those too (``repo.catalog.run_id_time`` reads the
start second of either).
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

TIME_FORMAT = "%Y%m%dT%H%M%SZ"
SUFFIX_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, in sort order
SUFFIX_LENGTH = 6
_SUFFIX_SPACE = len(SUFFIX_ALPHABET) ** SUFFIX_LENGTH
STEP_BACK = timedelta(minutes=15)  # the clock check refuses larger offsets anyway
RUN_ID = re.compile(r"(?P<time>\d{8}T\d{6}Z)(?:-(?P<suffix>[0-9a-hjkmnp-tv-z]{6})|-(?P<serial>\d+))?")


def new_run_id(started: datetime, taken: Iterable[str],
               randbelow: Callable[[int], int] = secrets.randbelow) -> str:
    """A fresh id for a run started at ``started``.

    ``taken`` are this host's listed run ids: the suffix is drawn above every
    suffix already used in the same second, so a host's own runs keep their
    order even within one second.  A clock stepped back a little (an id of
    this host up to ``STEP_BACK`` ahead of ``started``) must not make the new
    run sort before the last one: the id then takes that later second.  Ids
    further ahead are not followed (a planted id must not drag the clock).
    """
    taken = set(taken)
    moment = started.astimezone(timezone.utc).replace(microsecond=0)
    ahead = [t for t in (_time_of(other) for other in taken)
             if t is not None and moment < t <= moment + STEP_BACK]
    second = max([moment, *ahead]).strftime(TIME_FORMAT)
    floor = 0
    for other in taken:
        match = RUN_ID.fullmatch(other)
        if match and match["time"] == second and match["suffix"]:
            floor = max(floor, _number(match["suffix"]) + 1)
    while True:
        span = _SUFFIX_SPACE - floor
        value = floor + randbelow(span) if span > 0 else randbelow(_SUFFIX_SPACE)
        candidate = f"{second}-{_suffix(value)}"
        if candidate not in taken:
            return candidate


def _time_of(run_id: str) -> datetime | None:
    match = RUN_ID.fullmatch(run_id)
    if not match:
        return None
    try:
        return datetime.strptime(match["time"], TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _number(suffix: str) -> int:
    value = 0
    for char in suffix:
        value = value * len(SUFFIX_ALPHABET) + SUFFIX_ALPHABET.index(char)
    return value


def _suffix(value: int) -> str:
    chars = []
    for _ in range(SUFFIX_LENGTH):
        value, digit = divmod(value, len(SUFFIX_ALPHABET))
        chars.append(SUFFIX_ALPHABET[digit])
    return "".join(reversed(chars))
