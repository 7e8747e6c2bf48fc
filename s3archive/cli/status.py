"""``s3archive status``: the last run, the timer, the cache and the bucket."""

from __future__ import annotations

import json
from typing import Any

import click

from s3archive import human
from s3archive.cli.context import AppContext, pass_app
from s3archive.clock import parse_iso
from s3archive.errors import CommandFailed
from s3archive.status import gather_status, status_ok
from s3archive.store.factory import open_store

SHOWN_WARNINGS = 20


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@pass_app
def status_command(app: AppContext, as_json: bool) -> None:
    """What the last run of this host did, when the timer runs next, the
    local cache and the bucket's Object Lock configuration.

    Each part this user cannot read (state file, cache, credentials without
    root) is named; the rest is shown.

    \b
    EXIT STATUS
      0  the last run wrote a manifest (warnings included) and the bucket answered
      1  no run recorded, the last run failed, or a part could not be read
      2  usage or configuration error
    """
    config = app.config()
    status = gather_status(config, lambda: open_store(config))
    if as_json:
        click.echo(json.dumps(status, indent=1))
    else:
        click.echo(format_status(status))
    if status["unreadable"]:
        raise CommandFailed("could not read " + "; ".join(status["unreadable"]))
    if not status_ok(status):
        raise CommandFailed(_unhealthy(status))


def _unhealthy(status: dict[str, Any]) -> str:
    last = status["last_run"]
    if last is None:
        return "no run recorded yet"
    if last.get("result") == "failed":
        return f"the last run failed (exit {last.get('exit_code')})"
    return "the bucket could not be read"


def _when(text: str | None) -> str:
    return f"{human.date(parse_iso(text))} UTC" if text else "-"


def format_status(status: dict[str, Any]) -> str:
    lines = [f"host {status['host']} (config {status['config']})"]
    last = status["last_run"]
    if last is None:
        lines.append(f"last run:   none recorded ({status['state_file']} is missing)")
    elif last.get("result") is None:
        lines.append(f"last run:   UNKNOWN: {last['error']}")
    else:
        took = (parse_iso(last["finished"]) - parse_iso(last["started"])).total_seconds() \
            if last.get("finished") and last.get("started") else None
        warnings = last["warnings"]
        result = {"ok": "ok", "warnings": f"ok with {len(warnings)} warnings",
                  "failed": f"FAILED (exit {last['exit_code']})"}.get(last["result"],
                                                                    str(last["result"]))
        lines.append(f"last run:   {_when(last.get('finished'))}, {result}, "
                     f"took {human.duration(took)}"
                     + (f", run {last['run_id']}" if last.get("run_id") else ""))
        if last.get("error"):
            lines.append(f"  error:    {last['error']}")
        if last["result"] != "failed":
            lines.append(f"  size:     {last['files']} files, {human.size(last['bytes_total'])}; "
                         f"{human.size(last['bytes_new'])} new, "
                         f"{human.size(last['bytes_uploaded'])} uploaded, "
                         f"{sum((last.get('requests') or {}).values())} requests")
            lines.append(f"  locked:   {last['tier']} until {_when(last.get('retain_until'))}")
        for warning in warnings[:SHOWN_WARNINGS]:
            lines.append(f"  warning:  {warning}")
        if len(warnings) > SHOWN_WARNINGS:
            lines.append(f"  ... and {len(warnings) - SHOWN_WARNINGS} more")
        if last["result"] == "failed":
            lines.append(f"  last success: {_when(last.get('last_success'))}")
    timer = status["timer"]
    if timer["systemd"]:
        lines.append(f"timer:      next run {timer['next_run'] or '-'}"
                     + (f", last triggered {timer['last_trigger']}" if timer["last_trigger"]
                        else ""))
    if timer.get("note"):
        lines.append(f"timer:      {timer['note']}" if not timer["systemd"]
                     else f"  note:     {timer['note']}")
    cache = status["cache"]
    if cache.get("error"):
        lines.append(f"cache:      UNKNOWN: {cache['error']}")
    elif cache["exists"]:
        lines.append(f"cache:      {cache['path']}, {human.size(cache['size'])}, "
                     f"modified {_when(cache['modified'])}"
                     + (f"; {cache['files']} files, {cache['chunks']} chunks, "
                        f"{cache['packs']} packs" if "files" in cache else ""))
    else:
        lines.append(f"cache:      {cache['path']} (missing)")
    if cache.get("note"):
        lines.append(f"  note:     {cache['note']}")
    bucket = status["bucket"]
    if "error" in bucket:
        lines.append(f"bucket:     {bucket['location']}: ERROR: {bucket['error']}")
    else:
        lock = bucket["object_lock"]
        default = (f"default {lock['default_mode']} "
                   + (f"{lock['default_days']} days" if lock["default_days"]
                      else f"{lock['default_years']} years")
                   if lock["default_mode"] else "no default retention")
        lines.append(f"bucket:     {bucket['location']}: Object Lock "
                     f"{'enabled, ' + default if lock['enabled'] else 'NOT enabled'}")
        latest = bucket["latest_run"]
        lines.append(f"  runs:     {bucket['runs']} of this host"
                     + (f", newest {latest['run_id']}" if latest else ""))
    if bucket.get("note"):
        lines.append(f"  note:     {bucket['note']}")
    return "\n".join(lines)


COMMANDS = [status_command]
