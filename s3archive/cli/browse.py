"""``runs``, ``ls``, ``show`` and ``diff``: tables for terminals, ``--json`` for scripts."""

from __future__ import annotations

import json
import os

import click

from s3archive import human
from s3archive.cli.context import AppContext, pass_app
from s3archive.errors import UsageError
from s3archive.browse import (diff_manifests, entry_json, open_run, run_summaries,
                               select_entries, show_json, summarize)
from s3archive.format.model import FILE
from s3archive.store.factory import open_store

host_option = click.option("--host", default=None,
                           help="Host whose runs RUN names (default: this host for "
                                "'latest', any host for an id).")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON on stdout instead of a table.")


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


@click.command("runs")
@click.option("--host", default=None, help="Only this host's runs (default: this host).")
@click.option("--all-hosts", is_flag=True, help="Runs of every host in the bucket.")
@json_option
@pass_app
def runs_command(app: AppContext, host: str | None, all_hosts: bool, as_json: bool) -> None:
    """List the runs in the bucket (every manifest version under runs/), oldest first."""
    if host and all_hosts:
        raise UsageError("--host and --all-hosts are exclusive")
    config = app.config()
    store = open_store(config)
    summaries = run_summaries(store, None if all_hosts else (host or config.host_name))
    if as_json:
        click.echo(json.dumps([s.to_json() for s in summaries], indent=1))
        return
    if not summaries:
        click.echo("no runs", err=True)
        return
    rows = [[s.run_id, s.host, human.date(s.started), human.duration(s.duration_s), s.tier,
             human.day(s.retain_until), s.lock_mode or "none", _yes_no(s.legal_hold),
             s.files, human.size(s.logical_bytes), human.size(s.new_bytes),
             s.status if not s.warnings else f"{s.status} ({s.warnings})"]
            for s in summaries]
    click.echo(human.table(["RUN", "HOST", "STARTED (UTC)", "TOOK", "TIER", "RETAIN UNTIL",
                            "LOCK", "HOLD", "FILES", "SIZE", "NEW", "STATUS"], rows,
                           right=(3, 8, 9, 10)))
    for s in summaries:
        if s.error:
            click.echo(f"warning: {s.host}/{s.run_id}: {s.error}", err=True)
        if s.time_problem:
            click.echo(f"warning: {s.host}/{s.run_id}: {s.time_problem}; 'latest' ignores it",
                       err=True)


@click.command("ls")
@click.argument("run")
@click.argument("path", required=False)
@host_option
@json_option
@pass_app
def ls_command(app: AppContext, run: str, path: str | None, host: str | None,
               as_json: bool) -> None:
    """List the entries of RUN (below PATH), like ls -l."""
    config = app.config()
    store = open_store(config)
    _, manifest = open_run(store, run, host, config.host_name)
    entries = list(select_entries(manifest, os.fsencode(path) if path else None))
    if path and not entries:
        raise UsageError(f"{path}: not in this run")
    files = {e.path: e for e in manifest.entries if e.kind == FILE}
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry_json(entry)))
        return
    rows = []
    for e in entries:
        size = e.size if e.kind == FILE else files[e.target].size \
            if e.kind == "hardlink" and e.target in files else ""
        name = human.path(e.path)
        if e.kind == "symlink" and e.target is not None:
            name += " -> " + human.path(e.target)
        elif e.kind == "hardlink" and e.target is not None:
            name += " => " + human.path(e.target)
        elif e.rdev is not None:
            size = f"{e.rdev[0]}, {e.rdev[1]}"
        flags = ("+" if e.acl_access or e.acl_default else "") + ("@" if e.xattrs else "")
        rows.append([human.mode_string(e.kind, e.mode) + flags, e.user or e.uid,
                     e.group or e.gid, size, human.mtime(e.mtime_ns), name])
    click.echo(human.table(["MODE", "USER", "GROUP", "SIZE", "MODIFIED (UTC)", "PATH"], rows,
                           right=(3,)))


