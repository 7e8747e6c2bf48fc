"""Storage classes: cold data, hot metadata (issue 10 item 5, FORMAT2.md 2).

Format 2 keeps data packs under ``data/`` and everything a reader needs to
find its way (metadata packs ``meta/``, run root objects ``runs/``, the
dedup-secret copies ``keys/``) apart, so a lifecycle rule may move data
packs to S3 Glacier Instant Retrieval while ``runs``, ``ls``, ``show``,
``diff``, ``verify`` (without ``--read-data``) and a cache rebuild never touch
a cold object.  Format-1 packs (``packs/``) stay STANDARD as well: format-1
readers were written for a bucket whose every object is hot.

GLACIER_IR needs no restore request: GET and ranged GET work as in STANDARD
(at a per-GB retrieval fee), so nothing in IAM changes.  GLACIER (Flexible
Retrieval) and DEEP_ARCHIVE are *archival*: every GET fails with
InvalidObjectState until a RestoreObject request has completed -- s3archive
never asks for one, so an object there is not readable by any command.

This module is the one place that knows which key prefixes are hot, which
classes are archival, and what the classes cost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

STANDARD = "STANDARD"
GLACIER_IR = "GLACIER_IR"
STORAGE_CLASSES = ("STANDARD", "INTELLIGENT_TIERING", "STANDARD_IA", "ONEZONE_IA",
                   "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE", "REDUCED_REDUNDANCY")
# Readable only after a RestoreObject request has completed.
ARCHIVAL_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})

# Key prefixes below the repository prefix (FORMAT2.md 2).
DATA_PREFIX = "data/"
# What readers find their way by: never cold.  (packs/: format-1 packs.)
HOT_PREFIXES = ("meta/", "runs/", "keys/", "packs/")
# What ``verify`` names when it is not STANDARD: the metadata every read
# command needs (format-1 packs in GLACIER_IR stay readable, just not by plan).
PROMISED_HOT = ("meta/", "runs/", "keys/")

# ---------------------------------------------------------------- prices
# List prices of Amazon S3 in us-east-1 (USD), from
# https://aws.amazon.com/s3/pricing/ as of 2025 (GLACIER_IR's have not
# changed since the class was launched in November 2021).  Storage per
# GB-month; the defaults of [cost], which an operator overrides there.
PRICES_SOURCE = "https://aws.amazon.com/s3/pricing/ (us-east-1, list prices as of 2025)"
STANDARD_GB_MONTH = 0.023
DEFAULT_CLASS_PRICES = {"STANDARD_IA": 0.0125, "ONEZONE_IA": 0.01, "GLACIER_IR": 0.004,
                        "GLACIER": 0.0036, "DEEP_ARCHIVE": 0.00099}
# Retrieval fee per GB read (GLACIER: standard retrieval; DEEP_ARCHIVE:
# standard retrieval), on top of the GET requests.
RETRIEVAL_GB = {"STANDARD_IA": 0.01, "ONEZONE_IA": 0.01, "GLACIER_IR": 0.03,
                "GLACIER": 0.01, "DEEP_ARCHIVE": 0.02}
# Deleting (or transitioning) an object earlier bills the remaining days.
MINIMUM_DAYS = {"STANDARD_IA": 30, "ONEZONE_IA": 30, "GLACIER_IR": 90, "GLACIER": 90,
                "DEEP_ARCHIVE": 180}
# GET requests per 1000 in GLACIER_IR (STANDARD: 0.0004); a lifecycle
# transition into it is billed as one PUT-class request per object.
GLACIER_IR_GET_PER_1000 = 0.01
GLACIER_IR_TRANSITION_PER_1000 = 0.02


def effective(storage_class: str | None) -> str:
    """S3 leaves the class out for STANDARD (HEAD) and some stores always do."""
    return storage_class or STANDARD


def area(key: str) -> str:
    """Which part of the repository a key (below the repository prefix) is in."""
    if key.startswith(DATA_PREFIX):
        return "data"
    for prefix, name in (("meta/", "metadata"), ("runs/", "manifests"), ("keys/", "keys"),
                         ("packs/", "packs"), ("index/", "index")):
        if key.startswith(prefix):
            return name
    return "other"


def broken_promise(key: str, storage_class: str | None) -> str | None:
    """Why an object's class breaks a promise of this module, or None.

    Hot metadata (``meta/``, ``runs/``, ``keys/``) must be STANDARD; nothing
    a run references may sit in an archival class (no command can read it)."""
    cls = effective(storage_class)
    if cls in ARCHIVAL_CLASSES:
        return (f"is in {cls}: no command can read it before a restore request "
                "(RestoreObject) has completed")
    if cls != STANDARD and key.startswith(PROMISED_HOT):
        return (f"is in {cls}, not STANDARD: metadata is kept hot (a lifecycle rule other "
                "than create-resources' moves it)")
    return None


@dataclass
class ClassSurvey:
    """Storage classes of the objects one run references (``verify``)."""

    packs: Counter[str] = field(default_factory=Counter)  # class -> packs
    warnings: list[tuple[str, str, str]] = field(default_factory=list)  # key, version, why

    def add(self, key: str, version_id: str, storage_class: str | None,
            is_pack: bool) -> None:
        if is_pack:
            self.packs[effective(storage_class)] += 1
        why = broken_promise(key, storage_class)
        if why is not None:
            self.warnings.append((key, version_id, why))

    def packs_json(self) -> dict[str, int]:
        return dict(sorted(self.packs.items()))

    def warnings_json(self) -> list[dict[str, str]]:
        return [{"key": key, "version_id": version_id, "message": f"{key}@{version_id} {why}"}
                for key, version_id, why in self.warnings]

    def messages(self) -> list[str]:
        return [f"{key}@{version_id} {why}" for key, version_id, why in self.warnings]

    def describe_packs(self) -> str:
        """``3 GLACIER_IR, 2 STANDARD`` (empty when every pack is STANDARD)."""
        if set(self.packs) <= {STANDARD}:
            return ""
        return ", ".join(f"{n} {cls}" for cls, n in sorted(self.packs.items()))


# ---------------------------------------------------------------- lifecycle rules


def rule_prefix(rule: dict[str, Any]) -> str:
    """The key prefix a lifecycle rule (S3 API shape) applies to.

    Tags and size limits narrow a rule further; s3archive tags nothing, but a
    size filter still matches, so only the prefix is taken (the cautious
    reading: such a rule may move what its prefix covers)."""
    flt = rule.get("Filter")
    if flt is None:
        return str(rule.get("Prefix") or "")
    if "And" in flt:
        return str(flt["And"].get("Prefix") or "")
    return str(flt.get("Prefix") or "")


def transition_classes(rule: dict[str, Any]) -> set[str]:
    """The classes an enabled rule moves current or non-current versions to."""
    if rule.get("Status") != "Enabled":
        return set()
    moves = [*rule.get("Transitions", []), *rule.get("NoncurrentVersionTransitions", [])]
    if "Transition" in rule:  # the single-transition shape of the older API
        moves.append(rule["Transition"])
    return {str(m.get("StorageClass")) for m in moves if m.get("StorageClass")}


def covers(rule_prefix_: str, area_prefix: str) -> bool:
    """Whether a rule on ``rule_prefix_`` can match a key under ``area_prefix``."""
    return area_prefix.startswith(rule_prefix_) or rule_prefix_.startswith(area_prefix)


def misplaced_transitions(rules: Iterable[dict[str, Any]], prefix: str = "") -> list[str]:
    """Lifecycle transitions that break cold data / hot metadata, one line each:
    a rule that may move ``meta/``, ``runs/``, ``keys/`` or ``packs/`` out of
    STANDARD, or data packs into an archival class (unreadable without a
    restore request)."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    found = []
    for rule in rules:
        classes = transition_classes(rule)
        if not classes:
            continue
        name = rule.get("ID") or rule.get("Id") or "(no ID)"
        where = rule_prefix(rule)
        hot = [p for p in HOT_PREFIXES if covers(where, base + p)]
        if hot:
            found.append(f"rule {name} (prefix {where!r}) moves {', '.join(sorted(classes))} "
                         f"objects under {', '.join(base + p for p in hot)}: metadata and "
                         "format-1 packs must stay STANDARD")
        archival = sorted(classes & ARCHIVAL_CLASSES)
        if archival and covers(where, base + DATA_PREFIX):
            found.append(f"rule {name} (prefix {where!r}) moves data packs to "
                         f"{', '.join(archival)}: restore cannot read them without a restore "
                         "request; use --cold-after (GLACIER_IR)")
    return found
