"""``completion`` (click's shell completion scripts) and ``man`` (manual pages
written from the click tree).

Man pages come from a command rather than a build step: the wheel build
needs no extra tool (no click-man, no build hook), the pages always match
the installed version, and a packager runs ``s3archive man --out DIR`` at
package build time.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import click
from click.shell_completion import get_completion_class

from s3archive import __version__

PROG = "s3archive"
FULL_SENTENCE = 10_000  # click cuts a command's first sentence to this many characters
COMPLETE_VAR = "_S3ARCHIVE_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_command(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash:  s3archive completion bash > /etc/bash_completion.d/s3archive
    zsh:   s3archive completion zsh > "${fpath[1]}/_s3archive"
    fish:  s3archive completion fish > ~/.config/fish/completions/s3archive.fish

    \b
    EXIT STATUS
      0  ok;  2  unknown shell
    """
    root = click.get_current_context().find_root().command
    completion = get_completion_class(shell)
    assert completion is not None  # the Choice allows only shells click knows
    click.echo(completion(root, {}, PROG, COMPLETE_VAR).source())


@click.command("man")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the pages (created if missing).")
def man_command(out_dir: Path) -> None:
    """Write manual pages (section 1) for s3archive and each command into --out.

    \b
    EXIT STATUS
      0  ok;  1  a page could not be written;  2  usage error
    """
    root_ctx = click.get_current_context().find_root()
    group = root_ctx.command
    assert isinstance(group, click.Group)
    out_dir.mkdir(parents=True, exist_ok=True)
    today = date.today().isoformat()
    written = [_write(out_dir / f"{PROG}.1", man_page(group, PROG, today, root_ctx))]
    for name in group.list_commands(root_ctx):
        command = group.get_command(root_ctx, name)
        if command is None or command.hidden:
            continue
        ctx = click.Context(command, info_name=name, parent=root_ctx)
        written.append(_write(out_dir / f"{PROG}-{name}.1",
                              man_page(command, f"{PROG} {name}", today, ctx)))
    click.echo(f"{len(written)} pages written to {out_dir}", err=True)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line[:1] in (".", "'") else line
                     for line in text.splitlines())


def _paragraphs(help_text: str) -> list[str]:
    """Help text as roff: click's \\b blocks stay verbatim (.nf), the rest fills."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", help_text.strip()):
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            out += [".PP", ".nf", _roff("\n".join(lines[1:])), ".fi"]
        else:
            out += [".PP", _roff(" ".join(line.strip() for line in lines))]
    return out


def man_page(command: click.Command, title: str, today: str, ctx: click.Context) -> str:
    name = title.replace(" ", "-")
    lines = [f'.TH "{name.upper()}" "1" "{today}" "{PROG} {__version__}" "s3archive manual"',
             ".SH NAME", f"{_roff(name)} \\- {_roff(command.get_short_help_str(limit=FULL_SENTENCE))}",
             ".SH SYNOPSIS", f".B {_roff(title)}",
             _roff(" ".join(command.collect_usage_pieces(ctx))),
             ".SH DESCRIPTION", *_paragraphs(command.help or "")]
    options = [record for param in command.get_params(ctx)
               if (record := param.get_help_record(ctx)) is not None]
    if options:
        lines.append(".SH OPTIONS")
        for flags, text in options:
            lines += [".TP", f".B {_roff(flags)}", _roff(text) or "\\&"]
    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        for sub in command.list_commands(ctx):
            sub_command = command.get_command(ctx, sub)
            if sub_command is not None and not sub_command.hidden:
                lines += [".TP", f".B {_roff(sub)}",
                          _roff(sub_command.get_short_help_str(limit=FULL_SENTENCE))]
                if ctx.parent is None:  # each of the root's commands has its own page
                    lines.append(f"See \\fB{PROG}\\-{_roff(sub)}\\fR(1).")
    else:
        lines += [".SH SEE ALSO", f"\\fB{PROG}\\fR(1)"]
    return "\n".join(lines) + "\n"


COMMANDS = [completion_command, man_command]
