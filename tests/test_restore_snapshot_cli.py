"""``restore-snapshot`` shows the recorded command and asks on a terminal
before running it; without a terminal it refuses unless --yes (RGW, the real
CLI: in a subprocess on a pseudo-terminal, and through CliRunner)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from support.manifest_builder import RunBuilder, invoke, make_bucket_env
from support import terminal

REPO = Path(__file__).resolve().parents[1]
DUMP = b"-- dump\n" * 500


@pytest.fixture(scope="module")
def env(rgw, tmp_path_factory):
    env = make_bucket_env(rgw, tmp_path_factory.mktemp("restore-snapshot"))
    run = RunBuilder(env.store, run_id="20260301T020000Z")
    # An escape sequence in the command must not hide what runs.
    run.snapshot("pg", DUMP, restore_through='cat > "$OUT" # \x1b[2K')
    run.upload()
    return env


def on_terminal(env, out: Path, answer: bytes, *args: str) -> tuple[int, str]:
    """Run restore-snapshot with stdin, stdout and stderr on a pseudo-terminal;
    answer the question once it is asked."""
    status, seen = terminal.on_terminal(
        [sys.executable, "-m", "s3archive", "--config", str(env.config_path),
         "restore-snapshot", "20260301", "pg", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), "OUT": str(out)}, cwd=REPO, stdin=True,
        answers={b"Run it?": answer})
    return status, seen.decode(errors="replace")


def test_asks_on_a_terminal_and_declining_runs_nothing(env, tmp_path: Path) -> None:
    out = tmp_path / "declined.sql"
    status, screen = on_terminal(env, out, b"n\n")
    assert status == 1, screen
    assert 'cat > "$OUT" # \\x1b[2K' in screen  # shown, escaped
    assert "Run it? [y/N]" in screen
    assert not out.exists()


def test_confirming_on_a_terminal_runs_the_command(env, tmp_path: Path) -> None:
    out = tmp_path / "confirmed.sql"
    status, screen = on_terminal(env, out, b"y\n")
    assert status == 0, screen
    assert "will be piped into /bin/sh -c" in screen
    assert out.read_bytes() == DUMP


def test_without_a_terminal_it_refuses_unless_yes(env, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "piped.sql"
    monkeypatch.setenv("OUT", str(out))
    # A "y" arriving on a pipe is not an operator's answer.
    refused = invoke(env, "restore-snapshot", "20260301", "pg", input="y\n")
    assert refused.exit_code == 2
    assert "no terminal to ask on, so pass --yes" in refused.stderr
    assert 'cat > "$OUT"' in refused.stderr  # still shows what it would have run
    assert not out.exists()
    done = invoke(env, "restore-snapshot", "20260301", "pg", "--yes")
    assert done.exit_code == 0, done.output
    assert out.read_bytes() == DUMP
