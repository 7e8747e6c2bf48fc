"""``s3archive demo``: the daily cycle against an embedded S3 endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import click

from s3archive.errors import CommandFailed, UsageError


@click.command("demo")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Work in DIR (empty or missing) and leave it there: sample "
              "data, config root, cache, restored trees.")
@click.option("--serve", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, metavar="DIR", help="Bring back the S3 endpoint of a demo kept "
              "in DIR, with its bucket, until Ctrl-C; then try runs, ls, diff, restore with "
              "--config DIR/root/etc/s3archive/config.toml.")
@click.option("--json", "as_json", is_flag=True,
              help="Narrate on stderr; print the result as one JSON object on stdout.")
def demo_command(keep: Path | None, serve: Path | None, as_json: bool) -> None:
    """Show the whole daily cycle on this machine, without an AWS account.

    Starts an S3 endpoint (moto) on 127.0.0.1, then runs create-resources,
    key generate (a restore key in the work directory), write-config --root
    --recipient, archive, a small change, archive again, runs, verify
    --read-data, restore and restore-snapshot (with --key), and compares the
    restored tree and database with the originals. Needs the 'demo' extra
    (pip install 's3archive[demo]'). moto does not enforce Object Lock like
    AWS: the demo shows the cycle, not the locks.

    \b
    EXIT STATUS
      0  the restore is exact;  1  a step failed or something differs;  2  usage error
    """
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise UsageError("the demo needs moto: pip install 's3archive[demo]' "
                         "(or pip install 'moto[server]')") from None
    from s3archive.demo import run_demo

    if serve is not None:
        if keep is not None or as_json:
            raise UsageError("--serve DIR takes no other option")
        _serve(serve)
        return

    def say(text: str) -> None:
        click.echo(text, err=as_json)

    result = run_demo(keep, say)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
    if result.ok:
        say(f"demo ok in {result.seconds:.1f} s: the restored tree and database are exact copies"
            + (f"; everything is kept in {result.work_dir}, the endpoint's bucket included. "
               "To explore it, bring the endpoint back (it runs until Ctrl-C), then, in "
               "another shell, try:" if result.work_dir else "; nothing was left behind"))
        for command in result.explore:
            say(f"  {command}")
    else:
        raise CommandFailed(f"demo FAILED: {len(result.differences)} difference(s)")


def _serve(work: Path) -> None:
    import signal
    import threading

    from s3archive.demo.endpoint import serve_kept

    with serve_kept(work) as endpoint:
        click.echo(f"serving the demo's bucket on {endpoint} until Ctrl-C (or SIGTERM); "
                   f"use --config {work.absolute()}/root/etc/s3archive/config.toml", err=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    click.echo("endpoint stopped", err=True)


COMMANDS = [demo_command]