@click.command("show")
@click.argument("run")
@host_option
@json_option
@pass_app
def show_command(app: AppContext, run: str, host: str | None, as_json: bool) -> None:
    """Header, statistics, warnings and snapshots (with restore commands) of RUN."""
    config = app.config()
    store = open_store(config)
    ref, manifest = open_run(store, run, host, config.host_name)
    hold = store.head(ref.key, ref.version_id).legal_hold
    summary = summarize(manifest, ref, hold)
    data = show_json(ref, manifest, summary)
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    h = manifest.header
    lines = [
        ("Run", f"{h.host}/{h.run_id}"),
        ("Manifest", f"{ref.key} (version {ref.version_id})"),
        ("Tool", h.tool or "-"),
        ("Started", human.date(h.started) + " UTC"),
        ("Finished", f"{human.date(manifest.trailer.finished)} UTC "
                     f"(took {human.duration(summary.duration_s)})"),
        ("Tier", h.tier),
        ("Lock", f"{h.lock_mode or 'none'} until {human.date(h.retain_until)} UTC"),
        ("Legal hold", _yes_no(hold)),
        ("Status", summary.status),
        ("Files", f"{summary.files} ({human.size(summary.logical_bytes)})"),
        ("New data", f"{human.size(summary.new_bytes)} "
                     f"({human.size(summary.uploaded_bytes)} uploaded)"),
        ("Packs", f"{len(manifest.packs)} ({human.size(data['pack_bytes'])})"),
    ]
    width = max(len(k) for k, _ in lines) + 1
    for key, value in lines:
        click.echo(f"{key + ':':<{width}} {value}")
    if manifest.trailer.counts:
        click.echo("\nCounts:")
        for key, value in sorted(manifest.trailer.counts.items()):
            click.echo(f"  {key:<20} {value}")
    if manifest.trailer.stats:
        click.echo("\nStatistics:")
        for key, value in sorted(manifest.trailer.stats.items()):
            shown = human.size(value) if key.startswith("bytes") and isinstance(value, int) \
                else value
            click.echo(f"  {key:<20} {shown}")
    click.echo(f"\nWarnings: {len(manifest.trailer.warnings) or 'none'}")
    for w in manifest.trailer.warnings:
        where = f" {human.path(w.path)}:" if w.path else ""
        click.echo(f"  [{w.source}]{where} {w.message}")
    click.echo(f"\nSnapshots: {len(manifest.snapshots) or 'none'}")
    for s in manifest.snapshots:
        status = s.status + (f" (exit {s.exit_status})" if s.exit_status else "")
        click.echo(f"  {s.name}: {human.size(s.size)}, {status}, "
                   f"took {human.duration(s.duration_s)}")
        if s.description:
            for line in s.description.rstrip("\n").splitlines():
                click.echo(f"      {line}")
        restore = s.restore_through or "(none recorded: use cat-snapshot)"
        click.echo(f"      restore through: {restore}")


_MARKS = {"added": "+", "removed": "-", "content": "M", "metadata": "U"}


@click.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@host_option
@json_option
@pass_app
def diff_command(app: AppContext, run_a: str, run_b: str, host: str | None,
                 as_json: bool) -> None:
    """What changed from RUN_A to RUN_B.

    \b
    +  added          -  removed
    M  content changed (and maybe metadata)
    U  only metadata changed (mode, owner, times, ACLs, xattrs)
    """
    config = app.config()
    store = open_store(config)
    _, old = open_run(store, run_a, host, config.host_name)
    _, new = open_run(store, run_b, host, config.host_name)
    changes = diff_manifests(old, new)
    if as_json:
        for change in changes:
            click.echo(json.dumps(change.to_json()))
        return
    for change in changes:
        detail = f"  ({', '.join(change.fields)})" if change.fields else ""
        click.echo(f"{_MARKS[change.change]}  {human.path(change.path)}{detail}")
    counts = {kind: sum(1 for c in changes if c.change == kind) for kind in _MARKS}
    click.echo(f"{counts['added']} added, {counts['removed']} removed, "
               f"{counts['content']} changed, {counts['metadata']} metadata only", err=True)


COMMANDS = [runs_command, ls_command, show_command, diff_command]
