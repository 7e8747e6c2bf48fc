"""``cat`` and ``dump``: one file, or a run as a tar stream, to stdout or a file."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import click

from s3archive.cli.context import Repository, with_repository
from s3archive.errors import UsageError
from s3archive.export import cat_file, write_tar


@contextmanager
def _output(path: Path | None, what: str) -> Iterator[BinaryIO]:
    """stdout (never a terminal), or the new file ``path``: a file that an error
    leaves incomplete is removed, never left looking whole."""
    if path is None:
        if sys.stdout.isatty():
            raise UsageError(f"refusing to write {what} to a terminal: redirect stdout or "
                             "use --output FILE")
        yield sys.stdout.buffer
        return
    out = open(path, "xb")
    try:
        yield out
    except BaseException:
        out.close()
        path.unlink(missing_ok=True)
        raise
    out.close()


@click.command("cat")
@click.argument("run")
@click.argument("path")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Write to FILE (must not exist) instead of stdout.")
@with_repository(keys=True)
def cat_command(repo: Repository, run: str, path: str, output: Path | None) -> None:
    """Write the bytes of the file PATH of RUN to stdout (each chunk verified).

    Holes of sparse files come out as zeros.  A damaged chunk stops the output
    with an error naming the file.

    \b
    EXIT STATUS
      0  the whole file was written
      1  a chunk was damaged or missing (the output is incomplete)
      2  usage error (no such path, not a file, stdout is a terminal)
    """
    _, manifest = repo.open_run(run, [os.fsencode(path)])
    with _output(output, "file bytes") as out:
        cat_file(repo.store, manifest, os.fsencode(path), out)


@click.command("dump")
@click.argument("run")
@click.argument("paths", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["tar"]), default="tar", show_default=True,
              help="Stream format: a POSIX pax tar.")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Write to FILE (must not exist) instead of stdout.")
@click.option("--json", "as_json", is_flag=True,
              help="Print figures as JSON on stderr when done.")
@with_repository(keys=True)
def dump_command(repo: Repository, run: str, paths: tuple[str, ...], fmt: str,
                 output: Path | None, as_json: bool) -> None:
    """Stream RUN (or only PATHS of it) as a tar archive to stdout.

    The tar is POSIX pax: long and non-UTF-8 names, nanosecond mtimes,
    owners, xattrs and ACLs (SCHILY.*), hardlinks, symlinks, FIFOs, devices
    and sparse files (GNU pax sparse 1.0).  Extract with everything:
    ``tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf FILE``.

    \b
    EXIT STATUS
      0  complete
      1  a chunk was damaged or missing (the stream stops; the tar is incomplete)
      2  usage error
    """
    _, manifest = repo.open_run(run, [os.fsencode(p) for p in paths])
    with _output(output, "a tar stream") as out:
        stats = write_tar(repo.store, manifest, [os.fsencode(p) for p in paths], out)
        out.flush()
    figures = {"run_id": manifest.header.run_id, "host": manifest.header.host,
               "format": fmt, "entries": stats.entries, "files": stats.files,
               "bytes": stats.bytes}
    if as_json:
        click.echo(json.dumps(figures), err=True)
    else:
        click.echo(f"dump: {stats.entries} entries, {stats.files} files, "
                   f"{stats.bytes} bytes of run {manifest.header.run_id}", err=True)


COMMANDS = [cat_command, dump_command]
