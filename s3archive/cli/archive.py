"""`s3archive archive`: one run of the pipeline, then a summary."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import click

from s3archive.archive.archiver import ArchiveSummary, Archiver
from s3archive.archive.content_workers import fork_workers, release_forked
from s3archive.archive.run_record import record_run
from s3archive.cli import main as entry
from s3archive.cli.context import AppContext, pass_app
from s3archive.cli.failures import describe_failure
from s3archive.clock import isoformat, utc_now
from s3archive.config import Config
from s3archive.errors import EXIT_OK, RunWithWarnings, UsageError
from s3archive import human
from s3archive.progress import progress_for
from s3archive.store.counting_store import CountingStore
from s3archive.store.factory import open_store


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
@click.option("--dry-run", is_flag=True, help="Read and chunk everything, upload nothing.")
@click.option("--start-encryption", is_flag=True,
              help="Switch this host from plain to encrypted runs ([encryption] in the "
                   "configuration); recorded in the run. There is no way back to plain.")
@pass_app
def archive(app: AppContext, as_json: bool, dry_run: bool, start_encryption: bool) -> None:
    """Back up what pickers.d and snapshots.d name, into locked packs and one manifest.

    \b
    EXIT STATUS
      0  ok
      1  failed: no manifest written
      2  usage or configuration error (nothing was read or uploaded); also a
         host whose runs are encrypted and a configuration without [encryption],
         or plain runs and [encryption] without --start-encryption
      3  manifest written but some sources failed (the warnings are in the
         summary and in the manifest)
    """
    config = app.config()
    check_local_paths(config, dry_run)
    try:
        if entry.OWN_PROCESS:  # forked while this process has one thread, before boto3
            fork_workers(config.content.content_workers())
        _archive(app, config, as_json, dry_run, start_encryption)
    finally:
        release_forked()


def _archive(app: AppContext, config: Config, as_json: bool, dry_run: bool,
             start_encryption: bool) -> None:
    started = isoformat(utc_now())
    began = time.monotonic()
    progress = progress_for(sys.stderr, quiet=as_json or app.verbosity < 0,
                            verbose=app.verbosity > 0)
    store: CountingStore | None = None
    try:
        store = _open_store_uncollected(config)
        with _fewer_collections():
            summary = Archiver(config, store, progress=progress, dry_run=dry_run,
                               start_encryption=start_encryption).run()
    except BaseException as err:
        # Recorded for status, the state file and the metrics; then the one
        # error-to-exit-code mapping in cli.main reports it as usual.
        if not dry_run and not isinstance(err, (SystemExit, GeneratorExit)):
            failure = describe_failure(err)
            record_run(config, failed_summary(config, started, store, failure.exit_code),
                       error=failure.message)
        raise
    if not dry_run:
        record_run(config, summary)
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=None, sort_keys=False))
    elif app.verbosity >= 0:
        click.echo(format_summary(summary, time.monotonic() - began), err=True)
    if summary.exit_code != EXIT_OK:
        done = "dry run" if dry_run else f"manifest {summary.manifest_key} written"
        raise RunWithWarnings(f"{done} with {len(summary.warnings)} warning(s): some sources "
                              "failed", exit_code=summary.exit_code)


def _open_store_uncollected(config: Config) -> CountingStore:
    """The store, its S3 client made with the cyclic collector off: what is loaded by
    then (the modules, botocore's service model: some 50,000 objects, hardly any
    garbage) lives as long as the process and is frozen, never traversed again.  A
    full collection over it during the client's making cost 40-80 ms of the 1 % run."""
    gc.disable()
    try:
        return open_store(config)
    finally:
        gc.freeze()
        gc.enable()


# The cyclic collector's youngest generation is collected once this many more container
# objects were made than freed (Python's default: 700).  A run's garbage is freed by
# reference counting nearly all of it: a 1M-file initial run's collections found 319
# objects in cycles, yet made 6,400 young, 590 middle and 53 full collections --
# 3.1-4.0 s of the main process, its GIL held (the content workers made 20 each).  At
# 100,000: 19 collections, 3 ms.  Cycles are still collected, after at most this many
# objects more (~10 MB of them); the forked content workers keep the default.
YOUNG_COLLECTION_AFTER = 100_000


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """The run with its youngest generation collected after
    :data:`YOUNG_COLLECTION_AFTER` objects, the collector as it was afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def check_local_paths(config: Config, dry_run: bool) -> None:
    """Fail in one line, before any picker runs, when this user cannot write the
    cache (and its run lock) or the state file, or cannot read the dedup secret:
    typically archive run without root."""
    if config.encryption is not None:
        config.encryption.dedup_secret  # read and checked once, here, before any work
    places = [("cache directory", config.local.cache_dir)]
    if not dry_run:
        places.append(("state file directory", config.local.state_file.parent))
    for what, path in places:
        existing = _first_existing(path)
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            reason = "not a directory" if not existing.is_dir() else "permission denied"
            raise UsageError(
                f"cannot write the {what} {path} ({existing}: {reason}); archive runs as "
                "root (sudo s3archive archive), or set [local] cache_dir and state_file "
                "to paths this user may write")


def _first_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def failed_summary(config: Config, started: str, store: CountingStore | None,
                   exit_code: int) -> ArchiveSummary:
    return ArchiveSummary(run_id="", host=config.host_name, started=started,
                          finished=isoformat(utc_now()), exit_code=exit_code,
                          requests=store.snapshot()["requests"] if store else {})


def format_summary(s: ArchiveSummary, seconds: float | None = None) -> str:
    """The summary on stderr (sizes in KiB/MiB/GiB, as restore's).  A dry run
    says what it would have uploaded and never claims an upload."""
    took = f" in {human.duration(seconds)}" if seconds is not None else ""
    if s.dry_run:
        head = (f"dry run {s.host}/{s.run_id}{took}: nothing uploaded, no manifest written; "
                f"tier {s.tier}, would be locked until {s.retain_until}")
        packs = (f"  {s.chunks_new} new chunks, {s.chunks_reused} reused; would upload "
                 f"{s.packs_uploaded} packs ({human.size(s.bytes_uploaded)}), extend "
                 f"{s.packs_extended}, rewrite {s.packs_rewritten}")
    else:
        head = f"run {s.host}/{s.run_id}{took}: tier {s.tier}, locked until {s.retain_until}"
        packs = (f"  {s.chunks_new} new chunks, {s.chunks_reused} reused; {s.packs_uploaded} "
                 f"packs ({human.size(s.bytes_uploaded)}) uploaded, {s.packs_extended} "
                 f"extended, {s.packs_rewritten} rewritten")
    lines = [
        head,
        f"  {s.files} files ({s.files_unchanged} unchanged), {s.dirs} dirs, {s.symlinks} symlinks, "
        f"{s.others} other entries, {s.snapshots} snapshots",
        f"  {human.size(s.bytes_total)} in files, {human.size(s.bytes_read)} read, "
        f"{human.size(s.bytes_new)} new",
        packs,
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
