"""``write-config``: the host's configuration, credentials, pickers,
snapshotters and systemd units, written without clobbering operator edits."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from s3archive.config import (
    DEFAULT_DEDUP_GROUP,
    MAX_RECIPIENTS,
    CostSettings,
    RetentionSettings,
    dedup_secret_file_text,
    parse_config,
    read_dedup_secret_file,
)
from s3archive.crypto.dedup import DedupSecret
from s3archive.crypto.keys import Recipient
from s3archive.errors import ConfigError, UsageError
from s3archive.setup import systemd_units
from s3archive.setup.data_files import example_scripts
from s3archive.setup.iam_setup import AccessKey
from s3archive.setup.spec import backup_group_name, validate_iam_host_name
from s3archive.setup.tracked_files import PlannedFile, TrackedWriter, WriteOutcome, write_file

log = logging.getLogger(__name__)

CONFIG_DIR = Path("/etc/s3archive")
CONFIG_NAME = "config.toml"
CREDENTIALS_NAME = "credentials"
RECORD_NAME = ".written-by-s3archive.json"
DEDUP_SECRET_NAME = "dedup.key"  # beside the configuration, which names it relatively
EXAMPLE_DIRS = {"pickers.d": "pickers.d.example", "snapshots.d": "snapshots.d.example"}


@dataclass(frozen=True)
class HostOptions:
    bucket: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    host_name: str | None = None
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    profile: str | None = None
    credentials_file: Path | None = None  # a path on the host (not below --root)
    role_arn: str | None = None
    create_user: str | None = None
    backup_group: str | None = None
    root: Path | None = None
    enable: bool = True
    force: bool = False
    cache_dir: Path = Path("/var/cache/s3archive")
    state_file: Path = Path("/var/lib/s3archive/last-run.json")
    prometheus_textfile: Path | None = None
    recipients: tuple[Recipient, ...] = ()  # restore keys: [encryption] when given
    dedup_secret: DedupSecret | None = field(default=None, repr=False)  # --dedup-secret
    dedup_group: str | None = DEFAULT_DEDUP_GROUP  # [dedup] group; None shares nothing

    def __post_init__(self) -> None:
        if len(self.recipients) > MAX_RECIPIENTS:
            raise UsageError(f"--recipient: at most {MAX_RECIPIENTS} recipients")
        for index, recipient in enumerate(self.recipients):
            if recipient in self.recipients[:index]:
                raise UsageError(f"--recipient {recipient} is given twice")
        if self.dedup_secret is not None and not self.recipients:
            raise UsageError("--dedup-secret is for encrypted hosts: give --recipient too")
        if self.profile and (self.credentials_file or self.role_arn):
            other = "--credentials-file" if self.credentials_file else "--role-arn"
            raise UsageError(f"--profile and {other} are exclusive: choose one (a role is "
                             "assumed with the keys of --credentials-file)")
        if self.create_user and self.profile:
            raise UsageError("--create-user writes a credentials file: it cannot be combined "
                             "with --profile")
        if self.create_user:
            if not self.host_name:
                raise UsageError("--create-user needs --host-name: the user may write only "
                                 "runs/<host>/ and the configuration must name that host")
            validate_iam_host_name(self.host_name, "--host-name")
        for option, path in (("--credentials-file", self.credentials_file),
                             ("--cache-dir", self.cache_dir), ("--state-file", self.state_file),
                             ("--prometheus-textfile", self.prometheus_textfile)):
            if path is not None and not path.is_absolute():
                raise UsageError(f"{option} {path}: must be an absolute path")

    @property
    def credentials_target(self) -> Path | None:
        if self.credentials_file is not None:
            return self.credentials_file
        return CONFIG_DIR / CREDENTIALS_NAME if self.create_user else None


@dataclass
class WriteConfigResult:
    root: Path
    outcomes: list[WriteOutcome]
    enabled: bool
    commands: list[list[str]]
    user: str | None = None
    access_key_id: str | None = None
    notes: list[str] = field(default_factory=list)


def render_config(options: HostOptions) -> str:
    r = options.retention
    lines = ["# s3archive configuration, written by `s3archive write-config`.",
             "# pickers.d/ and snapshots.d/ beside this file choose what is archived.",
             "", "[s3]", f"bucket = {_toml(options.bucket)}", f"region = {_toml(options.region)}"]
    if options.endpoint_url:
        lines.append(f"endpoint_url = {_toml(options.endpoint_url)}")
    if options.profile:
        lines.append(f"profile = {_toml(options.profile)}")
    if options.role_arn:
        lines.append(f"role_arn = {_toml(options.role_arn)}")
    target = options.credentials_target
    if target is not None:
        # Relative to this file when it is the default, so --root images work.
        shown = CREDENTIALS_NAME if target == CONFIG_DIR / CREDENTIALS_NAME else str(target)
        lines.append(f"credentials_file = {_toml(shown)}")
    lines += ["", "[host]"]
    if options.host_name:
        lines.append(f"name = {_toml(options.host_name)}")
    else:
        lines.append("# name = \"...\"  (default: this machine's host name)")
    lines += ["", "[retention]", f"mode = {_toml(r.mode)}"]
    if r.until is not None:
        lines.append(f"until = {_toml(r.until.isoformat())}")
    else:
        lines += [f"{tier}_days = {r.days_for(tier)}"
                  for tier in ("daily", "weekly", "monthly", "yearly")]
    if r.legal_hold:
        lines.append("legal_hold = true  # every run held until an operator releases it")
    lines += [f"max_days = {r.max_days}", f"slack_days = {r.slack_days}",
              "", "[local]", f"cache_dir = {_toml(str(options.cache_dir))}",
              f"state_file = {_toml(str(options.state_file))}", ""]
    if options.prometheus_textfile is not None:
        lines += ["[report]", f"prometheus_textfile = {_toml(str(options.prometheus_textfile))}",
                  ""]
    if options.dedup_group != DEFAULT_DEDUP_GROUP:
        lines += ["[dedup]",
                  "# Hosts of one group upload a file's content once (docs/FORMAT.md part 2, 16);",
                  "# \"none\": this host shares nothing.  Encrypted hosts: the dedup secret.",
                  f"group = {_toml(options.dedup_group or 'none')}", ""]
    if options.recipients:
        lines += ["[encryption]",
                  "# The restore keys' recipients (public). Only their private keys, kept",
                  "# offline, read these backups: this host adds runs but cannot read them.",
                  f"recipients = [{', '.join(_toml(str(r)) for r in options.recipients)}]",
                  "# Shared by the hosts of one dedup group (mode 0600); reads no backup.",
                  f"dedup_secret_file = {_toml(DEDUP_SECRET_NAME)}", ""]
    return "\n".join(lines)


DAYS_PER_MONTH = 365.25 / 12


def retention_plan(r: RetentionSettings, now: datetime,
                   price_gb_month: float = CostSettings().storage_gb_month) -> list[str]:
    """What the written configuration locks, and for how long, in words: the
    first run on a host is the first of its year, so it takes the yearly tier."""
    who = ("nobody, the AWS root account included, can shorten or remove a lock"
           if r.mode == "COMPLIANCE" else
           "an administrator with s3:BypassGovernanceRetention can still remove a lock")
    lines = [f"retention plan ({r.mode}: {who}):"]
    if r.until is not None:
        return lines + [f"  every run is locked until {r.until:%Y-%m-%d}"]
    yearly = r.yearly_days
    cost = price_gb_month * yearly / DAYS_PER_MONTH
    lines += [
        f"  the first run of a calendar year is yearly, locked {yearly} days; the FIRST run "
        f"on this host is one: run today, it stays locked until "
        f"{now + timedelta(days=yearly):%Y-%m-%d}, each GB of new data in it billed about "
        f"${cost:.2f} by then (${price_gb_month} per GB-month)",
        f"  the first run of a month is monthly, {r.monthly_days} days; of an ISO week weekly, "
        f"{r.weekly_days} days; every other run daily, {r.daily_days} days; new packs are "
        f"locked {r.slack_days} days longer (slack)",
        "  to try it without locking anything: s3archive archive --dry-run (reads and "
        "chunks everything, uploads nothing)"]
    return lines


def _toml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string


def validate_rendered(text: str, config_path: Path) -> None:
    """The written file must load with the real parser."""
    try:
        parse_config(tomllib.loads(text), config_path)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"internal error: generated configuration is not TOML: {err}") from None


def plan_files(options: HostOptions, credentials: bytes | None) -> list[PlannedFile]:
    files = [PlannedFile(CONFIG_DIR / CONFIG_NAME, render_config(options).encode(), 0o644)]
    target = options.credentials_target
    if target is not None and credentials is not None:
        files.append(PlannedFile(target, credentials, 0o600))
    for directory, source in EXAMPLE_DIRS.items():
        for name, text in example_scripts(source).items():
            # Installed but not executable: the operator enables one with chmod +x.
            files.append(PlannedFile(CONFIG_DIR / directory / name, text.encode(), 0o644,
                                     keep_mode=True))
    unit_settings = systemd_units.UnitSettings(
        executable=systemd_units.find_executable(), config_path=CONFIG_DIR / CONFIG_NAME,
        cache_dir=options.cache_dir, state_dir=options.state_file.parent,
        optional_writable=(options.prometheus_textfile.parent,)
        if options.prometheus_textfile is not None else ())
    for name, text in systemd_units.render_units(unit_settings).items():
        files.append(PlannedFile(systemd_units.UNIT_DIR / name, text.encode(), 0o644))
    for name, text in systemd_units.drop_in_examples().items():
        files.append(PlannedFile(systemd_units.UNIT_DIR / systemd_units.DROP_IN_DIR / name,
                                 text.encode(), 0o644))
    return files


def plan_dedup_secret(path: Path, given: DedupSecret | None,
                      force: bool) -> tuple[DedupSecret, str]:
    """The secret to install at ``path`` and what happens to the file:
    created (given, or new), unchanged, kept (an existing secret is never
    replaced by a new one), or overwritten (another given one, --force)."""
    if not os.path.lexists(path):
        return (given or DedupSecret.generate()), "created"
    try:
        current = read_dedup_secret_file(path)
    except ConfigError:
        if given is not None and force:
            return given, "overwritten"  # a broken file, replaced by the group's secret
        raise
    if given is None:
        return current, "kept"
    if given == current:
        return current, "unchanged"
    if not force:
        raise UsageError(f"{path} holds another dedup secret (group {current.dedup_id}; "
                         f"--dedup-secret is group {given.dedup_id}): left alone; use --force "
                         "to replace it")
    return given, "overwritten"


def install_dedup_secret(path: Path, secret: DedupSecret, action: str) -> None:
    """Write the secret file 0600 (never through a symlink): a new file is
    created exclusively, a replaced one renamed over the old."""
    if action in ("unchanged", "kept"):
        return
    write_file(path, dedup_secret_file_text(secret).encode("ascii"), 0o600,
               exclusive=action == "created")


def _encryption_notes(path: Path, secret: tuple[DedupSecret, str], given: bool,
                      config_path: Path) -> list[str]:
    value, action = secret
    if action == "kept":
        notes = [f"{path}: the existing dedup secret (group {value.dedup_id}) is kept"]
    elif given:
        notes = [f"{path}: the dedup secret of group {value.dedup_id} is installed"]
    else:
        notes = [f"{path}: a new dedup secret, group {value.dedup_id}: this host deduplicates "
                 "against its own runs only; to deduplicate across hosts, install one group's "
                 "secret on each (write-config --dedup-secret FILE)"]
    try:
        plain_before = b"\n[encryption]" not in config_path.read_bytes()
    except FileNotFoundError:
        plain_before = False
    if plain_before:
        notes.append("the configuration was plain: if this host has runs, its next archive "
                     "needs --start-encryption, once (docs/FORMAT2.md 11)")
    return notes


def credentials_text(key_id: str, secret: str, token: str | None = None) -> bytes:
    lines = ["# s3archive credentials (keep mode 0600)", "[default]",
             f"aws_access_key_id = {key_id}", f"aws_secret_access_key = {secret}"]
    if token:
        lines.append(f"aws_session_token = {token}")
    return ("\n".join(lines) + "\n").encode()


def write_config(options: HostOptions,
                 create_key: Callable[[str, str, str], AccessKey] | None = None,
                 run: Callable[[list[str]], Any] = subprocess.run) -> WriteConfigResult:
    """Write everything; ``create_key(user, group, host)`` makes the IAM user
    (allowed only ``runs/<host>/``) and its key."""
    root = options.root or Path("/")
    validate_rendered(render_config(options), root / CONFIG_DIR.relative_to("/") / CONFIG_NAME)
    writer = TrackedWriter(root, root / CONFIG_DIR.relative_to("/") / RECORD_NAME)
    notes: list[str] = []
    target = options.credentials_target
    placeholder = b"\0 credentials not yet created \0"
    credentials: bytes | None = None
    if options.create_user:
        credentials = placeholder
    elif target is not None and not writer.host_path(target).exists():
        notes.append(f"{writer.host_path(target)} does not exist: create it (mode 0600) "
                     "with aws_access_key_id and aws_secret_access_key in [default]")
    # Every conflict is reported before anything (an IAM user included) is made.
    writer.check(plan_files(options, credentials), options.force)
    secret_target = CONFIG_DIR / DEDUP_SECRET_NAME
    secret: tuple[DedupSecret, str] | None = None
    if options.recipients:
        secret = plan_dedup_secret(writer.host_path(secret_target), options.dedup_secret,
                                   options.force)
        notes += _encryption_notes(writer.host_path(secret_target), secret,
                                   options.dedup_secret is not None,
                                   writer.host_path(CONFIG_DIR / CONFIG_NAME))
    access: AccessKey | None = None
    if options.create_user:
        if create_key is None:
            raise UsageError("--create-user needs IAM access")
        group = options.backup_group or backup_group_name(options.bucket)
        assert options.host_name is not None  # checked by HostOptions
        access = create_key(options.create_user, group, options.host_name)
        credentials = credentials_text(access.access_key_id, access.secret_access_key)
    outcomes = []
    if secret is not None:  # before the configuration that names it
        install_dedup_secret(writer.host_path(secret_target), *secret)
        outcomes.append(WriteOutcome(secret_target, secret[1]))
    outcomes += writer.write(plan_files(options, credentials))
    commands = systemd_units.enable_commands()
    enabled = False
    if options.enable and options.root is None and systemd_units.systemd_is_running():
        for command in commands:
            completed = run(command, check=False)
            if completed.returncode != 0:
                raise UsageError(f"{' '.join(command)} failed with exit status "
                                 f"{completed.returncode}")
        enabled = True
    return WriteConfigResult(root=root, outcomes=outcomes, enabled=enabled, commands=commands,
                             user=access.user_name if access else None,
                             access_key_id=access.access_key_id if access else None,
                             notes=notes)

