"""``find`` and ``history``: which runs hold a path, and one path across runs."""

from __future__ import annotations

import json
import os
import click

from s3archive import human
from s3archive.cli.context import Repository, with_repository
from s3archive.errors import UsageError
from s3archive.find import Opener, Skip, find, history
from s3archive.format.model import Manifest
from s3archive.repo.catalog import RunRef, first_versions, list_runs
from s3archive.repo.run_access import open_run
from s3archive.repo.run_tree import RunTree
from s3archive.restore.plan import normalise_selection


def _opener(repo: Repository) -> Opener:
    def opener(run: RunRef, whole_packs: bool) -> RunTree | Manifest:
        return open_run(repo.store, run, whole_packs=whole_packs, identities=repo.identities)
    return opener


def _skipper(skipped: list[str]) -> Skip:
    def skip(run: RunRef, why: str) -> None:  # a damaged or hostile run: named, the rest searched
        skipped.append(f"{run.host}/{run.run_id}: {why}")
    return skip


def _select_runs(runs: list[RunRef], newest: int | None, oldest: int | None) -> list[RunRef]:
    """Runs newest first (one version per run: its first), limited as asked."""
    ordered = sorted(first_versions(runs), key=lambda r: (r.run_id, r.host), reverse=True)
    if oldest is not None:
        ordered = ordered[-oldest:] if oldest else []
    if newest is not None:
        ordered = ordered[:newest]
    return ordered


@click.command("find")
@click.argument("patterns", nargs=-1, required=True)
@click.option("--host", default=None, help="Search this host's runs (default: this host).")
@click.option("--all-hosts", is_flag=True, help="Search the runs of every host.")
@click.option("--newest", type=click.IntRange(min=1), default=None,
              help="Search only the N newest runs.")
@click.option("--oldest", type=click.IntRange(min=1), default=None,
              help="Search only the N oldest runs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@with_repository(runs=False, keys=True)
def find_command(repo: Repository, patterns: tuple[str, ...], host: str | None,
                 all_hosts: bool, newest: int | None, oldest: int | None,
                 as_json: bool) -> None:
    """Every run holding a path that matches a PATTERN, newest run first.

    A pattern without '/' matches an entry's name ('*.conf'); with '/' it
    matches the whole path ('/etc/**/ssh*', or 'nginx/*.conf' at any depth).
    '*' and '?' stay within one path component, '**' crosses them.  Quote
    patterns so the shell does not expand them.

    \b
    EXIT STATUS
      0  something matched;  1  nothing matched;  2  usage or configuration error
    """
    if host and all_hosts:
        raise UsageError("--host and --all-hosts are exclusive")
    store = repo.store
    runs = _select_runs(list_runs(store, None if all_hosts else (host or repo.config.host_name)),
                        newest, oldest)
    skipped: list[str] = []
    hits = find(runs, _opener(repo), list(patterns), _skipper(skipped))
    for problem in skipped:
        click.echo(f"warning: skipped run {problem}", err=True)
    if as_json:
        click.echo(json.dumps({
            "runs_searched": len(runs), "runs_skipped": len(skipped),
            "matches": [{"host": h.run.host, "run_id": h.run.run_id,
                         **human.json_path(h.path), "kind": h.kind,
                         "size": h.size, "mtime_ns": h.mtime_ns}
                        for h in hits]}, indent=1))
    elif hits:
        rows = [[h.run.run_id, h.run.host, h.kind, human.size(h.size),
                 human.mtime(h.mtime_ns), human.path(h.path)] for h in hits]
        click.echo(human.table(["RUN", "HOST", "KIND", "SIZE", "MTIME (UTC)", "PATH"], rows,
                               right=(3,)))
    else:
        click.echo(f"no match in {len(runs)} run(s)", err=True)
    if not hits:
        raise click.exceptions.Exit(1)


@click.command("history")
@click.argument("path")
@click.option("--host", default=None, help="Host whose runs to look at (default: this host).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@with_repository(runs=False, keys=True)
def history_command(repo: Repository, path: str, host: str | None, as_json: bool) -> None:
    """PATH in every run of the host, oldest first: size, mtime, and whether
    its content changed since the run before (from chunk hashes; nothing is
    downloaded but the runs' metadata).

    \b
    EXIT STATUS
      0  the path is in at least one run;  1  in none;  2  usage or configuration error
    """
    wanted = normalise_selection(os.fsencode(path))
    store = repo.store
    runs = list(reversed(_select_runs(list_runs(store, host or repo.config.host_name),
                                      None, None)))
    skipped: list[str] = []
    versions = history(runs, _opener(repo), wanted, _skipper(skipped))
    for problem in skipped:
        click.echo(f"warning: skipped run {problem}", err=True)
    present = [v for v in versions if v.entry is not None]
    if as_json:
        click.echo(json.dumps({
            **human.json_path(wanted), "runs": [
                {"host": v.run.host, "run_id": v.run.run_id, "present": v.entry is not None,
                 "kind": v.entry.kind if v.entry else None,
                 "size": v.entry.size if v.entry else None,
                 "mtime_ns": v.entry.mtime_ns if v.entry else None,
                 "content": v.content, "changed": v.changed} for v in versions]}, indent=1))
    else:
        rows = [[v.run.run_id, "yes" if v.entry else "no",
                 human.size(v.entry.size) if v.entry else "-",
                 human.mtime(v.entry.mtime_ns) if v.entry else "-",
                 (v.content or "")[:12] or "-",
                 "changed" if v.changed else ""] for v in versions]
        click.echo(human.table(["RUN", "PRESENT", "SIZE", "MTIME (UTC)", "CONTENT", ""], rows,
                               right=(2,)))
    if not present:
        if not as_json:
            click.echo(f"{human.path(wanted)} is in none of {len(versions)} run(s)", err=True)
        raise click.exceptions.Exit(1)


COMMANDS = [find_command, history_command]
