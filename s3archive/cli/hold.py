"""``hold`` and ``release``: legal hold on a run and everything it references."""

from __future__ import annotations

import json

import click

from s3archive.cli.context import AppContext, pass_app
from s3archive.browse import pick_run
from s3archive.hold import HoldResult, hold_run, release_run
from s3archive.store.factory import open_store

host_option = click.option("--host", default=None,
                           help="Host whose runs RUN names (default: this host for "
                                "'latest', any host for an id).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")


def _report(result: HoldResult, as_json: bool) -> None:
    name = f"{result.run.host}/{result.run.run_id}"
    if as_json:
        click.echo(json.dumps({"host": result.run.host, "run_id": result.run.run_id,
                               "legal_hold": result.on, "packs_changed": result.packs_changed,
                               "packs_kept": result.kept}))
        return
    if result.on:
        click.echo(f"{name}: legal hold set on the manifest and {result.packs_changed} packs")
        return
    click.echo(f"{name}: legal hold released on the manifest and {result.packs_changed} packs")
    for key, runs in sorted(result.kept.items()):
        click.echo(f"  kept on {key}: still needed by held run(s) {', '.join(runs)}", err=True)


@click.command("hold")
@click.argument("run")
@host_option
@json_option
@pass_app
def hold_command(app: AppContext, run: str, host: str | None, as_json: bool) -> None:
    """Put RUN under legal hold: its manifest and every pack version it references."""
    config = app.config()
    store = open_store(config)
    _report(hold_run(store, pick_run(store, run, host, config.host_name)), as_json)


@click.command("release")
@click.argument("run")
@host_option
@json_option
@pass_app
def release_command(app: AppContext, run: str, host: str | None, as_json: bool) -> None:
    """Release the legal hold of RUN.

    Pack versions that another run under legal hold still references keep
    their hold (and are listed).
    """
    config = app.config()
    store = open_store(config)
    _report(release_run(store, pick_run(store, run, host, config.host_name)), as_json)


COMMANDS = [hold_command, release_command]
