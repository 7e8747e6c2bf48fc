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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from s3archive.browse import pick_run
from s3archive.config import Config, default_config_path, load_config
from s3archive.format.model import Manifest
from s3archive.repo.catalog import ALL, RunRef, load_manifest
from s3archive.store.counting_store import CountingStore
from s3archive.store.factory import open_store

F = TypeVar("F", bound=Callable[..., Any])


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
    """

    app: AppContext
    config: Config
    store: CountingStore
    host: str | None = None

    def run(self, spec: str) -> RunRef:
        return pick_run(self.store, spec, self.host, self.config.host_name)

    def open_run(self, spec: str, paths: list[bytes] | None = None,
                 part: str = ALL) -> tuple[RunRef, Manifest]:
        """The run ``spec`` names, read whole, or (format 2) only along ``paths``
        or only ``part`` of it (repo.catalog.load_manifest)."""
        ref = self.run(spec)
        return ref, load_manifest(self.store, ref, paths=paths or None, part=part)


host_option = click.option(
    "--host", default=None, metavar="HOST",
    help="Host whose runs RUN names (default: this host for 'latest'; this host, "
         "then any host, for an id).")


def with_repository(*, runs: bool = True, pool_size: int = 16,
                    pool_from: str | None = None) -> Callable[[F], F]:
    """Decorate a command so it receives ``repo: Repository`` as first argument.

    ``runs`` adds the shared ``--host`` option (for commands that name runs);
    ``pool_from`` names an integer parameter (``--workers``) that raises the
    connection pool above ``pool_size``.
    """

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            app = click.get_current_context().ensure_object(AppContext)
            host = kwargs.pop("host", None) if runs else None
            size = max(pool_size, int(kwargs[pool_from])) if pool_from else pool_size
            config = app.config()
            repo = Repository(app, config, open_store(config, pool_size=size), host)
            return command(repo, *args, **kwargs)

        return host_option(wrapper) if runs else wrapper  # type: ignore[return-value]

    return decorate
