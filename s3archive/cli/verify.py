"""``verify``: references, locks and (optionally) data of runs."""

from __future__ import annotations

import json

import click

from s3archive import human
from s3archive.cli.context import Repository, with_repository
from s3archive.errors import CommandFailed, UsageError
from s3archive.repo.catalog import list_runs
from s3archive.verify import Problem, RunVerification, Verifier, VerifyOptions


def _print_text(result: RunVerification, read_data: bool) -> None:
    name = f"{result.host}/{result.run_id}"
    if result.ok:
        lock = (f"locked {result.lock_mode} until {human.date(result.retain_until)} UTC"
                if result.lock_mode else "no lock required")
        data = (f"; {result.chunks_checked} chunks ({human.size(result.bytes_checked)}) "
                f"of {result.packs_read} packs read and hashed" if read_data else "")
        if not result.contents_checked:
            data = "; encrypted: trees and data not checked (give --key)"
        classes = result.storage.describe_packs()
        click.echo(f"ok       {name}: {result.packs} packs present"
                   f"{f' ({classes})' if classes else ''}, {lock}{data}")
        _print_warnings(result)
        return
    click.echo(f"PROBLEM  {name}: {len(result.problems)} problem(s)")
    _print_warnings(result)
    for problem in result.problems:
        click.echo(f"  - {problem.message}")
        if problem.paths:
            shown = ", ".join(human.path(p) for p in problem.paths[:5])
            more = problem.paths_total - min(5, len(problem.paths))
            click.echo(f"    affects {shown}{f' and {more} more' if more > 0 else ''}")


def _print_warnings(result: RunVerification) -> None:
    for message in result.storage.messages():
        click.echo(f"  warning: {message}")


@click.command("verify")
@click.argument("run", required=False)
@click.option("--all", "all_runs", is_flag=True, help="Every run (of --host, or of every host).")
@click.option("--read-data", is_flag=True, help="Download every referenced chunk and check "
              "its SHA-256.")
@click.option("--sample", "sample", type=click.FloatRange(0, 100, min_open=True), default=None,
              metavar="PERCENT", help="With --read-data: read only this share of the packs.")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 64))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@with_repository(keys=True, pool_from="workers")
def verify_command(repo: Repository, run: str | None, all_runs: bool, read_data: bool,
                   sample: float | None, workers: int, as_json: bool) -> None:
    """Check that RUN (default: latest) is whole and locked long enough.

    Every pack version the manifest references must exist with its recorded
    size and be locked in the run's mode (or COMPLIANCE) until at least the
    run's retain-until; the manifest version too.  --read-data also downloads
    the chunks and checks their SHA-256.

    Packs are counted by storage class (the HEADs say it): data packs in
    GLACIER_IR are fine (read without a restore request, at a retrieval fee
    with --read-data); a manifest or metadata object not in STANDARD, and
    anything in GLACIER or DEEP_ARCHIVE (unreadable without a restore
    request), is a warning, which does not change the exit status.

    With --all, --host limits the runs to one host (default: every host).

    \b
    EXIT STATUS
      0  every run is whole
      1  a problem was found (each names the run, the pack and the paths it affects)
      2  usage or configuration error
    """
    if run and all_runs:
        raise UsageError("give a RUN or --all, not both")
    if sample is not None and not read_data:
        raise UsageError("--sample needs --read-data")
    store, host = repo.store, repo.host
    if all_runs:
        runs = list_runs(store, host)
        if not runs:
            raise UsageError("no runs in the bucket" + (f" for host {host}" if host else ""))
    else:
        runs = [repo.run(run or "latest")]
    verifier = Verifier(store, VerifyOptions(read_data=read_data,
                                             sample_percent=sample or 100.0, workers=workers,
                                             identities=tuple(repo.identities)))
    results = []
    try:
        for ref in runs:
            results.append(verifier.verify(ref))
    finally:
        verifier.close()
    for host, problems in verifier.mixing_problems().items():
        last = max((r for r in results if r.host == host), key=lambda r: r.run_id)
        last.problems += [Problem("mixing", text, None, None) for text in problems]
    for result in results:
        if not as_json:
            _print_text(result, read_data)
    bad = [r for r in results if not r.ok]
    if as_json:
        click.echo(json.dumps({"ok": not bad, "runs": [r.to_json() for r in results],
                               "store": store.snapshot()}, indent=1))
    if bad:
        raise CommandFailed(f"{len(results)} run(s) verified, {len(bad)} with problems")
    if not as_json:
        warned = sum(bool(r.storage.warnings) for r in results)
        click.echo(f"{len(results)} run(s) verified, none with problems"
                   + (f", {warned} with storage-class warnings" if warned else ""), err=True)


COMMANDS = [verify_command]
