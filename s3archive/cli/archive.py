"""`s3archive archive`: one run of the pipeline, then a summary."""

from __future__ import annotations

import json
import sys

import click

from s3archive.archive.archiver import ArchiveSummary, Archiver
from s3archive.cli.context import AppContext, pass_app
from s3archive.clock import isoformat, utc_now
from s3archive.config import Config
from s3archive.errors import EXIT_FAILED, S3ArchiveError
from s3archive.progress import human_bytes, progress_for
from s3archive.archive.run_record import record_run
from s3archive.store.counting_store import CountingStore
from s3archive.store.factory import open_store


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
@click.option("--dry-run", is_flag=True, help="Read and chunk everything, upload nothing.")
@pass_app
def archive(app: AppContext, as_json: bool, dry_run: bool) -> None:
    """Back up what pickers.d and snapshots.d name, into locked packs and one manifest.

    \b
    Exit codes: 0 ok; 1 failed, no manifest written; 2 usage or
    configuration error; 3 manifest written but some sources failed
    (the warnings are in the summary and in the manifest).
    """
    config = app.config()
    started = isoformat(utc_now())
    progress = progress_for(sys.stderr, quiet=as_json or app.verbosity < 0,
                            verbose=app.verbosity > 0)
    store: CountingStore | None = None
    try:
        store = open_store(config)
        summary = Archiver(config, store, progress=progress, dry_run=dry_run).run()
    except BaseException as err:
        # Recorded for status, the state file and the metrics; then the one
        # error-to-exit-code mapping in cli.main reports it as usual.
        if not dry_run and not isinstance(err, (SystemExit, GeneratorExit)):
            record_run(config, failed_summary(config, started, store, err),
                       error=_describe(err))
        raise
    if not dry_run:
        record_run(config, summary)
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=None, sort_keys=False))
    elif app.verbosity >= 0:
        click.echo(format_summary(summary), err=True)
    sys.exit(summary.exit_code)


def failed_summary(config: Config, started: str, store: CountingStore | None,
                   err: BaseException) -> ArchiveSummary:
    code = (err.exit_code if isinstance(err, S3ArchiveError)
            else 130 if isinstance(err, KeyboardInterrupt) else EXIT_FAILED)
    return ArchiveSummary(run_id="", host=config.host_name, started=started,
                          finished=isoformat(utc_now()), exit_code=code,
                          requests=store.snapshot()["requests"] if store else {})


def _describe(err: BaseException) -> str:
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    if isinstance(err, S3ArchiveError):
        return str(err)
    from s3archive.store.errors import describe_error
    return describe_error(err)


def format_summary(s: ArchiveSummary) -> str:
    lines = [
        f"run {s.host}/{s.run_id}{' (dry run: nothing uploaded)' if s.dry_run else ''}",
        f"  tier {s.tier}, locked until {s.retain_until}",
        f"  {s.files} files ({s.files_unchanged} unchanged), {s.dirs} dirs, {s.symlinks} symlinks, "
        f"{s.others} other entries, {s.snapshots} snapshots",
        f"  {human_bytes(s.bytes_total)} in files, {human_bytes(s.bytes_read)} read, "
        f"{human_bytes(s.bytes_new)} new",
        f"  {s.chunks_new} new chunks, {s.chunks_reused} reused; {s.packs_uploaded} packs "
        f"({human_bytes(s.bytes_uploaded)}) uploaded, {s.packs_extended} extended, "
        f"{s.packs_rewritten} rewritten",
        f"  {sum(s.requests.values())} requests: "
        + ", ".join(f"{k} {v}" for k, v in sorted(s.requests.items())),
    ]
    if s.manifest_key:
        lines.append(f"  manifest {s.manifest_key}")
    if s.warnings:
        lines.append(f"  {len(s.warnings)} warnings:")
        lines.extend(f"    {w}" for w in s.warnings[:50])
        if len(s.warnings) > 50:
            lines.append(f"    … and {len(s.warnings) - 50} more (see the manifest)")
    return "\n".join(lines)


COMMANDS = [archive]
