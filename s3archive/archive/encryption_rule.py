"""The mixing rule (docs/FORMAT2.md 11): a host's runs are all encrypted or
all plain, except for one explicit, recorded switch from plain to encrypted.

A pure function of the host's latest run (its header's ``encryption``), the
configuration's ``[encryption]`` and ``archive --start-encryption``; the
writer asks it before a run and raises what it raises; ``verify`` reads a
host's runs back with :func:`mixing_problems`.  The latest run's
header comes from the bucket: only whether ``encryption`` is null decides;
its recipients and dedup id serve only the note that they changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from s3archive.config import EncryptionConfig
from s3archive.errors import EXIT_USAGE, S3ArchiveError


class EncryptionMixError(S3ArchiveError):
    """This run would mix plain and encrypted runs of one host silently."""

    exit_code = EXIT_USAGE


class EncryptionMode(Enum):
    PLAIN = "plain"
    ENCRYPTED = "encrypted"
    STARTED = "encrypted, switched from plain"  # the header carries "encryption_started": true


@dataclass(frozen=True)
class EncryptionDecision:
    mode: EncryptionMode
    notes: tuple[str, ...] = ()  # for the log: a change of recipients or dedup group, a flag ignored

    @property
    def encrypt(self) -> bool:
        return self.mode is not EncryptionMode.PLAIN

    @property
    def encryption_started(self) -> bool:
        return self.mode is EncryptionMode.STARTED


def decide_encryption(host: str, latest: Mapping[str, Any] | None,
                      config: EncryptionConfig | None, start_encryption: bool, *,
                      first_run: bool = False) -> EncryptionDecision:
    """How this run is written.

    ``latest`` is the header ``encryption`` of the host's latest run (None:
    plain, as every format-1 run is); ``first_run`` says the host has no run
    yet (``latest`` is then ignored).  Raises :class:`EncryptionMixError`
    (exit 2) for a run that would go back to plain, or switch to encrypted
    without ``--start-encryption``.
    """
    if start_encryption and config is None:
        raise EncryptionMixError("--start-encryption needs an [encryption] section in the "
                                 "configuration (recipients = [\"age1...\"])")
    if first_run:
        notes = (f"host {host} has no run yet: --start-encryption is not needed",) \
            if start_encryption else ()
        return EncryptionDecision(EncryptionMode.ENCRYPTED if config else EncryptionMode.PLAIN,
                                  notes)
    if latest is not None:
        if config is None:
            raise EncryptionMixError(f"host {host}'s runs are encrypted; the configuration has "
                                     "no [encryption] section (refusing to write a plain run)")
        notes = _changes(host, latest, config)
        if start_encryption:
            notes += (f"host {host}'s runs are encrypted already: --start-encryption "
                      "changes nothing",)
        return EncryptionDecision(EncryptionMode.ENCRYPTED, notes)
    if config is None:
        return EncryptionDecision(EncryptionMode.PLAIN)
    if not start_encryption:
        raise EncryptionMixError(f"host {host}'s runs are plain; the configuration has an "
                                 "[encryption] section: give archive --start-encryption to "
                                 "switch this host to encrypted runs (recorded in the run; "
                                 "there is no way back to plain for this host name)")
    return EncryptionDecision(EncryptionMode.STARTED,
                              (f"host {host}: switching from plain to encrypted runs "
                               "(--start-encryption); earlier runs stay plain",))


def _changes(host: str, latest: Mapping[str, Any], config: EncryptionConfig) -> tuple[str, ...]:
    notes = []
    if not isinstance(latest, Mapping):  # the decoder checks headers; never trust one here
        latest = {}
    before = latest.get("recipients")
    now = sorted({str(r) for r in config.recipients})
    if not isinstance(before, list) or sorted({str(r) for r in before}) != now:
        notes.append(f"host {host}: the recipients change with this run (new packs are "
                     f"encrypted to {', '.join(now)}; keep the retired keys until the runs "
                     "that use their packs have expired)")
    dedup_id = config.dedup_secret.dedup_id
    if latest.get("dedup_id") != dedup_id:
        notes.append(f"host {host}: the dedup group changes with this run (now {dedup_id}): "
                     "data stored under the former group is uploaded again")
    return tuple(notes)


@dataclass(frozen=True)
class RunEncryption:
    """What a run's header says about encryption, for :func:`mixing_problems`."""

    run_id: str
    encryption: Mapping[str, Any] | None  # the header's ``encryption``; None: plain
    encryption_started: bool = False  # the header's ``encryption_started``


def mixing_problems(host: str, runs: Sequence[RunEncryption]) -> list[str]:
    """The same rule read back over a host's runs, oldest first (for
    ``verify``): a plain run after an encrypted one, or an encrypted run
    after a plain one without ``encryption_started``, each named."""
    problems = []
    for before, run in zip(runs, runs[1:]):
        if before.encryption is not None and run.encryption is None:
            problems.append(f"host {host}: run {run.run_id} is plain after the encrypted run "
                            f"{before.run_id}")
        elif before.encryption is None and run.encryption is not None \
                and not run.encryption_started:
            problems.append(f"host {host}: run {run.run_id} is encrypted after the plain run "
                            f"{before.run_id} without recording the switch "
                            "(encryption_started)")
    return problems
