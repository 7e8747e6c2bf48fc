"""``runs``, ``ls``, ``show`` and ``diff``: tables for terminals, ``--json`` for scripts.

Every ``--json`` here prints one JSON document on stdout (README, "JSON output").
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from s3archive import human
from s3archive.browse import (FIELD_LABELS, RunSummary, diff_runs, entry_json, run_json,
                              run_summaries, select_entries, show_json, summarize)
from s3archive.cli.context import Repository, with_repository
from s3archive.repo.catalog import RECORD
from s3archive.errors import UsageError
from s3archive.format.model import FILE

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document on stdout instead of a table.")


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def _locked_until(s: RunSummary) -> str:
    if not s.lock_mode:
        return "not locked"
    return f"{human.day(s.retain_until)} {s.lock_mode[:1]}"  # G or C


def _run_status(s: RunSummary) -> str:
    if s.error or s.time_problem:
        return s.status  # "unreadable", "untrusted time"
    count = len(s.stats.warnings)
    return f"{count} warning{'s' if count != 1 else ''}" if count else "ok"


def runs_table(summaries: list[RunSummary], all_hosts: bool) -> str:
    headers = ["RUN", *(["HOST"] if all_hosts else []), "TOOK", "TIER", "LOCKED UNTIL",
               "HOLD", "FILES", "SIZE", "NEW", "STATUS"]
    rows = [[s.run_id, *([s.host] if all_hosts else []), human.duration(s.duration_s), s.tier,
             _locked_until(s), _yes_no(s.legal_hold), s.stats.files,
             human.size(s.stats.bytes_logical), human.size(s.stats.bytes_new), _run_status(s)]
            for s in summaries]
    first_number = headers.index("FILES")
    return human.table(headers, rows, right=(headers.index("TOOK"), first_number,
                                             first_number + 1, first_number + 2))


@click.command("runs")
@click.option("--host", default=None, metavar="HOST",
              help="Only this host's runs (default: this host).")
@click.option("--all-hosts", is_flag=True, help="Runs of every host in the bucket.")
@json_option
@with_repository(runs=False)
def runs_command(repo: Repository, host: str | None, all_hosts: bool, as_json: bool) -> None:
    """List the runs in the bucket (every manifest version under runs/), oldest first.

    RUN is the run's start in UTC; LOCKED UNTIL is the manifest's retain-until
    and its mode (G governance, C compliance); HOLD its current legal hold.
    The table fits 100 columns; --all-hosts adds a HOST column.

    \b
    EXIT STATUS
      0  ok;  1  the bucket could not be read;  2  usage or configuration error
    """
    if host and all_hosts:
        raise UsageError("--host and --all-hosts are exclusive")
    summaries = run_summaries(repo.store, None if all_hosts else (host or repo.config.host_name))
    if as_json:
        click.echo(json.dumps([s.to_json() for s in summaries], indent=1))
        return
    if not summaries:
        click.echo("no runs", err=True)
        return
    click.echo(runs_table(summaries, all_hosts))
    for s in summaries:
        if s.error:
            click.echo(f"s3archive: warning: {s.host}/{s.run_id}: {s.error}", err=True)
        if s.time_problem:
            click.echo(f"s3archive: warning: {s.host}/{s.run_id}: {s.time_problem}; "
                       "'latest' ignores it", err=True)


@click.command("ls")
@click.argument("run")
@click.argument("path", required=False)
@json_option
@with_repository(keys=True)
def ls_command(repo: Repository, run: str, path: str | None, as_json: bool) -> None:
    """List the entries of RUN (below PATH), like ls -l.

    \b
    EXIT STATUS
      0  ok;  1  RUN not found or unreadable;  2  usage error (PATH not in RUN)
    """
    ref, manifest = repo.open_run(run, [os.fsencode(path)] if path else None)
    entries = list(select_entries(manifest, os.fsencode(path) if path else None))
    if path and not entries:
        raise UsageError(f"{path}: not in this run")
    if as_json:
        click.echo(json.dumps({**run_json(ref), "path": path or "/",
                               "entries": [entry_json(e) for e in entries]}, indent=1))
        return
    files = {e.path: e for e in manifest.entries if e.kind == FILE}
    rows = []
    for e in entries:
        size: Any = e.size if e.kind == FILE else files[e.target].size \
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


# ``show``: the figures of a run under the words a reader uses.
STAT_LABELS = {
    "files": "Files", "dirs": "Directories", "symlinks": "Symbolic links",
    "others": "Other entries", "snapshots": "Snapshots", "warnings": "Warnings",
    "files_unchanged": "Files unchanged", "bytes_total": "Size of files",
    "bytes_snapshots": "Size of snapshots", "bytes_read": "Data read", "bytes_new": "New data",
    "bytes_uploaded": "Uploaded", "chunks_new": "New chunks", "chunks_reused": "Reused chunks",
    "packs_uploaded": "Packs uploaded", "packs_extended": "Packs extended",
    "packs_rewritten": "Packs rewritten", "sockets_skipped": "Sockets skipped",
}


def stat_label(key: str) -> str:
    """A label for a figure; one this version does not know is spelled out."""
    return STAT_LABELS.get(key) or key.replace("_", " ").capitalize()


@click.command("show")
@click.argument("run")
@json_option
@with_repository(keys=True)
def show_command(repo: Repository, run: str, as_json: bool) -> None:
    """Header, figures, warnings and snapshots (with restore commands) of RUN.

    \b
    EXIT STATUS
      0  ok;  1  RUN not found or unreadable;  2  usage error
    """
    ref, manifest = repo.open_run(run, part=RECORD)
    hold = repo.store.head(ref.key, ref.version_id).legal_hold
    summary = summarize(manifest, ref, hold)
    data = show_json(ref, manifest, summary)
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    h = manifest.header
    stats = summary.stats
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
        ("Files", f"{stats.files} ({human.size(stats.bytes_total)})"),
        ("New data", f"{human.size(stats.bytes_new)} "
                     f"({human.size(stats.bytes_uploaded)} uploaded)"),
        ("Packs", f"{len(manifest.packs)} ({human.size(data['pack_bytes'])})"),
    ]
    width = max(len(k) for k, _ in lines) + 1
    for key, value in lines:
        click.echo(f"{key + ':':<{width}} {value}")
    figures = {**manifest.trailer.counts, **manifest.trailer.stats}
    if figures:
        click.echo("\nFigures recorded by the run:")
        shown = [(stat_label(k), human.size(v) if k.startswith("bytes") and isinstance(v, int)
                  else v) for k, v in figures.items()]
        label_width = max(len(label) for label, _ in shown) + 1
        for label, value in sorted(shown, key=lambda item: _figure_order(item[0])):
            click.echo(f"  {label + ':':<{label_width}} {value}")
    click.echo(f"\nWarnings: {len(manifest.trailer.warnings) or 'none'}")
    for w in manifest.trailer.warnings:
        where = f" {human.path(w.path)}:" if w.path else ""
        click.echo(f"  [{w.source}]{where} {w.message}")
    click.echo(f"\nSnapshots: {len(manifest.snapshots) or 'none'}")
    for snap in manifest.snapshots:
        status = snap.status + (f" (exit {snap.exit_status})" if snap.exit_status else "")
        click.echo(f"  {snap.name}: {human.size(snap.size)}, {status}, "
                   f"took {human.duration(snap.duration_s)}")
        if snap.description:
            for line in snap.description.rstrip("\n").splitlines():
                click.echo(f"      {line}")
        restore = snap.restore_through or "(none recorded: use cat-snapshot)"
        click.echo(f"      restore through: {restore}")


def _figure_order(label: str) -> tuple[int, str]:
    order = list(STAT_LABELS.values())
    return (order.index(label), "") if label in order else (len(order), label)


_MARKS = {"added": "+", "removed": "-", "content": "M", "metadata": "U"}


@click.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@json_option
@with_repository(keys=True)
def diff_command(repo: Repository, run_a: str, run_b: str, as_json: bool) -> None:
    """What changed from RUN_A to RUN_B.

    \b
    +  added          -  removed
    M  content changed (and maybe metadata)
    U  only metadata changed (mode, owner, times, ACLs, xattrs)

    \b
    EXIT STATUS
      0  ok (whether or not something changed);  1  a run not found or
      unreadable;  2  usage error
    """
    ref_a, ref_b = repo.run(run_a), repo.run(run_b)
    # printed as found (two runs that differ in every file: no list of the changes)
    counts = dict.fromkeys(_MARKS, 0)
    if as_json:  # one document, its changes streamed, the counts after them
        click.echo(json.dumps({"from": run_json(ref_a), "to": run_json(ref_b)})[:-1]
                   + ', "changes": [')
        for number, change in enumerate(diff_runs(repo.store, ref_a, ref_b, repo.identities)):
            counts[change.change] += 1
            click.echo((",\n" if number else "") + json.dumps(change.to_json()), nl=False)
        click.echo(f'], "counts": {json.dumps(counts)}}}')
        return
    for change in diff_runs(repo.store, ref_a, ref_b, repo.identities):
        counts[change.change] += 1
        what = ", ".join(FIELD_LABELS.get(f, f) for f in change.fields)
        detail = f"  ({what} changed)" if what else ""
        click.echo(f"{_MARKS[change.change]}  {human.path(change.path)}{detail}")
    click.echo(f"{counts['added']} added, {counts['removed']} removed, "
               f"{counts['content']} changed, {counts['metadata']} metadata only", err=True)


COMMANDS = [runs_command, ls_command, show_command, diff_command]
