"""``restore``, ``cat-snapshot`` and ``restore-snapshot``: thin wrappers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from s3archive import human
from s3archive.cli.context import AppContext, pass_app
from s3archive.errors import EXIT_FAILED, IntegrityError, UsageError
from s3archive.browse import open_run
from s3archive.restore.restorer import (Problem, RestoreOptions, find_snapshot, restore_run,
                                snapshot_stream)
from s3archive.store.factory import open_store

_SHOWN_PROBLEMS = 50

host_option = click.option("--host", default=None,
                           help="Host whose runs RUN names (default: this host for "
                                "'latest', any host for an id).")


def _problems_json(problems: list[Problem]) -> list[dict[str, str]]:
    return [{**human.json_path(p.path), "message": p.message} for p in problems]


def _echo_problems(title: str, problems: list[Problem]) -> None:
    for problem in problems[:_SHOWN_PROBLEMS]:
        where = human.path(problem.path) if problem.path else "(restore)"
        click.echo(f"{title}: {where}: {problem.message}", err=True)
    if len(problems) > _SHOWN_PROBLEMS:
        click.echo(f"{title}: ... and {len(problems) - _SHOWN_PROBLEMS} more", err=True)


@click.command("restore")
@click.argument("run")
@click.argument("paths", nargs=-1)
@click.option("--target", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to restore into (created if missing; must be empty "
                   "unless --overwrite).")
@click.option("--overwrite", is_flag=True, help="Restore into a non-empty target, replacing "
              "what is in the way.")
@click.option("--resume", is_flag=True, help="Finish an interrupted restore of RUN into the "
              "same --target: files already there are read back, chunks that match their "
              "hash are kept, only the rest is downloaded.")
@click.option("--numeric-owner", is_flag=True, help="Restore owners by number, never by name.")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Parallel downloads.")
@host_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@pass_app
def restore_command(app: AppContext, run: str, paths: tuple[str, ...], target: Path,
                    overwrite: bool, resume: bool, numeric_owner: bool, workers: int,
                    host: str | None,
                    as_json: bool) -> None:
    """Restore RUN (or only PATHs of it) into --target.

    RUN is a run id, a unique prefix of one, or 'latest'.  Every chunk's
    SHA-256 is checked; a bad chunk damages only its file, which is named.
    A restore that was interrupted (even by kill -9) is finished with the
    same command plus --resume.

    \b
    Exit codes: 0 everything restored; 1 some entries damaged or not restored;
    2 usage error (e.g. a non-empty target without --overwrite).
    """
    config = app.config()
    store = open_store(config, pool_size=max(16, workers))
    ref, manifest = open_run(store, run, host, config.host_name)
    report = restore_run(store, manifest, target, [os.fsencode(p) for p in paths],
                         RestoreOptions(overwrite=overwrite, resume=resume,
                                        numeric_owner=numeric_owner, workers=workers))
    rate = report.bytes_written / report.seconds / 1e6 if report.seconds else 0.0
    if as_json:
        click.echo(json.dumps({
            "host": ref.host, "run_id": ref.run_id, "target": str(target),
            "ok": report.ok, "entries": report.entries, "files": report.files,
            "bytes": report.bytes_written, "bytes_kept": report.bytes_kept,
            "seconds": round(report.seconds, 3),
            "mb_per_s": round(rate, 1), "store": report.store,
            "damaged": _problems_json(report.damaged), "failed": _problems_json(report.failed),
            "warnings": _problems_json(report.warnings)}))
    else:
        _echo_problems("warning", report.warnings)
        click.echo(f"restored {ref.host}/{ref.run_id} into {target}: {report.entries} entries, "
                   f"{report.files} files, {human.size(report.bytes_written)} in "
                   f"{human.duration(report.seconds)} ({rate:.1f} MB/s)"
                   + (f", {human.size(report.bytes_kept)} already in place" if resume else ""))
    _echo_problems("damaged", report.damaged)
    _echo_problems("not restored", report.failed)
    if not report.ok:
        click.echo(f"s3archive: error: {len(report.damaged)} damaged, {len(report.failed)} "
                   "not restored", err=True)
        sys.exit(EXIT_FAILED)


@click.command("cat-snapshot")
@click.argument("run")
@click.argument("name")
@host_option
@pass_app
def cat_snapshot_command(app: AppContext, run: str, name: str, host: str | None) -> None:
    """Write the bytes of snapshot NAME of RUN to stdout (each chunk verified)."""
    config = app.config()
    store = open_store(config)
    _, manifest = open_run(store, run, host, config.host_name)
    out = sys.stdout.buffer
    for data in snapshot_stream(store, manifest, name):
        out.write(data)
    out.flush()


@click.command("restore-snapshot")
@click.argument("run")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask before running the restore command.")
@host_option
@pass_app
def restore_snapshot_command(app: AppContext, run: str, name: str, yes: bool,
                             host: str | None) -> None:
    """Pipe snapshot NAME of RUN into the command it recorded (::restore-through::).

    The command comes from the bucket and runs with your privileges (often
    root): it is shown first and runs only after you confirm on a terminal.
    Without a terminal it is refused unless --yes is given.

    \b
    Exit codes: the command's; 1 when the data or the command failed or you
    declined; 2 usage error (no terminal to ask on and no --yes).
    """
    config = app.config()
    store = open_store(config)
    ref, manifest = open_run(store, run, host, config.host_name)
    snap = find_snapshot(manifest, name)
    if not snap.restore_through:
        raise UsageError(f"snapshot {name!r} recorded no ::restore-through:: command; "
                         "use cat-snapshot")
    stream = snapshot_stream(store, manifest, name)
    shown = human.path(snap.restore_through.encode("utf-8", "surrogateescape"))
    click.echo(f"snapshot {name} of {ref.host}/{ref.run_id} ({human.size(snap.size)}, "
               f"manifest written {human.date(ref.last_modified)} UTC) will be piped into "
               f"/bin/sh -c:\n    {shown}", err=True)
    problem = ref.time_problem()
    if problem:
        click.echo(f"warning: {problem}", err=True)
    if not yes:
        if not _interactive():
            raise UsageError("restore-snapshot runs the recorded command above as you: "
                             "there is no terminal to ask on, so pass --yes to run it")
        if not click.confirm("Run it?", err=True):
            raise click.Abort()
    process = subprocess.Popen(["/bin/sh", "-c", snap.restore_through], stdin=subprocess.PIPE)
    assert process.stdin is not None
    failure: str | None = None
    try:
        for data in stream:
            process.stdin.write(data)
    except IntegrityError as err:
        failure = str(err)
    except BrokenPipeError:
        failure = "the restore command stopped reading its input"
    finally:
        try:
            process.stdin.close()
        except BrokenPipeError:
            pass
    status = process.wait()
    if failure:
        click.echo(f"s3archive: error: {failure}", err=True)
        sys.exit(EXIT_FAILED)
    if status != 0:
        click.echo(f"s3archive: error: the restore command exited with status {status}",
                   err=True)
        sys.exit(status if 0 < status < 126 else EXIT_FAILED)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


COMMANDS = [restore_command, cat_snapshot_command, restore_snapshot_command]
