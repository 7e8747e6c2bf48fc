"""The root group imports a command's module only when that command is wanted."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    done = _probe(probe)
    loaded = set(done.stdout.splitlines()[-1].split())
    assert "s3archive.cli.archive" in loaded and "s3archive.archive.archiver" in loaded
    for unwanted in ("s3archive.cli.browse", "s3archive.cli.restore", "s3archive.browse",
                     "s3archive.restore.restorer", "s3archive.find", "s3archive.verify",
                     "s3archive.setup.spec", "s3archive.export"):
        assert unwanted not in loaded, unwanted


def test_the_s3_store_is_opened_without_importing_boto3(tmp_path: Path) -> None:
    """The archive's S3 client comes from botocore's own session: boto3 and its
    transfer manager (~50 ms of CPU a command) are never imported for it."""
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = AKEXAMPLE\n"
                           "aws_secret_access_key = secret\n")
    probe = ("import sys\nfrom pathlib import Path\nfrom s3archive.config import S3Settings\n"
             "from s3archive.store.s3_store import S3Store\n"
             "store = S3Store.from_settings(S3Settings(bucket='b', region='eu-west-1', "
             "endpoint_url='http://127.0.0.1:9', credentials_file=Path(sys.argv[1])))\n"
             "creds = store.client._request_signer._credentials\n"
             "print(store.client.meta.region_name, creds.access_key, "
             "' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('boto3', 's3transfer'))))\n")
    done = _probe(probe, str(credentials))
    assert done.stdout.split() == ["eu-west-1", "AKEXAMPLE"]


def test_the_objects_left_at_exit_are_frozen_for_the_shutdown() -> None:
    """Python's shutdown would run the cyclic collector over every object left
    (0.1-0.2 s of CPU after an archive run); main() freezes them first, and the
    shutdown still runs the atexit handlers (this probe's own is one)."""
    probe = ("import atexit, gc, sys\nfrom s3archive.cli.main import main\n"
             "atexit.register(lambda: print('frozen', gc.get_freeze_count()))\n"
             "sys.argv = ['s3archive', '--version']\nmain()\n")
    done = _probe(probe)
    version, frozen = done.stdout.splitlines()
    assert version.startswith("s3archive, version ")
    assert frozen.startswith("frozen ") and int(frozen.split()[1]) > 10_000


def _probe(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh Python with this checkout first on its path."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, check=True, timeout=60)


def test_archive_makes_its_s3_client_uncollected_then_freezes_it(monkeypatch) -> None:
    """The objects loaded by the time the store is open (botocore's service model,
    the modules) are made without a collection over them and frozen: no full
    collection traverses them during the run."""
    import gc

    from s3archive.cli import archive as archive_cli

    seen: list[bool] = []
    opened = object()

    def open_store(config):
        seen.append(gc.isenabled())
        return opened

    monkeypatch.setattr(archive_cli, "open_store", open_store)
    frozen = gc.get_freeze_count()
    try:
        assert archive_cli._open_store_uncollected(None) is opened  # type: ignore[arg-type]
        assert seen == [False] and gc.isenabled()
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()  # (this test process collects as before)
        gc.enable()


def test_archive_runs_with_fewer_young_collections_and_restores_the_collector(
        monkeypatch) -> None:
    """The run (here: one that fails) sees the youngest generation's threshold raised,
    the others as they were; the collector is as before once the command is done."""
    import gc
    from types import SimpleNamespace

    from s3archive.cli import archive as archive_cli

    seen: list[tuple[int, ...]] = []

    class Failed(Exception):
        pass

    class Archiver:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def run(self) -> None:
            seen.append(gc.get_threshold())
            raise Failed()

    monkeypatch.setattr(archive_cli, "Archiver", Archiver)
    monkeypatch.setattr(archive_cli, "_open_store_uncollected", lambda config: None)
    before = gc.get_threshold()
    assert before[0] != archive_cli.YOUNG_COLLECTION_AFTER
    with pytest.raises(Failed):
        archive_cli._archive(SimpleNamespace(verbosity=-1), None,  # type: ignore[arg-type]
                             as_json=True, dry_run=True, start_encryption=False)
    assert seen == [(archive_cli.YOUNG_COLLECTION_AFTER, *before[1:])]
    assert gc.get_threshold() == before
