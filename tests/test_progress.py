"""Progress for people: a live line on a terminal, plain lines for the
journal (no control characters), -v and -q through the real CLI."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from s3archive.progress import LogProgress, TerminalProgress, printable, progress_for
from support.archive_env import ArchiveEnv


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # anything but the newline


def test_terminal_line_shows_files_bytes_rate_and_path_a_few_times_a_second() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = TerminalProgress(out, rate=4.0, clock=clock)
    progress.phase("archiving files")
    draws = out.getvalue().count("\r")
    for i in range(100):  # 100 events within 0.1 s: no redraw beyond the phase line
        clock.now += 0.001
        progress.file(f"/srv/data/f{i}".encode(), 10)
        progress.read(1024 * 1024)
    assert out.getvalue().count("\r") == draws
    clock.now += 0.25
    progress.read(1024 * 1024)
    assert out.getvalue().count("\r") == draws + 1
    last = out.getvalue().rsplit("\r\x1b[K", 1)[1]
    assert last.startswith("archiving files: 100 files, 101.0 MiB read, ")
    assert "/s /srv/data/f99" in last
    rate = float(re.search(r"read, ([\d.]+) MiB/s", last)[1])
    assert rate == pytest.approx(101 / 0.35, rel=0.01)
    progress.done()
    assert out.getvalue().endswith("\r\x1b[K")


def test_terminal_line_fits_the_width_and_escapes_control_characters() -> None:
    clock = FakeClock()
    progress = TerminalProgress(io.StringIO(), clock=clock)
    progress.file(b"/data/evil\x1b[2Jname\n" + b"x" * 200 + b"\xff", 1)
    line = progress.line(80)
    assert len(line) <= 80
    assert not CONTROL.search(line.replace("\n", "\\n")) and "\n" not in line
    assert line.endswith("x\\xff")
    assert printable(b"a\x1b[2Jb\nc") == "a\\x1b[2Jb\\x0ac"


def test_log_lines_have_no_control_characters_and_verbose_names_files() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = LogProgress(out, verbose=True, every=60, clock=clock)
    progress.phase("archiving files")
    progress.file(b"/data/evil\x1b[2J\rname", 2048)
    clock.now += 61
    progress.read(5 * 1024 * 1024)
    lines = out.getvalue().splitlines()
    assert lines == ["archiving files", "file /data/evil\\x1b[2J\\x0dname (2.0 KiB)",
                     "progress: 1 files, 5.0 MiB read, 83.9 KiB/s"]
    assert not CONTROL.search(out.getvalue())
    quiet = io.StringIO()
    progress = LogProgress(quiet, verbose=False, clock=clock)
    progress.file(b"/data/x", 1)
    assert quiet.getvalue() == ""


def test_progress_kind_follows_terminal_journal_and_quiet(monkeypatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert type(progress_for(Tty(), quiet=False)) is TerminalProgress
    assert type(progress_for(io.StringIO(), quiet=False)) is LogProgress
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert type(progress_for(Tty(), quiet=False)) is LogProgress
    assert type(progress_for(Tty(), quiet=True)).__name__ == "Progress"


@pytest.fixture
def env(rgw, tmp_path: Path) -> ArchiveEnv:
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    (data / "b\x1bc.txt").write_text("b\n")
    env.pick(data)
    return env


def test_archive_under_systemd_writes_plain_lines_verbose_and_quiet(env: ArchiveEnv) -> None:
    normal = env.run("archive")
    assert normal.exit_code == 0, normal.stderr
    assert "archiving files\n" in normal.stderr and "writing metadata\n" in normal.stderr
    assert "run testhost/" in normal.stderr
    assert not CONTROL.search(normal.stderr)
    assert "file " not in normal.stderr
    verbose = env.run("-v", "archive")
    assert verbose.exit_code == 0
    assert "file " + str(env.root / "data" / "b\\x1bc.txt") in verbose.stderr
    assert not CONTROL.search(verbose.stderr)
    quiet = env.run("-q", "archive")
    assert quiet.exit_code == 0 and quiet.stderr == ""
