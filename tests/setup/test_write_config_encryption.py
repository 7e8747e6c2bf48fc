"""write-config --recipient / --dedup-secret: the [encryption] section the
real parser loads, the dedup secret installed 0600 and never replaced by a
new one; a plain setup is warned about; bad input is one line, exit 2, and
nothing is written."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from s3archive.cli.main import cli
from s3archive.config import dedup_secret_file_text, load_config
from s3archive.crypto.dedup import DedupSecret
from s3archive.crypto.keys import Identity, Recipient

ETC = Path("etc/s3archive")
OPERATOR = str(Identity(bytes(range(32))).recipient())
ESCROW = str(Identity(bytes(range(1, 33))).recipient())


def _write(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["write-config", "--root", str(root), "--bucket", "acme-b",
                                    "--host-name", "web1", "--no-enable", *args],
                              catch_exceptions=False)


def _given(path: Path, secret: DedupSecret, mode: int = 0o644) -> Path:
    path.write_text(dedup_secret_file_text(secret))
    path.chmod(mode)
    return path


def test_recipients_make_an_encrypted_configuration(tmp_path: Path) -> None:
    result = _write(tmp_path, "--recipient", OPERATOR, "--recipient", ESCROW)
    assert result.exit_code == 0, result.output
    secret_file = tmp_path / ETC / "dedup.key"
    config = load_config(tmp_path / ETC / "config.toml")
    assert config.encryption is not None
    assert config.encryption.recipients == (Recipient.parse(OPERATOR), Recipient.parse(ESCROW))
    assert config.encryption.dedup_secret_file == secret_file
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = config.encryption.dedup_secret  # the reader accepts what the writer wrote
    assert f"created     {secret_file}\n" in result.stdout
    assert (f"note: {secret_file}: a new dedup secret, group {secret.dedup_id}: this host "
            "deduplicates against its own runs only") in result.stderr
    assert "warning" not in result.stderr and str(secret) not in result.output


def test_without_recipients_the_setup_is_plain_and_says_so(tmp_path: Path) -> None:
    result = _write(tmp_path)
    assert result.exit_code == 0, result.output
    assert load_config(tmp_path / ETC / "config.toml").encryption is None
    assert not (tmp_path / ETC / "dedup.key").exists()
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == ["s3archive: warning: backups will NOT be encrypted (anyone who can read "
                        "the bucket reads them); recommended: s3archive key generate --out "
                        "FILE, keep FILE offline, then write-config --recipient age1..."]


def test_an_existing_secret_is_kept_never_replaced_by_a_new_one(tmp_path: Path) -> None:
    assert _write(tmp_path, "--recipient", OPERATOR).exit_code == 0
    secret_file = tmp_path / ETC / "dedup.key"
    before = secret_file.read_bytes()
    for force in ([], ["--force"]):
        result = _write(tmp_path, "--recipient", ESCROW, *force)
        assert result.exit_code == 0, result.output
        assert secret_file.read_bytes() == before
        assert f"kept        {secret_file}\n" in result.stdout
        assert "the existing dedup secret (group" in result.stderr


def test_a_plain_host_switching_is_told_about_start_encryption(tmp_path: Path) -> None:
    assert _write(tmp_path).exit_code == 0
    result = _write(tmp_path, "--recipient", OPERATOR)
    assert result.exit_code == 0, result.output
    assert ("note: the configuration was plain: if this host has runs, its next archive needs "
            "--start-encryption, once") in result.stderr
    again = _write(tmp_path, "--recipient", OPERATOR)
    assert "--start-encryption" not in again.stderr


def test_a_group_secret_is_installed_0600(tmp_path: Path) -> None:
    group = DedupSecret.generate()
    given = _given(tmp_path / "group.key", group, 0o644)  # e.g. from a stick: installed 0600
    root = tmp_path / "root"
    result = _write(root, "--recipient", OPERATOR, "--dedup-secret", str(given))
    assert result.exit_code == 0, result.output
    secret_file = root / ETC / "dedup.key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    config = load_config(root / ETC / "config.toml")
    assert config.encryption is not None and config.encryption.dedup_secret == group
    assert f"the dedup secret of group {group.dedup_id} is installed" in result.stderr
    again = _write(root, "--recipient", OPERATOR, "--dedup-secret", str(given))
    assert again.exit_code == 0 and f"unchanged   {secret_file}\n" in again.stdout


def test_another_group_secret_replaces_one_only_with_force(tmp_path: Path) -> None:
    first, second = DedupSecret.generate(), DedupSecret.generate()
    root = tmp_path / "root"
    assert _write(root, "--recipient", OPERATOR, "--dedup-secret",
                  str(_given(tmp_path / "a.key", first))).exit_code == 0
    other = _given(tmp_path / "b.key", second)
    secret_file = root / ETC / "dedup.key"
    config_before = (root / ETC / "config.toml").read_bytes()
    refused = _write(root, "--recipient", ESCROW, "--dedup-secret", str(other))
    assert refused.exit_code == 2
    assert refused.stderr == (f"s3archive: error: {secret_file} holds another dedup secret "
                              f"(group {first.dedup_id}; --dedup-secret is group "
                              f"{second.dedup_id}): left alone; use --force to replace it\n")
    assert (root / ETC / "config.toml").read_bytes() == config_before  # nothing written
    forced = _write(root, "--recipient", ESCROW, "--dedup-secret", str(other), "--force")
    assert forced.exit_code == 0, forced.output
    assert f"overwritten {secret_file}\n" in forced.stdout
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert load_config(root / ETC / "config.toml").encryption.dedup_secret == second  # type: ignore[union-attr]
    assert not list((root / ETC).glob(".*tmp"))


def test_an_unsafe_existing_secret_is_named_not_replaced(tmp_path: Path) -> None:
    secret_file = tmp_path / ETC / "dedup.key"
    secret_file.parent.mkdir(parents=True)
    _given(secret_file, DedupSecret.generate(), 0o644)
    before = secret_file.read_bytes()
    result = _write(tmp_path, "--recipient", OPERATOR)
    assert result.exit_code == 2
    assert result.stderr == (f"s3archive: error: {secret_file}: the dedup secret is accessible "
                             f"by group or others (mode 0644): chmod 600 {secret_file}\n")
    assert secret_file.read_bytes() == before
    assert not (tmp_path / ETC / "config.toml").exists()
    # --force does not make a new one over it either; the group's secret does replace it.
    assert _write(tmp_path, "--recipient", OPERATOR, "--force").exit_code == 2
    group = DedupSecret.generate()
    given = _given(tmp_path / "group.key", group)
    assert _write(tmp_path, "--recipient", OPERATOR, "--dedup-secret", str(given)).exit_code == 2
    result = _write(tmp_path, "--recipient", OPERATOR, "--dedup-secret", str(given), "--force")
    assert result.exit_code == 0, result.output
    assert f"overwritten {secret_file}\n" in result.stdout
    assert load_config(tmp_path / ETC / "config.toml").encryption.dedup_secret == group  # type: ignore[union-attr]


@pytest.mark.parametrize("args, why", [
    (["--recipient", "age1nope"], "--recipient: recipient 'age1nope': "),
    (["--recipient", "AGE-SECRET-KEY-1QQQQ"],
     "--recipient: 'AGE-SECRET-KEY-1QQQQ' is not an age X25519 recipient"),
    (["--recipient", OPERATOR, "--recipient", OPERATOR.upper()],
     f"--recipient {OPERATOR} is given twice"),
    ([arg for i in range(17) for arg in ("--recipient",
                                         str(Identity(bytes([i + 1]) * 32).recipient()))],
     "--recipient: at most 16 recipients"),
    (["--dedup-secret", "{given}"], "--dedup-secret is for encrypted hosts: give --recipient"),
    (["--recipient", OPERATOR, "--dedup-secret", "{restore_key}"],
     "{restore_key}: not a valid dedup secret"),
], ids=["checksum", "private-key", "twice", "17", "no-recipient", "a-restore-key"])
def test_bad_encryption_options_are_one_line_and_nothing_is_written(
        tmp_path: Path, args: list[str], why: str) -> None:
    names = {"{given}": str(_given(tmp_path / "given.key", DedupSecret.generate())),
             "{restore_key}": str(tmp_path / "restore.key")}
    (tmp_path / "restore.key").write_text(Identity.generate().file_text())
    for name, value in names.items():
        args = [a.replace(name, value) for a in args]
        why = why.replace(name, value)
    root = tmp_path / "root"
    result = _write(root, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"s3archive: error: {why}"), result.stderr
    assert result.stderr.count("\n") == 1
    assert not root.exists()
