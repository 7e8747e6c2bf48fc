"""``restore``, ``cat-snapshot`` and ``restore-snapshot``: thin wrappers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from s3archive import human
from s3archive.cli.context import Repository, with_repository
from s3archive.archive.fresh_memory import set_mmap_threshold
from s3archive.repo.catalog import RECORD
from s3archive.errors import CommandFailed, IntegrityError, UsageError
from s3archive.find import compile_pattern
from s3archive.progress import progress_for
from s3archive.repo.catalog import RunRef, open_entries
from s3archive.restore.plan import EntryFilter, Pattern
from s3archive.restore.restorer import (Problem, RestoreOptions, RestorePreview, find_snapshot,
                                        preview_restore, restore_run, snapshot_stream)

SHOWN_CAUSES = 20  # lines per kind of problem: one per cause
SHOWN_PATHS = 3  # paths named on a line whose cause hit several entries
# A restore allocates a GET's body and each plain chunk (up to 8 MiB) and frees them
# again, over and over: served from the heap (glibc's largest threshold) they are
# reused instead of mapped and faulted in afresh.  Measured on the benchmark tree:
# 145 000 -> 23 000 minor page faults, 0.3 s less system time (of 3.9 s of CPU),
# peak RSS 79 -> 89 MiB (restic's: about 200)
REUSED_BUFFERS = 32 << 20


def _problems_json(problems: list[Problem]) -> list[dict[str, str]]:
    return [{**human.json_path(p.path), "message": p.message} for p in problems]


def problem_lines(title: str, problems: list[Problem]) -> list[str]:
    """One line per cause: a target nobody may write gives one line, not one per entry.

    A cause met once names its path (``not restored: /x: reason``); a cause met
    by several entries names a few and counts the rest.
    """
    by_cause: dict[str, list[bytes]] = {}
    for problem in problems:
        by_cause.setdefault(problem.message, []).append(problem.path)
    lines = []
    for cause, paths in list(by_cause.items())[:SHOWN_CAUSES]:
        if len(paths) == 1:
            where = human.path(paths[0]) if paths[0] else "(restore)"
            lines.append(f"{title}: {where}: {cause}")
            continue
        named = ", ".join(human.path(p) for p in paths[:SHOWN_PATHS])
        rest = len(paths) - SHOWN_PATHS
        lines.append(f"{title}: {cause}: {len(paths)} entries ({named}"
                     f"{f' and {rest} more' if rest > 0 else ''})")
    if len(by_cause) > SHOWN_CAUSES:
        lines.append(f"{title}: ... and {len(by_cause) - SHOWN_CAUSES} more causes "
                     "(--json lists every entry)")
    return lines


def _echo_problems(title: str, problems: list[Problem]) -> None:
    for line in problem_lines(title, problems):
        click.echo(line, err=True)


@click.command("restore")
@click.argument("run")
@click.argument("paths", nargs=-1)
@click.option("--target", type=click.Path(file_okay=False, path_type=Path),
              help="Directory to restore into (created if missing; must be empty "
                   "unless --overwrite).  Required, except with --dry-run.")
@click.option("--include", "includes", multiple=True, metavar="GLOB",
              help="Restore only entries matching GLOB, or below a directory that does "
                   "(repeatable; globs as in 'find': without '/' on the name, with '/' on "
                   "the full path in the run).")
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB",
              help="Leave out entries matching GLOB and everything below them "
                   "(repeatable; wins over --include).")
@click.option("--dry-run", is_flag=True, help="List what would be written and how much would "
              "be downloaded; write nothing, touch no target.")
@click.option("--overwrite", is_flag=True, help="Restore into a non-empty target, replacing "
              "what is in the way.")
@click.option("--resume", is_flag=True, help="Finish an interrupted restore of RUN into the "
              "same --target: files already there are read back, chunks that match their "
              "hash are kept, only the rest is downloaded.")
@click.option("--numeric-owner", is_flag=True, help="Restore owners by number, never by name.")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Parallel downloads.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@with_repository(keys=True, pool_from="workers")
def restore_command(repo: Repository, run: str, paths: tuple[str, ...], target: Path | None,
                    includes: tuple[str, ...], excludes: tuple[str, ...], dry_run: bool,
                    overwrite: bool, resume: bool, numeric_owner: bool, workers: int,
                    as_json: bool) -> None:
    """Restore RUN (or only PATHs of it) into --target.

    RUN is a run id, a unique prefix of one, or 'latest'.  Every chunk's
    SHA-256 is checked; a bad chunk damages only its file, which is named.
    A restore that was interrupted (even by kill -9) is finished with the
    same command plus --resume.

    --include and --exclude match the full path of each entry in the run
    (and of its parent directories: a directory included or excluded brings
    its whole subtree); exclude wins; the parent directories of what is
    restored are created with their recorded metadata.  -v lists each path
    restored on stdout; --dry-run lists what would be and the bytes the
    ranged GETs would download.  Progress and the summary go to stderr,
    problems one line per cause.

    \b
    EXIT STATUS
      0  everything restored (--dry-run: the restore is possible)
      1  some entries damaged or not restored
      2  usage error (e.g. a non-empty target without --overwrite, a PATH
         not in the run, an --include that matches nothing, a filter that
         leaves nothing to restore)
    """
    entry_filter = EntryFilter(_patterns("--include", includes), _patterns("--exclude", excludes))
    selections = [os.fsencode(p) for p in paths]
    if dry_run:
        if resume:
            raise UsageError("--dry-run cannot tell what --resume would keep (that needs "
                             "reading the target back): leave out one of them")
        ref = repo.run(run)
        source = open_entries(repo.store, ref, repo.identities)

        def list_planned(path: bytes) -> None:  # each path as it is planned, on stdout
            click.echo(human.path(path))
        preview = preview_restore(source, selections, entry_filter,
                                  None if as_json else list_planned)
        _report_preview(repo, ref, preview, target, overwrite, as_json)
        return
    if target is None:
        raise UsageError("restore needs --target DIR (or --dry-run to see what it would do)")
    ref = repo.run(run)
    manifest = open_entries(repo.store, ref, repo.identities)
    # two arenas: the heap kept free (64 MiB an arena) does not grow with the threads
    set_mmap_threshold(REUSED_BUFFERS, keep_free=2 * REUSED_BUFFERS, arenas=2)
    verbosity = repo.app.verbosity
    progress = progress_for(sys.stderr, quiet=as_json or verbosity < 0, verb="written",
                            by_kind=False)

    def list_path(path: bytes) -> None:  # -v: each path restored, on stdout
        progress.note(human.path(path), sys.stdout)
    report = restore_run(repo.store, manifest, target, selections,
                         RestoreOptions(overwrite=overwrite, resume=resume,
                                        numeric_owner=numeric_owner, workers=workers),
                         entry_filter, progress,
                         list_path if verbosity > 0 and not as_json else None)
    rate = report.bytes_written / report.seconds if report.seconds else 0.0
    if as_json:
        click.echo(json.dumps({
            "host": ref.host, "run_id": ref.run_id, "target": str(target),
            "ok": report.ok, "entries": report.entries, "files": report.files,
            "bytes": report.bytes_written, "bytes_kept": report.bytes_kept,
            "seconds": round(report.seconds, 3),
            "mb_per_s": round(rate / 1e6, 1), "store": report.store,
            "damaged": _problems_json(report.damaged), "failed": _problems_json(report.failed),
            "warnings": _problems_json(report.warnings)}))
    else:
        _echo_problems("warning", report.warnings)
    if not as_json and verbosity >= 0:  # -q: only warnings and errors, as archive
        problems = "".join(f", {len(found)} {what}" for what, found in
                           (("not restored", report.failed), ("damaged", report.damaged))
                           if found)
        click.echo(f"restored {ref.host}/{ref.run_id} into {target}: {report.entries} entries"
                   f"{problems}, {report.files} files, {human.size(report.bytes_written)} in "
                   f"{human.duration(report.seconds)} ({human.size(rate)}/s)"
                   + (f", {human.size(report.bytes_kept)} already in place" if resume else ""),
                   err=True)
    _echo_problems("damaged", report.damaged)
    _echo_problems("not restored", report.failed)
    if not report.ok:
        raise CommandFailed(f"{len(report.damaged)} damaged, {len(report.failed)} not restored")


def _patterns(option: str, texts: tuple[str, ...]) -> tuple[Pattern, ...]:
    """``find``'s matcher for each glob (one glob semantics for find and restore)."""
    for text in texts:
        if not text.strip("/"):
            raise UsageError(f"{option} {text!r}: an empty pattern (to restore everything, "
                             f"leave out {option})")
    return tuple(Pattern(text, compile_pattern(text)) for text in texts)


