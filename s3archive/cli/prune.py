"""`s3archive prune`: what lifecycle rules do, for stores that have none."""

from __future__ import annotations

import json

import click

from s3archive import human
from s3archive.cli.context import Repository, with_repository
from s3archive.errors import CommandFailed
from s3archive.prune import prune


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="List what would be deleted, delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@with_repository(runs=False)
def prune_command(repo: Repository, dry_run: bool, as_json: bool) -> None:
    """Delete versions whose lock has lapsed and that no live run needs.

    \b
    Only for stores without the lifecycle rules `create-resources` writes;
    needs credentials that may delete (the backup role may not).  A run is
    live while its manifest is locked or under legal hold; every pack it
    references is kept.

    \b
    EXIT STATUS
      0  ok;  1  some deletions failed (each is listed);  2  usage or configuration error
    """
    result = prune(repo.store, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({
            "dry_run": result.dry_run, "live_runs": result.live_runs,
            "lapsed_runs": result.lapsed_runs, "kept_versions": result.kept_versions,
            "deleted": [{"key": k, "version_id": v} for k, v in result.deleted],
            "deleted_bytes": result.deleted_bytes, "markers_removed": result.markers_removed,
            "problems": result.problems}))
    else:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{result.live_runs} live runs, {result.lapsed_runs} lapsed; "
                   f"{result.kept_versions} pack versions still needed; {verb} "
                   f"{len(result.deleted)} versions ({human.size(result.deleted_bytes)})"
                   + (f", {result.markers_removed} stale delete markers" if not dry_run else ""),
                   err=True)
        for problem in result.problems:
            click.echo(f"  failed: {problem}", err=True)
    if result.problems:
        raise CommandFailed(f"{len(result.problems)} deletion(s) failed")


COMMANDS = [prune_command]
