"""``fleet``: every host in the bucket, its newest run, and who is stale."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import click

from s3archive import human
from s3archive.cli.context import Repository, with_repository
from s3archive.clock import isoformat, utc_now
from s3archive.archive.run_record import write_atomically
from s3archive.fleet import fleet_view, prometheus_text


@click.command("fleet")
@click.option("--stale-after", "stale_hours", type=click.FloatRange(min=0), default=36.0,
              show_default=True, help="Hours after which a host's newest run is stale.")
@click.option("--prometheus-textfile", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Also write the fleet's metrics to this file (node_exporter).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@with_repository(runs=False)
def fleet_command(repo: Repository, stale_hours: float, prometheus_textfile: Path | None,
                  as_json: bool) -> None:
    """Every host of the bucket: newest run, its age and result, size, new bytes,
    bytes shared with other hosts (deduplicated across the fleet).

    Reads one listing of runs/ and each host's newest run's root object; runs
    with the audit role (no key, no data read).  A run's time is the store's
    (when it was written), not the name its host gave it.  SHARED: bytes of the
    data packs the newest run references that another host's newest run
    references too.  --prometheus-textfile writes the fleet's metrics for one
    auditor host's node_exporter.

    \b
    EXIT STATUS
      0  every host ran within --stale-after
      1  some host is stale, or its newest run cannot be read
      2  usage or configuration error
    """
    now = utc_now()
    views = fleet_view(repo.store, now, timedelta(hours=stale_hours))
    if prometheus_textfile is not None:
        write_atomically(prometheus_textfile, prometheus_text(views, now))
    stale = [v.host for v in views if v.stale]
    unreadable = [v.host for v in views if v.summary is None]
    if as_json:
        click.echo(json.dumps({"generated": isoformat(now), "stale_after_hours": stale_hours,
                               "hosts": [v.to_json() for v in views],
                               "stale": stale, "unreadable": unreadable}, indent=1))
    elif views:
        rows = [[v.host, v.last.run_id, human.date(v.last.last_modified),
                 human.duration(v.age_s) + (" STALE" if v.stale else ""), v.status,
                 v.summary.stats.files if v.summary else "-",
                 human.size(v.summary.stats.bytes_logical) if v.summary else "-",
                 human.size(v.summary.stats.bytes_new) if v.summary else "-",
                 human.size(v.bytes_shared) if v.bytes_shared is not None else "-", v.runs]
                for v in views]
        click.echo(human.table(["HOST", "LAST RUN", "WRITTEN (UTC)", "AGE", "RESULT", "FILES",
                                "SIZE", "NEW", "SHARED", "RUNS"], rows, right=(5, 6, 7, 8, 9)))
    else:
        click.echo("no runs in the bucket", err=True)
    for v in views:
        if v.error:
            click.echo(f"warning: {v.host}/{v.last.run_id}: {v.error}", err=True)
    if stale or unreadable:
        if not as_json:
            click.echo(f"stale hosts (no run for {stale_hours:g} h): "
                       f"{', '.join(stale) or 'none'}", err=True)
        raise click.exceptions.Exit(1)


COMMANDS = [fleet_command]