def _report_preview(repo: Repository, ref: RunRef, preview: RestorePreview,
                    target: Path | None, overwrite: bool, as_json: bool) -> None:
    """``--dry-run``: the figures on stderr, or (--json) on stdout; the paths went to
    stdout while the restore was planned."""
    warnings = list(preview.warnings)
    if target is not None and not overwrite and _not_empty(target):
        warnings.append(Problem(b"", f"{target} is not empty: the restore would refuse it "
                                     "without --overwrite or --resume"))
    usage = repo.store.usage()
    if as_json:
        click.echo(json.dumps({
            "dry_run": True, "host": ref.host, "run_id": ref.run_id,
            "target": None if target is None else str(target),
            "entries": preview.entries, "files": preview.files, "bytes": preview.bytes,
            "download_bytes": preview.download_bytes, "requests": preview.requests,
            "store": usage.to_json() if usage is not None else {},
            "warnings": _problems_json(warnings)}))
        return
    _echo_problems("warning", warnings)
    if repo.app.verbosity < 0:
        return
    where = f" into {target}" if target is not None else ""
    click.echo(f"dry run: would restore {ref.host}/{ref.run_id}{where}: "
               f"{preview.entries} entries, {preview.files} files, "
               f"{human.size(preview.bytes)} to write; would download "
               f"{human.size(preview.download_bytes)} in {preview.requests} ranged GETs "
               "(each chunk once, neighbours merged); nothing written", err=True)


