"""Interoperability with the real age tools (Debian package ``age``).

Keys from ``age-keygen`` work in s3archive and ours in age; age files written
by s3archive's X25519 wrap (as in every pack's key block) open with
``age -d``, and age's own files open with s3archive's reader.  Skips when age
is not installed (CI installs it: .ci/run's apt line).
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from s3archive.crypto import age
from s3archive.crypto.keys import Identity, read_identity_file

pytestmark = pytest.mark.skipif(
    shutil.which("age") is None or shutil.which("age-keygen") is None,
    reason="age/age-keygen not on PATH (Debian package 'age')")


def _run(*args: str, data: bytes = b"") -> bytes:
    done = subprocess.run(args, input=data, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_age_keygen_key_is_accepted_by_key_recipient(tmp_path: Path) -> None:
    key = tmp_path / "age.key"
    _run("age-keygen", "-o", str(key))
    expected = _run("age-keygen", "-y", str(key)).decode().strip()
    result = CliRunner().invoke(cli, ["key", "recipient", str(key)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == expected + "\n"


def test_our_key_file_is_read_by_age_keygen(tmp_path: Path) -> None:
    key = tmp_path / "restore.key"
    result = CliRunner().invoke(cli, ["key", "generate", "--out", str(key)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert _run("age-keygen", "-y", str(key)).decode() == result.stdout


@pytest.mark.parametrize("size", [0, 32, age.STREAM_CHUNK, 2 * age.STREAM_CHUNK + 7])
def test_age_decrypts_what_we_wrap(tmp_path: Path, size: int) -> None:
    """A complete age file: our X25519 stanzas (two recipients), header MAC and
    STREAM payload; ``age -d`` with either key returns the plaintext."""
    keys = [tmp_path / "one.key", tmp_path / "two.key"]
    for key in keys:
        _run("age-keygen", "-o", str(key))
    recipients = [read_identity_file(k)[0].recipient() for k in keys]
    plain = random.Random(size).randbytes(size)
    sealed = tmp_path / "block.age"
    sealed.write_bytes(age.encrypt(plain, recipients))
    for key in keys:
        assert _run("age", "-d", "-i", str(key), str(sealed)) == plain


def test_we_decrypt_what_age_encrypts(tmp_path: Path) -> None:
    identity = Identity.generate()
    key = tmp_path / "ours.key"
    key.write_text(identity.file_text())
    plain = random.Random(3).randbytes(age.STREAM_CHUNK + 100)
    other = tmp_path / "other.key"
    _run("age-keygen", "-o", str(other))
    other_recipient = _run("age-keygen", "-y", str(other)).decode().strip()
    data = _run("age", "-e", "-r", str(identity.recipient()), "-r", other_recipient,
                data=plain)
    assert age.decrypt(data, [identity], max_plaintext=len(plain)) == plain
    assert age.decrypt(data, read_identity_file(other), max_plaintext=len(plain)) == plain
