"""``s3archive cost``: storage by class, requests of the last runs, a monthly estimate."""

from __future__ import annotations

import json

import click

from s3archive import human
from s3archive.cli.context import Repository, with_repository
from s3archive.cost import KINDS, estimate


@click.command("cost")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@with_repository(runs=False)
def cost_command(repo: Repository, as_json: bool) -> None:
    """What the bucket costs, and a monthly estimate.

    Storage by class and kind (every version counted; with --cold-after,
    data packs move to GLACIER_IR, whose reads also pay a retrieval fee per
    GB, shown with what reading all of it once costs), live runs, the requests of
    this host's last runs, and a monthly estimate from the [cost] price
    table of the configuration (default: S3 Standard list prices,
    us-east-1).  The first run's upload is a one-off, not monthly growth:
    growth is estimated from the runs after it.  Costs a few LIST requests
    and one GET per manifest.

    \b
    EXIT STATUS
      0  ok;  1  the bucket could not be read;  2  usage or configuration error
    """
    figures = estimate(repo.config, repo.store)
    if as_json:
        click.echo(json.dumps(figures, indent=1))
        return
    cur = figures["currency"]
    click.echo(f"{figures['location']} (measured {figures['measured']})")
    classes = figures["storage"]["classes"]
    # Kinds the bucket holds (packs and manifests always: format 1's columns).
    kinds = [k for k in KINDS if k in ("packs", "manifests")
             or any(entry[k] for entry in classes.values())]
    rows = [[name, entry["objects"], human.size(entry["bytes"]),
             *(human.size(entry[k]) for k in kinds), human.size(entry["noncurrent"]),
             f"{entry['price_gb_month']:g}", f"{entry['month']:.4f}"]
            for name, entry in sorted(classes.items())]
    if rows:
        click.echo(human.table(["CLASS", "VERSIONS", "STORED", *(k.upper() for k in kinds),
                                "NONCURRENT", f"{cur}/GB-MONTH", f"{cur}/MONTH"], rows,
                               right=tuple(range(1, len(kinds) + 6))))
    else:
        click.echo("storage: the bucket holds nothing under this prefix")
    for name, entry in sorted(classes.items()):
        if entry["retrieval_gb"] and entry["bytes"]:
            click.echo(f"  {name}: every GB read (restore, verify --read-data, cat, export, "
                       f"mount) also costs {cur} {entry['retrieval_gb']:g} in retrieval; "
                       f"reading all {human.size(entry['bytes'])} once: "
                       f"{cur} {entry['retrieval_all']:.2f}")
    runs = figures["runs"]
    click.echo(f"runs: {runs['live']} live (still locked) of {runs['manifests']} manifests"
               + (" — " + ", ".join(f"{h} {n}" for h, n in sorted(runs["by_host"].items()))
                  if runs["by_host"] else ""))
    recent = figures["recent_runs"]
    if recent:
        click.echo(f"last {len(recent)} runs of this host:")
        click.echo(human.table(
            ["RUN", "RESULT", "REQUESTS", "UPLOADED", f"{cur}"],
            [[(r["run_id"] or "(failed)") + (" (first)" if r["initial_upload"] else ""),
              r["result"], r["total_requests"],
              human.size(r["bytes_uploaded"]), f"{r['cost']:.6f}"] for r in recent],
            right=(2, 3, 4)))
    else:
        click.echo("no run history on this host yet (archive records it next to the state file)")
    month = figures["monthly"]
    prices = figures["prices"]
    click.echo(f"monthly estimate: {cur} {month['total']:.2f} = storage {month['storage']:.2f} "
               f"+ requests {month['requests']:.2f} ({month['requests_per_run']:g} requests a "
               f"run x {prices['runs_per_month']:g} runs; PUT/LIST {prices['put_per_1000']:g}, "
               f"GET {prices['get_per_1000']:g} per 1000)")
    if month["requests_from_initial_upload"]:
        click.echo("  requests: only the first run is recorded, and it uploaded everything: "
                   "later runs make fewer")
    growth = month["uploaded_per_month_bytes"]
    if growth is None:
        click.echo("  storage growth: not known until a run after the first (the first run "
                   "uploads everything once; that is not a monthly rate)")
    else:
        click.echo(f"  storage grows by up to {human.size(growth)} a month (runs after the "
                   "first) until the oldest runs' locks lapse and lifecycle expires what they "
                   "alone held")


COMMANDS = [cost_command]