def _not_empty(target: Path) -> bool:
    try:
        with os.scandir(target) as found:
            return next(found, None) is not None
    except OSError:
        return False  # missing (the restore creates it) or unreadable (it will say so)


@click.command("cat-snapshot")
@click.argument("run")
@click.argument("name")
@with_repository(keys=True)
def cat_snapshot_command(repo: Repository, run: str, name: str) -> None:
    """Write the bytes of snapshot NAME of RUN to stdout (each chunk verified).

    \b
    EXIT STATUS
      0  ok;  1  RUN not found, or a chunk failed its check (the output is
      incomplete);  2  usage error (no snapshot NAME)
    """
    _, manifest = repo.open_run(run, part=RECORD)
    out = sys.stdout.buffer
    for data in snapshot_stream(repo.store, manifest, name):
        out.write(data)
    out.flush()


@click.command("restore-snapshot")
@click.argument("run")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask before running the restore command.")
@with_repository(keys=True)
def restore_snapshot_command(repo: Repository, run: str, name: str, yes: bool) -> None:
    """Pipe snapshot NAME of RUN into the command it recorded (::restore-through::).

    The command comes from the bucket and runs with your privileges (often
    root): it is shown first and runs only after you confirm on a terminal.
    Without a terminal it is refused unless --yes is given.

    \b
    EXIT STATUS
      0  ok;  the restore command's own status (1-125) when it failed;
      1  the data failed its check, the command could not run, or you declined;
      2  usage error (no terminal to ask on and no --yes)
    """
    ref, manifest = repo.open_run(run, part=RECORD)
    snap = find_snapshot(manifest, name)
    if not snap.restore_through:
        raise UsageError(f"snapshot {name!r} recorded no ::restore-through:: command; "
                         "use cat-snapshot")
    stream = snapshot_stream(repo.store, manifest, name)
    shown = human.path(snap.restore_through.encode("utf-8", "surrogateescape"))
    click.echo(f"snapshot {name} of {ref.host}/{ref.run_id} ({human.size(snap.size)}, "
               f"manifest written {human.date(ref.last_modified)} UTC) will be piped into "
               f"/bin/sh -c:\n    {shown}", err=True)
    problem = ref.time_problem()
    if problem:
        click.echo(f"s3archive: warning: {problem}", err=True)
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
        raise CommandFailed(failure)
    if status != 0:
        raise CommandFailed(f"the restore command exited with status {status}",
                            exit_code=status if 0 < status < 126 else None)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


COMMANDS = [restore_command, cat_snapshot_command, restore_snapshot_command]
