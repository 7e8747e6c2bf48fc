"""``key``: the restore key pair (age X25519) and its paper copy.

Preparation for encryption (docs/FORMAT2.md): hosts are given only the
public recipient; the private key stays offline with the operator.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

import click

from s3archive.crypto.keys import (
    Identity,
    Recipient,
    paper_sheet,
    read_identity_file,
    read_paper,
)
from s3archive.errors import EXIT_FAILED, S3ArchiveError


class KeyFileExists(S3ArchiveError):
    pass


class PaperCheckFailed(S3ArchiveError):
    exit_code = EXIT_FAILED


@click.group("key")
def key_group() -> None:
    """Restore keys: generate, show the recipient, check a paper copy.

    \b
    The private key restores every encrypted backup: without it they are
    unreadable.  Keep it offline (paper copy in a safe, a second copy
    elsewhere); give hosts only the recipient (age1...).
    Exit codes: 0 ok; 1 the check failed, or --out exists (never overwritten);
    2 bad argument or key file.
    """


@key_group.command("generate")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (mode 0600; never overwritten).")
@click.option("--paper", is_flag=True,
              help="Also print the private key for a paper copy, with check digits.")
def generate_command(out: Path, paper: bool) -> None:
    """Create a restore key pair: the private key goes to --out, the recipient
    (age1..., for the hosts' [encryption] recipients) to stdout.

    The key file is the same as age-keygen's: age -d -i FILE reads it.
    """
    identity = Identity.generate()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise KeyFileExists(f"{out} exists: refusing to overwrite a key file") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, identity.file_text().encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    click.echo(str(identity.recipient()))
    if paper:
        click.echo()
        click.echo(paper_sheet(identity), nl=False)
    click.echo(f"private key written to {out}: keep it offline; without it "
               "encrypted backups cannot be restored", err=True)


@key_group.command("recipient")
@click.argument("key_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def recipient_command(key_file: Path) -> None:
    """Print the recipient (age1...) of each private key in KEY_FILE
    (an s3archive or age-keygen key file)."""
    for identity in read_identity_file(key_file):
        click.echo(str(identity.recipient()))


@key_group.command("check")
@click.argument("typed", type=click.File("r", encoding="ascii", errors="replace"))
@click.option("--recipient", "expected", default=None,
              help="The recipient the key must belong to (age1...), e.g. from the config.")
def check_command(typed: TextIO, expected: str | None) -> None:
    """Check a typed-in paper copy (or a key file): TYPED holds the numbered
    lines ('-' for stdin).  Prints the recipient when it checks; names every
    line to retype when it does not.
    """
    want = Recipient.parse(expected) if expected is not None else None
    identity, problems = read_paper(typed.read(256 * 1024))
    for problem in problems:
        where = f"line {problem.line}: " if problem.line else ""
        click.echo(f"s3archive: {where}{problem.message}", err=True)
    if identity is None:
        raise PaperCheckFailed("the key does not check; retype the lines named above")
    recipient = identity.recipient()
    if want is not None and recipient != want:
        raise PaperCheckFailed(f"the key checks but belongs to {recipient}, not {want}")
    click.echo(str(recipient))
    click.echo("key OK" + (" and matches the recipient" if want else ""), err=True)


COMMANDS = [key_group]
