"""`s3archive prune`: what lifecycle rules do, for stores that have none."""

from __future__ import annotations

import json
import sys

import click

from s3archive.cli.context import AppContext, pass_app
from s3archive.prune import prune
from s3archive.progress import human_bytes
from s3archive.store.factory import open_store


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="List what would be deleted, delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@pass_app
def prune_command(app: AppContext, dry_run: bool, as_json: bool) -> None:
    """Delete versions whose lock has lapsed and that no live run needs.

    \b
    Only for stores without the lifecycle rules `create-resources` writes;
    needs credentials that may delete (the backup role may not).  A run is
    live while its manifest is locked or under legal hold; every pack it
    references is kept.  Exit 1 if some deletions failed.
    """
    config = app.config()
    result = prune(open_store(config), dry_run=dry_run)
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
                   f"{len(result.deleted)} versions ({human_bytes(result.deleted_bytes)})"
                   + (f", {result.markers_removed} stale delete markers" if not dry_run else ""),
                   err=True)
        for problem in result.problems:
            click.echo(f"  failed: {problem}", err=True)
    sys.exit(1 if result.problems else 0)


COMMANDS = [prune_command]
