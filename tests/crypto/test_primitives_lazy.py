"""cryptography (about 5 MiB of resident memory once its Rust extension is
loaded) is imported by the first primitive a run uses, so a plain host's
commands never load it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from s3archive.crypto import primitives

REPO = Path(__file__).resolve().parents[2]

PLAIN = ("s3archive.cli.main", "s3archive.cli.archive", "s3archive.cli.browse",
         "s3archive.cli.restore", "s3archive.cli.verify", "s3archive.archive.archiver",
         "s3archive.repo.catalog", "s3archive.restore.restorer", "s3archive.verify",
         "s3archive.archive.encryption", "s3archive.archive.pack_index",
         "s3archive.archive.group_index", "s3archive.repo.run_crypto")


def _loaded_after(code: str) -> set[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys\n"
                           "print(' '.join(m for m in sys.modules if m.startswith('crypto')))"],
                          capture_output=True, text=True, env=env, check=True, timeout=60)
    return set(done.stdout.split())


def test_the_modules_of_plain_commands_do_not_load_cryptography() -> None:
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in PLAIN)
    assert "cryptography" not in _loaded_after(code)


def test_a_primitive_loads_it_and_is_cryptographys_own() -> None:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    for name in primitives.__all__:  # each in a process of its own: nothing loaded before
        assert "cryptography" in _loaded_after(
            f"from s3archive.crypto import primitives\nprimitives.{name}")
    assert _loaded_after("from s3archive.crypto import primitives\n"
                         "primitives.hashes.SHA256()")
    assert primitives.ChaCha20Poly1305 is ChaCha20Poly1305
    assert primitives.InvalidTag is InvalidTag
    with pytest.raises(primitives.InvalidTag):
        primitives.ChaCha20Poly1305(bytes(32)).decrypt(bytes(12), bytes(16), None)
    with pytest.raises(AttributeError, match="no attribute 'AESGCM'"):
        primitives.AESGCM  # noqa: B018
