"""``hold`` and ``release``: legal hold on a run and everything it references."""

from __future__ import annotations

import json

import click

from s3archive.cli.context import Repository, with_repository
from s3archive.hold import HoldResult, hold_run, release_run

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
@json_option
@with_repository()
def hold_command(repo: Repository, run: str, as_json: bool) -> None:
    """Put RUN under legal hold: its manifest and every pack version it references.

    \b
    EXIT STATUS
      0  ok;  1  RUN not found, or a request failed;  2  usage or configuration error
    """
    _report(hold_run(repo.store, repo.run(run)), as_json)


@click.command("release")
@click.argument("run")
@json_option
@with_repository()
def release_command(repo: Repository, run: str, as_json: bool) -> None:
    """Release the legal hold of RUN.

    Pack versions that another run under legal hold still references keep
    their hold (and are listed).

    \b
    EXIT STATUS
      0  ok;  1  RUN not found, or a request failed;  2  usage or configuration error
    """
    _report(release_run(repo.store, repo.run(run)), as_json)


COMMANDS = [hold_command, release_command]
