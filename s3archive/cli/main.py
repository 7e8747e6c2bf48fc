"""Root command group and the one place where errors become exit codes."""

from __future__ import annotations

import gc
import importlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import click

from s3archive import __version__
from s3archive.cli.context import AppContext
from s3archive.cli.failures import Failure, describe_failure, foreign_errors
from s3archive.errors import S3ArchiveError

# Each module listed here exposes ``COMMANDS``: a list of click commands.  Its
# commands are named here too, so a command imports its own module only (an
# archive run no reader, a reader no archiver); test_cli_edge checks the names.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "archive": ("archive",),
    "prune": ("prune",),
    "restore": ("restore", "cat-snapshot", "restore-snapshot"),
    "browse": ("runs", "ls", "show", "diff"),
    "export": ("cat", "dump"),
    "find": ("find", "history"),
    "fleet": ("fleet",),
    "mount": ("mount",),
    "verify": ("verify",),
    "hold": ("hold", "release"),
    "setup": ("create-resources", "write-config"),
    "demo": ("demo",),
    "status": ("status",),
    "cost": ("cost",),
    "key": ("key",),
    "shell": ("completion", "man"),
}

log = logging.getLogger("s3archive")

FULL_SENTENCE = 10_000  # click cuts a command's first sentence to this many characters


class _Root(click.Group):
    """Maps every expected failure to one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (S3ArchiveError, KeyboardInterrupt) as err:
            _fail(describe_failure(err))
        except foreign_errors() as err:
            _fail(describe_failure(err))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command's first sentence in full (click cuts it to fit one line)."""
        rows = [(name, command.get_short_help_str(limit=FULL_SENTENCE))
                for name, command in ((n, self.get_command(ctx, n))
                                      for n in self.list_commands(ctx))
                if command is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _fail(failure: Failure) -> None:
    click.echo(f"s3archive: {failure.level}: {failure.message}", err=True)
    sys.exit(failure.exit_code)


_CONFIG_HELP = ("Configuration file (default: $S3ARCHIVE_CONFIG, then "
                "/etc/s3archive/config.toml).")
_VERBOSE_HELP = "More detail on stderr (repeatable)."
_QUIET_HELP = "Only warnings and errors on stderr."


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help=_CONFIG_HELP)
@click.option("-v", "--verbose", count=True, help=_VERBOSE_HELP)
@click.option("-q", "--quiet", is_flag=True, help=_QUIET_HELP)
@click.version_option(__version__, prog_name="s3archive")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: int, quiet: bool) -> None:
    """Back up this host into S3 under Object Lock, restore and verify it.

    --config, -v and -q may also follow the command: `s3archive runs --config
    FILE` is `s3archive --config FILE runs`.

    \b
    EXIT STATUS (each command's --help says what its codes mean for it)
      0    ok
      1    failed (archive: no manifest written)
      2    usage or configuration error
      3    archive: manifest written, some sources failed
      130  interrupted
    """
    verbosity = -1 if quiet else verbose
    ctx.obj = AppContext(config_path=config_path, verbosity=verbosity)
    _setup_logging(verbosity)


# The same options after the subcommand: they update the context the group made.
def _late_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(AppContext).config_path = value


def _late_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    app = ctx.ensure_object(AppContext)
    if value and app.verbosity >= 0:
        app.verbosity += value
        _setup_logging(app.verbosity)


def _late_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        app = ctx.ensure_object(AppContext)
        app.verbosity = -1
        _setup_logging(app.verbosity)


def _global_options() -> list[click.Option]:
    return [
        click.Option(["--config"], type=click.Path(dir_okay=False, path_type=Path),
                     default=None, expose_value=False, callback=_late_config,
                     is_eager=True, help=_CONFIG_HELP),
        click.Option(["-v", "--verbose"], count=True, expose_value=False,
                     callback=_late_verbose, is_eager=True, help=_VERBOSE_HELP),
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False,
                     callback=_late_quiet, is_eager=True, help=_QUIET_HELP),
    ]


class _WarningPrefix(logging.Formatter):
    """``s3archive: warning: ...`` for warnings and errors, so they read as ours."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"s3archive: {record.levelname.lower()}: {text}"
        return text


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_WarningPrefix("%(message)s" if verbosity < 2
                                        else "%(name)s: %(message)s"))
    root = logging.getLogger("s3archive")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbosity < 3:
        for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


class _LazyCommands(MutableMapping[str, click.Command]):
    """The root group's commands: a command module is imported when one of its
    commands is first wanted (listing them all, as ``--help`` does, imports all)."""

    def __init__(self) -> None:
        self._module_of = {name: module for module, names in COMMAND_MODULES.items()
                           for name in names}
        self._loaded: dict[str, click.Command] = {}

    def _load(self, module: str) -> None:
        for command in importlib.import_module(f"s3archive.cli.{module}").COMMANDS:
            command.params.extend(_global_options())
            self._loaded[command.name or ""] = command
        for name in COMMAND_MODULES[module]:
            self._module_of.pop(name, None)

    def _load_all(self) -> None:
        for module in dict.fromkeys(self._module_of.values()):
            self._load(module)

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded and name in self._module_of:
            self._load(self._module_of[name])
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        self._load_all()
        return iter(dict(self._loaded))

    def __len__(self) -> int:
        self._load_all()
        return len(self._loaded)


cli.commands = _LazyCommands()


def _return_big_buffers_to_the_system() -> None:
    """Serve allocations of 1 MiB and more with mmap (glibc), so freed chunk and
    pack buffers go back to the system instead of piling up in the heap.

    Measured on the benchmark tree (bench/): peak RSS 155-165 MiB instead of
    245-265 MiB, for about 0.5 s more system time per 700 MB of new data
    (fresh pages are faulted in and zeroed).  Memory is the scarcer resource
    on the hosts being backed up."""
    from s3archive.archive.fresh_memory import set_mmap_threshold

    set_mmap_threshold(1 << 20)


# True once main() runs: the process is s3archive's own, not a caller's running the
# CLI inside it (tests), so an archive run may fork its content workers (cli/archive.py)
OWN_PROCESS = False


def main() -> None:
    global OWN_PROCESS
    OWN_PROCESS = True
    _return_big_buffers_to_the_system()
    try:
        cli(prog_name="s3archive")
    finally:
        # The command is done.  Python's shutdown runs its cyclic garbage collector
        # over every object left (botocore's service model and the imported modules
        # are most of them): 0.1-0.2 s of CPU after an archive run's last line.
        # Frozen objects are not traversed; the shutdown is otherwise as always
        # (atexit handlers, flushed streams, finalizers).
        gc.freeze()
