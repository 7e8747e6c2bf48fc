"""The configuration file (TOML): schema, defaults, strict validation.

Every bad value fails here, before any S3 call, with one line that names the
file, the key and the value (exit code 2).  ``pickers.d/`` and
``snapshots.d/`` live next to the configuration file.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from s3archive.clock import Clock, utc_now
from s3archive.crypto.dedup import DedupSecret
from s3archive.crypto.errors import KeyFormatError
from s3archive.crypto.keys import Recipient
from s3archive.errors import ConfigError
from s3archive.storage_classes import DEFAULT_CLASS_PRICES, STANDARD_GB_MONTH, STORAGE_CLASSES

DEFAULT_CONFIG_PATH = Path("/etc/s3archive/config.toml")
CONFIG_ENV = "S3ARCHIVE_CONFIG"
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
TIERS = ("daily", "weekly", "monthly", "yearly")
MAX_RETENTION_DAYS = 36500
DEFAULT_DEDUP_SECRET_FILE = Path("/etc/s3archive/dedup.key")
MAX_RECIPIENTS = 16  # docs/FORMAT2.md 5.2
MAX_DEDUP_SECRET_FILE = 4096  # bytes: one line and a few comments


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    profile: str | None = None
    credentials_file: Path | None = None
    role_arn: str | None = None
    sts_endpoint_url: str | None = None  # for role_arn; default: AWS's regional STS
    max_concurrency: int = 3  # packs uploaded at once (each one held in memory)
    max_bandwidth: int | None = None  # bytes per second, the average upload rate


@dataclass(frozen=True)
class RetentionSettings:
    mode: str = "GOVERNANCE"
    daily_days: int = 14
    weekly_days: int = 63
    monthly_days: int = 400
    yearly_days: int = 1830
    until: datetime | None = None
    slack_days: int = 7
    repack_below: float = 0.2
    max_days: int = 3660
    legal_hold: bool = False

    def days_for(self, tier: str) -> int:
        return int(getattr(self, f"{tier}_days"))


@dataclass(frozen=True)
class ContentSettings:
    compression_level: int = 3
    pack_size_mib: int = 16
    one_file_system: bool = True
    exclude: tuple[str, ...] = ()
    # processes that read, chunk, hash and compress small files (None: one per CPU;
    # 0: threads of the main process only)
    workers: int | None = None

    def content_workers(self) -> int:
        return self.workers if self.workers is not None else (os.cpu_count() or 1)


@dataclass(frozen=True)
class SourceSettings:
    picker_timeout: float = 300.0
    snapshot_timeout: float = 3600.0
    lock_timeout: float = 2.0  # wait for a writer's exclusive flock on a file, then read anyway


@dataclass(frozen=True)
class LocalSettings:
    cache_dir: Path = Path("/var/cache/s3archive")
    state_file: Path = Path("/var/lib/s3archive/last-run.json")


@dataclass(frozen=True)
class ReportSettings:
    prometheus_textfile: Path | None = None


# S3 list prices (us-east-1, USD; source and date in storage_classes) as
# defaults; storage per class per GB-month, requests per 1,000.  An operator
# sets their own in [cost].
@dataclass(frozen=True)
class CostSettings:
    currency: str = "USD"
    storage_gb_month: float = STANDARD_GB_MONTH  # every class without its own price below
    class_gb_month: tuple[tuple[str, float], ...] = tuple(sorted(DEFAULT_CLASS_PRICES.items()))
    put_per_1000: float = 0.005  # PUT, COPY, POST, LIST (and PutObjectRetention)
    get_per_1000: float = 0.0004  # GET, HEAD and other reads
    runs_per_month: float = 30.0

    def price_of(self, storage_class: str) -> float:
        return dict(self.class_gb_month).get(storage_class, self.storage_gb_month)


@dataclass(frozen=True)
class EncryptionConfig:
    """``[encryption]``: the restore keys' recipients and this host's dedup
    secret (docs/FORMAT2.md 5.2, 5.3).

    The secret file is read, and its mode and owner checked, on the first use
    of :attr:`dedup_secret` (the writer's): commands that only read the
    bucket never need it, so they work where the file is unreadable (a
    monitoring user, an operator's copy of the configuration).  Neither
    ``repr`` nor any message shows the secret."""

    recipients: tuple[Recipient, ...]
    dedup_secret_file: Path = DEFAULT_DEDUP_SECRET_FILE

    @cached_property
    def dedup_secret(self) -> DedupSecret:
        return read_dedup_secret_file(self.dedup_secret_file)


DEFAULT_DEDUP_GROUP = "all"  # every plain host of the bucket
_DEDUP_GROUP = re.compile(r"[A-Za-z0-9._-]{1,64}")


DEDUP_GROUP_RULE = '1-64 characters of A-Z a-z 0-9 . _ - (or "none" to share nothing)'


def dedup_group_of(value: str | bool) -> str | None:
    """``[dedup] group``: a name, or None (``"none"``/``false``: the host shares nothing);
    ValueError for a name that breaks DEDUP_GROUP_RULE."""
    if value is False or value == "none":
        return None
    if value is True:
        return DEFAULT_DEDUP_GROUP
    if not _DEDUP_GROUP.fullmatch(value):
        raise ValueError(f"must be {DEDUP_GROUP_RULE}")
    return value


def _parse_dedup_group(reader: "_Reader") -> str | None:
    value = reader.get("group", (str, bool), DEFAULT_DEDUP_GROUP)
    try:
        return dedup_group_of(value)
    except ValueError as err:
        raise reader.fail("group", value, str(err)) from None


@dataclass(frozen=True)
class Config:
    path: Path
    s3: S3Settings
    host_name: str
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    content: ContentSettings = field(default_factory=ContentSettings)
    sources: SourceSettings = field(default_factory=SourceSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    cost: CostSettings = field(default_factory=CostSettings)
    allow_unlocked_bucket: bool = False
    encryption: EncryptionConfig | None = None  # None: plain runs
    # [dedup] group (docs/FORMAT.md part 2, 16): None shares nothing with other hosts
    dedup_group: str | None = DEFAULT_DEDUP_GROUP

    @property
    def pickers_dir(self) -> Path:
        return self.path.parent / "pickers.d"

    @property
    def snapshots_dir(self) -> Path:
        return self.path.parent / "snapshots.d"


def default_config_path() -> Path:
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


# ---------------------------------------------------------------- validation

class _Reader:
    """Reads one table of the TOML document, remembering what was consumed."""

    def __init__(self, path: Path, section: str, table: Any):
        self.path = path
        self.section = section
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table, not {table!r}")
        self.table = table
        self.seen: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.section}.{key}" if self.section else key

    def fail(self, key: str, value: Any, why: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.name(key)} = {value!r}: {why}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None,
            check: Callable[[Any], str | None] | None = None) -> Any:
        self.seen.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, value, f"must be {_kind_names(kinds)}")
        if not isinstance(value, kinds):
            raise self.fail(key, value, f"must be {_kind_names(kinds)}")
        if check is not None:
            problem = check(value)
            if problem:
                raise self.fail(key, value, problem)
        return value

    def finish(self, allowed_tables: tuple[str, ...] = ()) -> None:
        for key in self.table:
            if key not in self.seen and key not in allowed_tables:
                known = ", ".join(sorted(self.seen)) or "none"
                raise ConfigError(
                    f"{self.path}: unknown key {self.name(key)!r} (known: {known})")


def _kind_names(kinds: tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number",
             str: "a string", list: "a list", dict: "a table", datetime: "a date-time", date: "a date"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _in_range(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"
    return check


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


MAX_CONFIG_BYTES = 1 << 20  # a configuration is a few KiB; /dev/zero is not one


def load_config(path: Path | None = None, *, clock: Clock = utc_now) -> Config:
    """Read and validate the configuration file; raise ConfigError on any flaw."""
    path = Path(path) if path is not None else default_config_path()
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found "
                          f"(use --config or ${CONFIG_ENV})") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the configuration") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the configuration: {err.strerror or err}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: not a configuration file: larger than "
                          f"{MAX_CONFIG_BYTES >> 10} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 at byte {err.start} (line {line}, "
                          f"column {column}: {data[err.start:err.end]!r})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return parse_config(document, path, clock=clock)


def parse_config(document: dict[str, Any], path: Path, *, clock: Clock = utc_now) -> Config:
    sections = ("s3", "host", "retention", "content", "sources", "local", "report", "cost",
                "encryption", "dedup")
    top = _Reader(path, "", document)
    allow_unlocked = top.get("allow_unlocked_bucket", bool, False)
    for name in sections:
        top.seen.add(name)
    top.finish()
    tables = {name: _Reader(path, name, document.get(name, {})) for name in sections}

    s3 = _parse_s3(tables["s3"], path)
    host = tables["host"]
    host_name = host.get("name", str, None, _check_host_name) or socket.gethostname()
    retention = _parse_retention(tables["retention"], clock)
    content = _parse_content(tables["content"])
    src = tables["sources"]
    sources = SourceSettings(
        picker_timeout=float(src.get("picker_timeout", (int, float), 300, _in_range(1, 86400))),
        snapshot_timeout=float(src.get("snapshot_timeout", (int, float), 3600, _in_range(1, 7 * 86400))),
        lock_timeout=float(src.get("lock_timeout", (int, float), 2, _in_range(0, 3600))),
    )
    loc = tables["local"]
    local = LocalSettings(
        cache_dir=_path(loc.get("cache_dir", str, "/var/cache/s3archive", _non_empty), path),
        state_file=_path(loc.get("state_file", str, "/var/lib/s3archive/last-run.json", _non_empty), path),
    )
    rep = tables["report"]
    textfile = rep.get("prometheus_textfile", str, None, _non_empty)
    report = ReportSettings(prometheus_textfile=_path(textfile, path) if textfile else None)
    cost = _parse_cost(tables["cost"], path)
    encryption = _parse_encryption(tables["encryption"], path) if "encryption" in document \
        else None
    dedup_group = _parse_dedup_group(tables["dedup"])
    for name, reader in tables.items():
        reader.finish(("class_gb_month",) if name == "cost" else ())
    return Config(path=path, s3=s3, host_name=host_name, retention=retention, content=content,
                  sources=sources, local=local, report=report, cost=cost,
                  allow_unlocked_bucket=allow_unlocked, encryption=encryption,
                  dedup_group=dedup_group)


def _parse_encryption(reader: _Reader, path: Path) -> EncryptionConfig:
    values = reader.get("recipients", list, None)
    if values is None:
        raise ConfigError(f"{path}: encryption.recipients is missing (the restore keys' "
                          "recipients, age1...: s3archive key generate prints one)")
    if not 1 <= len(values) <= MAX_RECIPIENTS:
        raise reader.fail("recipients", values, f"must hold 1 to {MAX_RECIPIENTS} recipients")
    recipients: list[Recipient] = []
    for value in values:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: encryption.recipients: {value!r} is not a string "
                              "(expected \"age1...\")")
        try:
            recipient = Recipient.parse(value)
        except KeyFormatError as err:
            raise ConfigError(f"{path}: encryption.recipients: {err}") from None
        if recipient in recipients:
            raise ConfigError(f"{path}: encryption.recipients: {value!r} is given twice")
        recipients.append(recipient)
    secret_file = reader.get("dedup_secret_file", str, None, _non_empty)
    return EncryptionConfig(
        recipients=tuple(recipients),
        dedup_secret_file=_path(secret_file, path) if secret_file else DEFAULT_DEDUP_SECRET_FILE)


def parse_dedup_secret_text(text: str, name: str) -> DedupSecret:
    """The dedup secret file's content: ``#`` comments, blank lines and one
    line ``S3ARCHIVE-DEDUP-1...`` (docs/FORMAT2.md 5.3).  Errors name the file,
    never a character of the secret."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) != 1:
        raise ConfigError(f"{name}: not a dedup secret file: expected one line "
                          f"S3ARCHIVE-DEDUP-1..., found {len(lines)} non-comment lines")
    try:
        return DedupSecret.parse(lines[0])
    except KeyFormatError:
        raise ConfigError(f"{name}: not a valid dedup secret (expected S3ARCHIVE-DEDUP-1... "
                          "with a correct checksum: a character is wrong or missing)") from None


def dedup_secret_file_text(secret: DedupSecret) -> str:
    """What :func:`read_dedup_secret_file` reads back."""
    return (f"# s3archive dedup secret of group {secret.dedup_id} (docs/FORMAT2.md 5.3).\n"
            "# Hosts of one dedup group share it; it reads no backup. Keep mode 0600.\n"
            f"{secret}\n")


def read_dedup_secret_file(path: Path, *, strict: bool = True) -> DedupSecret:
    """Read the host's dedup secret: a regular file, mode 0600 or stricter,
    owned by this user or root; anything else is refused naming the file.
    ``strict=False`` skips mode and owner: a copy the operator hands to
    ``write-config --dedup-secret``, which installs it 0600."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise ConfigError(f"{path}: dedup secret file not found ([encryption] "
                          "dedup_secret_file; write-config creates it)") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the dedup secret (archive "
                          "runs as root)") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the dedup secret: "
                          f"{err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: the dedup secret must be a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if strict and mode & 0o077:
            raise ConfigError(f"{path}: the dedup secret is accessible by group or others "
                              f"(mode {mode:04o}): chmod 600 {path}")
        if strict and info.st_uid not in (os.geteuid(), 0):
            raise ConfigError(f"{path}: the dedup secret is owned by uid {info.st_uid}, "
                              "neither this user nor root")
        data = os.read(fd, MAX_DEDUP_SECRET_FILE + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the dedup secret: "
                          f"{err.strerror or err}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_DEDUP_SECRET_FILE:
        raise ConfigError(f"{path}: not a dedup secret file: larger than "
                          f"{MAX_DEDUP_SECRET_FILE} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a dedup secret file (not ASCII text)") from None
    return parse_dedup_secret_text(text, str(path))


def _parse_cost(reader: _Reader, path: Path) -> CostSettings:
    defaults = CostSettings()
    price = _in_range(0, 1000)
    currency = reader.get("currency", str, defaults.currency,
                          lambda v: None if v.isalpha() and 1 <= len(v) <= 8
                          else "must be a currency code such as \"USD\"")
    storage = reader.get("storage_gb_month", (int, float), defaults.storage_gb_month, price)
    put = reader.get("put_per_1000", (int, float), defaults.put_per_1000, price)
    get = reader.get("get_per_1000", (int, float), defaults.get_per_1000, price)
    runs = reader.get("runs_per_month", (int, float), defaults.runs_per_month,
                      _in_range(0, 10000))
    classes = dict(defaults.class_gb_month)
    table = reader.get("class_gb_month", dict, {})
    sub = _Reader(path, "cost.class_gb_month", table)
    for name in table:
        if name not in STORAGE_CLASSES:
            raise sub.fail(name, table[name], f"unknown storage class (known: "
                           f"{', '.join(STORAGE_CLASSES)})")
        classes[name] = float(sub.get(name, (int, float), None, price))
    sub.finish()
    return CostSettings(currency=currency, storage_gb_month=float(storage),
                        class_gb_month=tuple(sorted(classes.items())),
                        put_per_1000=float(put), get_per_1000=float(get),
                        runs_per_month=float(runs))


def _path(value: str, config_path: Path) -> Path:
    candidate = Path(value)
    return candidate if candidate.is_absolute() else config_path.parent / candidate


def _check_host_name(value: str) -> str | None:
    if not value or "/" in value or value in (".", "..") or any(ord(c) < 33 for c in value):
        return "must be a non-empty name without '/', spaces or control characters"
    return None


def _check_bucket(value: str) -> str | None:
    if not (3 <= len(value) <= 63) or not all(c.islower() or c.isdigit() or c in ".-" for c in value):
        return "is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')"
    return None


def _check_prefix(value: str) -> str | None:
    if value.startswith("/") or value.endswith("/") or "//" in value:
        return "must not start or end with '/' (e.g. \"backups/site1\")"
    return None


def _parse_s3(reader: _Reader, path: Path) -> S3Settings:
    bucket = reader.get("bucket", str, None, _check_bucket)
    if bucket is None:
        raise ConfigError(f"{path}: s3.bucket is missing (the bucket to archive into)")
    prefix = reader.get("prefix", str, "", _check_prefix)
    region = reader.get("region", str, "us-east-1", _non_empty)
    endpoint = reader.get("endpoint_url", str, None,
                          lambda v: None if v.startswith(("http://", "https://"))
                          else "must start with http:// or https://")
    profile = reader.get("profile", str, None, _non_empty)
    credentials = reader.get("credentials_file", str, None, _non_empty)
    role_arn = reader.get("role_arn", str, None,
                          lambda v: None if v.startswith("arn:") else "must be an IAM role ARN")
    sts_endpoint = reader.get("sts_endpoint_url", str, None,
                              lambda v: None if v.startswith(("http://", "https://"))
                              else "must start with http:// or https://")
    if profile and (credentials or role_arn):
        other = "credentials_file" if credentials else "role_arn"
        raise ConfigError(f"{path}: s3.profile and s3.{other} are exclusive: choose one "
                          "(a role is assumed with the keys of credentials_file)")
    if sts_endpoint and not role_arn:
        raise ConfigError(f"{path}: s3.sts_endpoint_url is used only with s3.role_arn")
    concurrency = reader.get("max_concurrency", int, S3Settings.max_concurrency,
                             _in_range(1, 32))
    bandwidth = reader.get("max_bandwidth", (int, str), None, _check_bandwidth)
    return S3Settings(bucket=bucket, prefix=prefix, region=region, endpoint_url=endpoint,
                      profile=profile,
                      credentials_file=_path(credentials, path) if credentials else None,
                      role_arn=role_arn, sts_endpoint_url=sts_endpoint,
                      max_concurrency=concurrency,
                      max_bandwidth=None if bandwidth is None else bytes_per_second(bandwidth))


_RATE_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
               "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}
MIN_BANDWIDTH = 64 << 10


def bytes_per_second(value: int | str) -> int:
    """``"20 MiB/s"``, ``"500KB"`` or a number of bytes per second."""
    if isinstance(value, int):
        return value
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)(?:/s)?\s*", value, re.IGNORECASE)
    if not found:
        raise ValueError(value)
    return int(float(found[1]) * _RATE_UNITS[found[2].upper()])


def _check_bandwidth(value: int | str) -> str | None:
    try:
        rate = bytes_per_second(value)
    except ValueError:
        return "must be bytes per second, or a rate such as \"20 MiB/s\" or \"500 KB/s\""
    return None if rate >= MIN_BANDWIDTH else "must be at least 64 KiB/s"


def _parse_retention(reader: _Reader, clock: Clock) -> RetentionSettings:
    defaults = RetentionSettings()
    mode = reader.get("mode", str, defaults.mode,
                      lambda v: None if v in LOCK_MODES else "must be GOVERNANCE or COMPLIANCE")
    days_range = _in_range(1, MAX_RETENTION_DAYS)
    given_days = {tier: reader.get(f"{tier}_days", int, None, days_range) for tier in TIERS}
    until_raw = reader.get("until", (str, datetime, date), None)
    max_days = reader.get("max_days", int, defaults.max_days, days_range)
    until: datetime | None = None
    if until_raw is not None:
        named = [f"retention.{t}_days" for t, v in given_days.items() if v is not None]
        if named:
            raise reader.fail("until", until_raw, f"is exclusive with {', '.join(named)}: "
                              "choose a fixed date or retention days, not both")
        until = _parse_until(reader, until_raw)
        now = clock()
        if until <= now:
            raise reader.fail("until", until_raw, "lies in the past")
        if (until - now).days > max_days:
            raise reader.fail("until", until_raw, f"is more than retention.max_days={max_days} ahead")
    days = {t: (v if v is not None else defaults.days_for(t)) for t, v in given_days.items()}
    for tier, value in days.items():
        if until is None and value > max_days:
            raise reader.fail(f"{tier}_days", value, f"exceeds retention.max_days = {max_days}")
    slack = reader.get("slack_days", int, defaults.slack_days, _in_range(0, 3650))
    repack = reader.get("repack_below", (int, float), defaults.repack_below, _in_range(0, 1))
    hold = reader.get("legal_hold", bool, False)
    return RetentionSettings(mode=mode, until=until, slack_days=slack, repack_below=float(repack),
                             max_days=max_days, legal_hold=hold,
                             **{f"{t}_days": v for t, v in days.items()})


def _parse_until(reader: _Reader, value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time(0, 0))
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise reader.fail("until", value, "is not an ISO date or date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _parse_content(reader: _Reader) -> ContentSettings:
    level = reader.get("compression_level", int, 3, _in_range(1, 22))
    pack = reader.get("pack_size_mib", int, 16, _in_range(1, 512))
    one_fs = reader.get("one_file_system", bool, True)
    exclude = reader.get("exclude", list, [])
    workers = reader.get("workers", int, None, _in_range(0, 64))
    for item in exclude:
        if not isinstance(item, str) or not item:
            raise reader.fail("exclude", exclude, "must be a list of non-empty glob strings")
    return ContentSettings(compression_level=level, pack_size_mib=pack, one_file_system=one_fs,
                           exclude=tuple(exclude), workers=workers)
