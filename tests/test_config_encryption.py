"""``[encryption]`` in the configuration: recipients checked at load time, the
dedup secret file read lazily and refused by name when it is not the host's
own secret; through the real CLI, one line and exit 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from s3archive.config import (
    DEFAULT_DEDUP_SECRET_FILE,
    dedup_secret_file_text,
    load_config,
    read_dedup_secret_file,
)
from s3archive.crypto.dedup import DedupSecret
from s3archive.crypto.keys import Identity, Recipient
from s3archive.errors import ConfigError

BASE = '[s3]\nbucket = "acme-b"\n[host]\nname = "web1"\n'
R1 = str(Identity(bytes(range(32))).recipient())
R2 = str(Identity(bytes(range(1, 33))).recipient())


def _config(tmp_path: Path, section: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(BASE + section)
    return path


def _secret_file(path: Path, secret: DedupSecret, mode: int = 0o600) -> Path:
    path.write_text(dedup_secret_file_text(secret))
    path.chmod(mode)
    return path


def test_without_the_section_runs_are_plain(tmp_path: Path) -> None:
    assert load_config(_config(tmp_path, "")).encryption is None


def test_recipients_and_a_relative_secret_file(tmp_path: Path) -> None:
    secret = DedupSecret.generate()
    _secret_file(tmp_path / "dedup.key", secret)
    config = load_config(_config(tmp_path, f'[encryption]\nrecipients = ["{R1}", "{R2}"]\n'
                                           'dedup_secret_file = "dedup.key"\n'))
    assert config.encryption is not None
    assert config.encryption.recipients == (Recipient.parse(R1), Recipient.parse(R2))
    assert config.encryption.dedup_secret_file == tmp_path / "dedup.key"
    assert config.encryption.dedup_secret == secret
    assert str(secret) not in repr(config) and str(secret) not in repr(config.encryption)


def test_the_secret_file_defaults_to_etc_and_is_read_only_when_used(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, f'[encryption]\nrecipients = ["{R1}"]\n'))
    assert config.encryption is not None
    assert config.encryption.dedup_secret_file == DEFAULT_DEDUP_SECRET_FILE
    if not DEFAULT_DEDUP_SECRET_FILE.exists():
        with pytest.raises(ConfigError, match="dedup.key: dedup secret file not found"):
            config.encryption.dedup_secret


@pytest.mark.parametrize("section, why", [
    ("[encryption]\n", "encryption.recipients is missing"),
    ("[encryption]\nrecipients = []\n", "encryption.recipients = []: must hold 1 to 16"),
    (f'[encryption]\nrecipients = {[R1] * 17!r}\n'.replace("'", '"'), "must hold 1 to 16"),
    ('[encryption]\nrecipients = "age1x"\n', "encryption.recipients = 'age1x': must be a list"),
    ("[encryption]\nrecipients = [1]\n", "encryption.recipients: 1 is not a string"),
    ('[encryption]\nrecipients = ["ssh-ed25519 AAAA"]\n',
     "encryption.recipients: 'ssh-ed25519 AAAA' is not an age X25519 recipient"),
    (f'[encryption]\nrecipients = ["{R1[:-1]}q"]\n',
     f"encryption.recipients: recipient '{R1[:-1]}q': checksum mismatch"),
    (f'[encryption]\nrecipients = ["{R1}", "{R2}", "{R1.upper()}"]\n',
     f"encryption.recipients: '{R1.upper()}' is given twice"),
    (f'[encryption]\nrecipients = ["{R1}"]\ndedup_secret_file = ""\n',
     "encryption.dedup_secret_file = '': must not be empty"),
    (f'[encryption]\nrecipients = ["{R1}"]\nkey_file = "x"\n',
     "unknown key 'encryption.key_file'"),
    ('encryption = 1\n', "[encryption] must be a table"),
], ids=["missing", "empty", "17", "string", "number", "ssh", "checksum", "twice", "no-file",
        "unknown", "not-table"])
def test_a_bad_section_is_one_line_naming_the_file(tmp_path: Path, section: str,
                                                   why: str) -> None:
    path = tmp_path / "config.toml"
    # a top-level key must come before the first table
    path.write_text(section + BASE if section.startswith("encryption =") else BASE + section)
    result = CliRunner().invoke(cli, ["--config", str(path), "runs"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"s3archive: error: {path}: ")
    assert why in result.stderr and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("problem, why", [
    ("missing", "dedup secret file not found"),
    ("directory", "must be a regular file"),
    ("fifo", "must be a regular file"),
    ("group-readable", "accessible by group or others (mode 0640): chmod 600"),
    ("world-readable", "accessible by group or others (mode 0604)"),
    ("two-secrets", "expected one line S3ARCHIVE-DEDUP-1..., found 2"),
    ("typo", "not a valid dedup secret"),
    ("a-restore-key", "not a valid dedup secret"),
    ("binary", "not ASCII text"),
    ("huge", "larger than 4096 bytes"),
])
def test_a_bad_secret_file_is_refused_by_name(tmp_path: Path, problem: str, why: str) -> None:
    path = tmp_path / "dedup.key"
    secret = DedupSecret.generate()
    if problem == "directory":
        path.mkdir()
    elif problem == "fifo":
        os.mkfifo(path, 0o600)  # would block an open without O_NONBLOCK
    elif problem != "missing":
        text = {"two-secrets": f"{secret}\n{DedupSecret.generate()}\n",
                "typo": str(secret)[:-3] + ("Q" if str(secret)[-3] != "Q" else "P")
                + str(secret)[-2:] + "\n",
                "a-restore-key": str(Identity.generate()) + "\n",
                "huge": "#" * 5000 + "\n" + str(secret) + "\n"}.get(
            problem, dedup_secret_file_text(secret))
        path.write_bytes(b"\xff" + text.encode() if problem == "binary" else text.encode())
        path.chmod({"group-readable": 0o640, "world-readable": 0o604}.get(problem, 0o600))
    with pytest.raises(ConfigError) as caught:
        read_dedup_secret_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and why in message, message
    assert str(secret)[17:] not in message and str(secret)[20:40] not in message


def test_owner_other_than_this_user_or_root_is_refused(tmp_path: Path) -> None:
    path = _secret_file(tmp_path / "dedup.key", DedupSecret.generate())
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    os.chown(path, 4242, 4242)
    with pytest.raises(ConfigError, match=r"dedup.key: the dedup secret is owned by uid 4242"):
        read_dedup_secret_file(path)
    os.chown(path, 0, 0)
    read_dedup_secret_file(path)


def test_a_stricter_mode_and_comments_are_fine(tmp_path: Path) -> None:
    secret = DedupSecret.generate()
    path = _secret_file(tmp_path / "dedup.key", secret, 0o400)
    assert read_dedup_secret_file(path) == secret
    path.chmod(0o600)
    path.write_text(f"\n# the group's secret\n  {str(secret).lower()}  \n\n")
    assert read_dedup_secret_file(path) == secret


def test_archive_checks_the_secret_before_anything_runs(tmp_path: Path) -> None:
    """A plain run is refused by the mixing rule later; a bad secret file is
    refused first, in one line, before a picker runs or S3 is asked."""
    secret_file = _secret_file(tmp_path / "dedup.key", DedupSecret.generate(), 0o644)
    marker = tmp_path / "picker-ran"
    (tmp_path / "pickers.d").mkdir()
    picker = tmp_path / "pickers.d" / "10-x"
    picker.write_text(f"#!/bin/sh\ntouch {marker}\n")
    picker.chmod(0o755)
    config = _config(tmp_path, f'[local]\ncache_dir = "{tmp_path}/cache"\n'
                     f'state_file = "{tmp_path}/s.json"\n[encryption]\n'
                     f'recipients = ["{R1}"]\ndedup_secret_file = "dedup.key"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "archive", "--start-encryption"])
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"s3archive: error: {secret_file}: the dedup secret is accessible "
                             f"by group or others (mode 0644): chmod 600 {secret_file}\n")
    assert not marker.exists() and not (tmp_path / "s.json").exists()


def test_start_encryption_is_an_archive_option() -> None:
    result = CliRunner().invoke(cli, ["archive", "--help"])
    assert "--start-encryption" in result.stdout and "no way back" in result.stdout


@pytest.mark.parametrize("flag", [True, False])
def test_archive_hands_start_encryption_to_the_archiver(tmp_path: Path, flag: bool,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from s3archive.cli import archive as archive_cli
    from s3archive.errors import CommandFailed

    seen: dict[str, object] = {}

    class Recording:
        def __init__(self, *args: object, **kwargs: object) -> None:
            seen.update(kwargs)

        def run(self) -> None:
            raise CommandFailed("stopped by the test")

    monkeypatch.setattr(archive_cli, "Archiver", Recording)
    config = _config(tmp_path, f'[local]\ncache_dir = "{tmp_path}/cache"\n'
                     f'state_file = "{tmp_path}/s.json"\n')
    args = ["--config", str(config), "archive", "--dry-run"] + (["--start-encryption"] if flag
                                                                  else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "stopped by the test" in result.stderr, result.output
    assert seen["start_encryption"] is flag and seen["dry_run"] is True
    import inspect

    from s3archive.archive.archiver import Archiver

    parameter = inspect.signature(Archiver).parameters["start_encryption"]
    assert parameter.kind is parameter.KEYWORD_ONLY and parameter.default is False
