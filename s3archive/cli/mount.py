"""``mount``: the bucket as a read-only filesystem (FUSE)."""

from __future__ import annotations

import os

import click

from s3archive.cli.context import Repository, with_repository
from s3archive.errors import ManifestError, UsageError
from s3archive.format.model import Manifest
from s3archive.repo.catalog import RunRef, list_runs, load_manifest


@click.command("mount")
@click.argument("mountpoint", type=click.Path(file_okay=False, exists=True))
@click.option("--host", default=None, help="Only this host's runs (default: every host).")
@click.option("--cache-mib", type=click.IntRange(8, 4096), default=64, show_default=True,
              help="Decoded chunks kept in memory.")
@click.option("--debug", is_flag=True, help="FUSE debug output.")
@with_repository(runs=False, keys=True)
def mount_command(repo: Repository, mountpoint: str, host: str | None, cache_mib: int,
                  debug: bool) -> None:
    """Mount the runs read-only at MOUNTPOINT as HOST/RUN-ID/<archived paths>.

    Files are read with random access (only the chunks a read needs, each
    verified); ls -l, cp, diff -r and rsync work.  Stops and unmounts on
    Ctrl-C or SIGTERM (or `fusermount3 -u MOUNTPOINT`).

    \b
    EXIT STATUS
      0  unmounted cleanly
      1  the mount failed
      2  usage error (pyfuse3 or /dev/fuse missing, mountpoint not a directory)
    """
    try:
        from s3archive.mount import RunFilesystem, serve
        import pyfuse3  # noqa: F401
    except ImportError:
        raise UsageError("mount needs pyfuse3: pip install 's3archive[mount]' "
                         "(and the fuse3 package)") from None
    if not os.path.exists("/dev/fuse"):
        raise UsageError("mount needs /dev/fuse (load the fuse module)")
    store = repo.store
    runs = list_runs(store, host)
    if not runs:
        raise UsageError(f"no runs{' of host ' + host if host else ''} in the bucket")

    def load(run: RunRef) -> Manifest:
        try:
            return load_manifest(store, run, identities=repo.identities)
        except ManifestError as err:
            raise OSError(f"{run.host}/{run.run_id}: {err}") from None

    fs = RunFilesystem(store, runs, load, cache_bytes=cache_mib << 20)
    click.echo(f"mounted {len(runs)} run(s) at {mountpoint}; Ctrl-C to unmount", err=True)
    serve(fs, mountpoint, debug)
    click.echo(f"unmounted {mountpoint}", err=True)


COMMANDS = [mount_command]
