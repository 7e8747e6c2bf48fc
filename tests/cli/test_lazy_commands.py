"""The root group imports a command's module only when that command is wanted."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from s3archive.cli.main import COMMAND_MODULES, cli

REPO = Path(__file__).resolve().parents[2]


def test_every_module_names_exactly_its_commands() -> None:
    for module, names in COMMAND_MODULES.items():
        commands = importlib.import_module(f"s3archive.cli.{module}").COMMANDS
        assert sorted(c.name for c in commands) == sorted(names), module
    assert sorted(cli.commands) == sorted(n for names in COMMAND_MODULES.values()
                                          for n in names)


def test_each_command_has_the_global_options_once() -> None:
    for name in cli.commands:
        options = [p.name for p in cli.commands[name].params]
        assert options.count("verbose") == 1 and options.count("config") == 1, name


def test_archive_imports_no_reader_or_operation_it_does_not_run() -> None:
    probe = ("import sys\nfrom s3archive.cli.main import cli\n"
             "cli.main(['archive', '--help'], standalone_mode=False)\n"
             "print(' '.join(sorted(m for m in sys.modules if m.startswith('s3archive'))))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, check=True, timeout=60)
    loaded = set(done.stdout.splitlines()[-1].split())
    assert "s3archive.cli.archive" in loaded and "s3archive.archive.archiver" in loaded
    for unwanted in ("s3archive.cli.browse", "s3archive.cli.restore", "s3archive.browse",
                     "s3archive.restore.restorer", "s3archive.find", "s3archive.verify",
                     "s3archive.setup.spec", "s3archive.export"):
        assert unwanted not in loaded, unwanted
