"""What every command is handed: the application context, and an open
repository with its run resolver.

A command that reads or writes the bucket is decorated with
:func:`with_repository`; it receives ``repo`` (the loaded configuration,
the opened store, and ``--host`` already applied to run names) instead of
repeating config → ``open_store`` → pick a run.  This follows kopia's
``repositoryReaderAction`` and borg's ``with_repository``.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click
from click.core import ParameterSource

from s3archive.config import Config, default_config_path, load_config
from s3archive.crypto.errors import KeyFormatError
from s3archive.store.counting_store import CountingStore
from s3archive.store.factory import open_store

if TYPE_CHECKING:  # imported where used: an archive run needs neither (start-up time)
    from s3archive.crypto.keys import Identity
    from s3archive.format.model import Manifest
    from s3archive.repo.catalog import RunRef

F = TypeVar("F", bound=Callable[..., Any])
KEY_FILE_ENV = "S3ARCHIVE_KEY_FILE"

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    config_path: Path | None = None
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    _config: Config | None = field(default=None, repr=False)

    @property
    def resolved_config_path(self) -> Path:
        """Absolute, from the current directory at start: pickers, snapshotters and
        relative paths in the file are found wherever the run later looks."""
        path = self.config_path if self.config_path is not None else default_config_path()
        return path.absolute()

    def config(self) -> Config:
        """Load (once) and validate the configuration file."""
        if self._config is None:
            self._config = load_config(self.resolved_config_path)
        return self._config


pass_app = click.make_pass_decorator(AppContext, ensure=True)


@dataclass
class Repository:
    """The configured bucket, open, and how this invocation names runs.

    ``host`` is the ``--host`` option: run names (``latest``, an id, a
    unique prefix) resolve on that host; without it ``latest`` means this
    host and an id is looked up on this host first, then on every host.
    ``identities`` are the restore keys of ``--key`` (empty without it).
    """

    app: AppContext
    config: Config
    store: CountingStore
    host: str | None = None
    identities: list["Identity"] = field(default_factory=list, repr=False)

    def run(self, spec: str) -> "RunRef":
        from s3archive.browse import pick_run

        return pick_run(self.store, spec, self.host, self.config.host_name)

    def open_run(self, spec: str, paths: list[bytes] | None = None,
                 part: str | None = None) -> tuple["RunRef", "Manifest"]:
        """The run ``spec`` names, read whole, or (format 2) only along ``paths``
        or only ``part`` of it (repo.catalog.load_manifest; None: all of it)."""
        from s3archive.repo.catalog import ALL, load_manifest

        ref = self.run(spec)
        return ref, load_manifest(self.store, ref, paths=paths or None,
                                  part=ALL if part is None else part,
                                  identities=self.identities)


host_option = click.option(
    "--host", default=None, metavar="HOST",
    help="Host whose runs RUN names (default: this host for 'latest'; this host, "
         "then any host, for an id).")


key_option = click.option(
    "--key", "key_file", default=None, metavar="FILE", envvar=KEY_FILE_ENV,
    show_envvar=True, type=click.Path(path_type=Path),
    help="Restore key file (an age identity file: s3archive key generate, age-keygen) "
         "for encrypted runs.")


def load_identities(path: Path, source: str) -> list["Identity"]:
    """The restore keys of ``--key``: an identity file, or a typed-in paper
    copy (``key generate --paper``'s numbered lines); one line naming the
    file (never a key) when it cannot be used.  A key file others may read
    is used, with a warning: refusing it would stop a restore from a stick
    that shows every file as 0755 on the bad day."""
    from s3archive.crypto.keys import read_identity_file

    try:
        try:
            identities = read_identity_file(path)
        except KeyFormatError as err:
            identities = _paper_copy(path, err)
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise KeyFormatError(f"{path}: key file not found ({source})") from None
    except IsADirectoryError:
        raise KeyFormatError(f"{path}: a directory, not a key file ({source})") from None
    except PermissionError:
        raise KeyFormatError(f"{path}: permission denied reading the key file "
                             f"({source})") from None
    except OSError as err:
        raise KeyFormatError(f"{path}: cannot read the key file ({source}): "
                             f"{err.strerror or err}") from None
    if stat.S_ISREG(mode) and stat.S_IMODE(mode) & 0o077:
        log.warning(f"{path}: the key file is accessible by group or others (mode "
                    f"{stat.S_IMODE(mode):04o}); chmod 600 it, or keep it offline")
    return identities


def _paper_copy(path: Path, error: KeyFormatError) -> list["Identity"]:
    """The key typed from the paper sheet, when the file is one; else the
    identity file's ``error``."""
    from s3archive.crypto.keys import MAX_IDENTITY_FILE, read_paper

    with open(path, "rb") as stream:
        text = stream.read(MAX_IDENTITY_FILE).decode("ascii", errors="replace")
    if "\ufffd" in text or not any(line.strip()[:1].isdigit() for line in text.splitlines()):
        raise error
    identity, problems = read_paper(text)
    if identity is None:
        lines = "; ".join(f"line {p.line}: {p.message}" if p.line else p.message
                          for p in problems)
        raise KeyFormatError(f"{path}: a paper copy that does not check: {lines} "
                             "(s3archive key check FILE names each line to retype)")
    return [identity]


def _key_source(ctx: click.Context) -> str:
    from_env = ctx.get_parameter_source("key_file") is ParameterSource.ENVIRONMENT
    return f"${KEY_FILE_ENV}" if from_env else "--key"


def with_repository(*, runs: bool = True, keys: bool = False, pool_size: int = 16,
                    pool_from: str | None = None) -> Callable[[F], F]:
    """Decorate a command so it receives ``repo: Repository`` as first argument.

    ``runs`` adds the shared ``--host`` option (for commands that name runs);
    ``keys`` the shared ``--key FILE`` (for commands that read run content),
    whose identities are loaded before the configuration; ``pool_from``
    names an integer parameter (``--workers``) that raises the connection
    pool above ``pool_size``.
    """

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            app = ctx.ensure_object(AppContext)
            host = kwargs.pop("host", None) if runs else None
            key_file = kwargs.pop("key_file", None) if keys else None
            identities = load_identities(key_file, _key_source(ctx)) if key_file else []
            size = max(pool_size, int(kwargs[pool_from])) if pool_from else pool_size
            config = app.config()
            repo = Repository(app, config, open_store(config, pool_size=size), host,
                              identities)
            return command(repo, *args, **kwargs)

        if keys:
            wrapper = key_option(wrapper)
        return host_option(wrapper) if runs else wrapper  # type: ignore[return-value]

    return decorate
