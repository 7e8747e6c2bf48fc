"""Progress for people: a live line on a terminal, plain lines for the
journal (no control characters), -v and -q through the real CLI."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from s3archive.errors import UsageError
from s3archive.progress import (LogProgress, TerminalProgress, printable, progress_for,
                                progress_interval)
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
    assert last.startswith("archiving files: 100 files, 0 dirs, 101.0 MiB read, ")
    assert last.endswith(", 0.4s elapsed /srv/data/f99")
    rate = float(re.search(r"read, ([\d.]+) MiB/s", last)[1])
    assert rate == pytest.approx(101 / 0.35, rel=0.01)
    progress.done()
    assert out.getvalue().endswith("\r\x1b[K")


def test_terminal_line_names_the_file_being_read_and_counts_dirs_apart() -> None:
    clock = FakeClock()
    progress = TerminalProgress(io.StringIO(), clock=clock)
    progress.phase("archiving files")
    progress.begin(b"/srv/big.img")  # a reader thread starts a long file
    progress.entry("dir", b"/srv")
    progress.file(b"/srv/a-small-one", 10)  # finished after the big one began
    progress.entry("symlink", b"/srv/link")
    line = progress.line(200)
    assert "1 files, 1 dirs, 1 other" in line and line.endswith(" /srv/big.img")
    progress.begin(b"/srv/c")  # two readers: the newest begun is shown
    assert progress.line(200).endswith(" /srv/c")
    progress.end(b"/srv/c")
    assert progress.line(200).endswith(" /srv/big.img")
    progress.end(b"/srv/big.img")  # nothing being read: the last entry done
    assert progress.line(200).endswith(" /srv/link")


def test_with_totals_the_line_shows_done_of_total_and_an_eta() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = TerminalProgress(out, clock=clock, verb="written", by_kind=False)
    clock.now += 50  # planning, surveying: the rate and ETA count from the phase on
    progress.phase("restoring", (40, 100 * 1024 * 1024))
    assert progress.line(200) == ("restoring: 0/40 entries, 0 B of 100.0 MiB "
                                  "written, 0 B/s, ETA - ")
    progress.entry("dir", b"/")
    progress.begin(b"/srv/f")
    clock.now += 10
    progress.read(25 * 1024 * 1024)  # 2.5 MiB/s: 75 MiB left take 30 s
    assert progress.line(200) == ("restoring: 1/40 entries, 25.0 MiB of "
                                  "100.0 MiB written, 2.5 MiB/s, ETA 30s /srv/f")


def test_archive_learns_its_totals_when_the_walk_is_over_and_the_next_phase_drops_them() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = LogProgress(out, every=60, clock=clock)
    progress.phase("archiving files")
    progress.entry("dir", b"/srv")
    progress.begin(b"/srv/big")
    clock.now += 4
    progress.read(1 << 20)
    progress.totals(3, 4 << 20)  # the walk is over: 3 entries, 4 MiB to read
    assert out.getvalue().splitlines() == [
        "archiving files",
        "progress: 0 files, 1 dirs of 3 entries, 1.0 MiB of 4.0 MiB read, 256.0 KiB/s, ETA 12s"]
    progress.phase("running snapshotters")  # its bytes are not the walk's
    assert progress.status().startswith("0 files, 1 dirs, 1.0 MiB read, ")
    assert progress.status().endswith(", 4.0s elapsed")


def test_verbose_on_a_terminal_lists_entries_above_the_status_line() -> None:
    clock, out, listing = FakeClock(), io.StringIO(), io.StringIO()
    progress = TerminalProgress(out, clock=clock, verbose=True)
    progress.phase("archiving files")
    progress.file(b"/srv/a", 2048)
    progress.entry("dir", b"/srv/d")
    text = out.getvalue()
    # the status line is cleared, the entry printed on a line of its own, the status redrawn
    assert "\r\x1b[Kfile /srv/a (2.0 KiB)\n\r\x1b[Karchiving files: 1 files" in text
    assert "\r\x1b[Kdir /srv/d\n\r\x1b[Karchiving files: 1 files, 1 dirs" in text
    progress.note("/srv/a", listing)  # restore -v: the path on stdout, the status on stderr
    assert listing.getvalue() == "/srv/a\n"
    assert out.getvalue().rsplit("\r\x1b[K", 1)[1].startswith("archiving files: 1 files")


def test_terminal_line_fits_the_width_and_escapes_control_characters() -> None:
    clock = FakeClock()
    progress = TerminalProgress(io.StringIO(), clock=clock)
    progress.file(b"/data/evil\x1b[2Jname\n" + b"x" * 200 + b"\xff", 1)
    line = progress.line(80)
    assert len(line) <= 80
    assert not CONTROL.search(line.replace("\n", "\\n")) and "\n" not in line
    assert line.endswith("x\\xff")
    progress.phase("restoring", (10**6, 10**12))
    narrow = progress.line(40)  # the status alone is wider: cut, never wrapped
    assert len(narrow) == 39 and narrow == "restoring: 1 files, 0 dirs of 1000000 …"
    assert printable(b"a\x1b[2Jb\nc") == "a\\x1b[2Jb\\x0ac"


def test_log_lines_have_no_control_characters_and_verbose_names_files() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = LogProgress(out, verbose=True, every=60, clock=clock)
    progress.phase("archiving files")
    progress.begin(b"/data/evil\x1b[2J\rname")
    progress.file(b"/data/evil\x1b[2J\rname", 2048)
    progress.entry("dir", b"/data")
    clock.now += 61
    progress.read(5 * 1024 * 1024)
    lines = out.getvalue().splitlines()
    assert lines == ["archiving files", "file /data/evil\\x1b[2J\\x0dname (2.0 KiB)",
                     "dir /data",
                     "progress: 1 files, 1 dirs, 5.0 MiB read, 83.9 KiB/s, 1m01s elapsed, "
                     "now /data/evil\\x1b[2J\\x0dname"]
    assert not CONTROL.search(out.getvalue())
    quiet = io.StringIO()
    progress = LogProgress(quiet, verbose=False, clock=clock)
    progress.file(b"/data/x", 1)
    assert quiet.getvalue() == ""


def test_log_lines_carry_the_totals_from_the_phase_on() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = LogProgress(out, every=5, clock=clock, verb="written", by_kind=False)
    progress.phase("restoring", (3, 3 << 20))
    progress.begin(b"/a")
    clock.now += 2
    progress.read(1 << 20)  # within the interval: no line
    clock.now += 4
    progress.read(1 << 20)
    progress.entry("file", b"/a", 2 << 20)
    assert out.getvalue().splitlines() == [
        "restoring: 0/3 entries, 0 B of 3.0 MiB written, 0 B/s, ETA -",
        "progress: 0/3 entries, 2.0 MiB of 3.0 MiB written, 341.3 KiB/s, "
        "ETA 3.0s, now /a"]


def test_interval_comes_from_the_environment_and_a_bad_one_is_named(monkeypatch) -> None:
    monkeypatch.delenv("S3ARCHIVE_PROGRESS_INTERVAL", raising=False)
    assert progress_interval() == 60
    monkeypatch.setenv("S3ARCHIVE_PROGRESS_INTERVAL", "0.5")
    assert progress_interval() == 0.5
    made = progress_for(io.StringIO(), quiet=False)
    assert isinstance(made, LogProgress) and made.every == 0.5
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv("S3ARCHIVE_PROGRESS_INTERVAL", bad)
        with pytest.raises(UsageError, match="S3ARCHIVE_PROGRESS_INTERVAL="):
            progress_interval()


def test_progress_kind_follows_terminal_journal_and_quiet(monkeypatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert type(progress_for(Tty(), quiet=False)) is TerminalProgress
    assert type(progress_for(io.StringIO(), quiet=False)) is LogProgress
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert type(progress_for(Tty(), quiet=False)) is LogProgress
    assert type(progress_for(Tty(), quiet=True)).__name__ == "Progress"
    monkeypatch.delenv("JOURNAL_STREAM")
    assert progress_for(Tty(), quiet=False, verbose=True).verbose  # -v lists on a terminal too


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


def test_archive_summary_gives_elapsed_time_and_a_dry_run_claims_no_upload(
        env: ArchiveEnv) -> None:
    dry = env.run("archive", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    head = re.search(r"^dry run testhost/\S+ in [\d.]+s: nothing uploaded, no manifest "
                     r"written; tier yearly, would be locked until \S+$", dry.stderr, re.M)
    assert head, dry.stderr
    # one data pack, one metadata pack (format 2)
    assert re.search(r"^  \d+ new chunks, 0 reused; would upload 2 packs \([\d.]+ (B|KiB)\), "
                     r"extend 0, rewrite 0$", dry.stderr, re.M), dry.stderr
    assert ") uploaded" not in dry.stderr and "  manifest " not in dry.stderr
    assert env.versions() == []  # and indeed nothing was
    real = env.run("-v", "archive")
    assert real.exit_code == 0, real.stderr
    assert re.search(r"^run testhost/\S+ in [\d.]+s: tier yearly, locked until \S+$",
                     real.stderr, re.M), real.stderr
    assert re.search(r"^  \d+ new chunks, 0 reused; 2 packs \([\d.]+ (B|KiB)\) uploaded, "
                     r"0 extended, 0 rewritten$", real.stderr, re.M), real.stderr
    assert f"\ndir {env.root / 'data'}\n" in real.stderr  # -v: directories listed too
    # the walk is over: its totals (the data directory, its parents, two files of 2 B)
    entries = len(env.root.parts) + 3
    assert re.search(rf"^progress: \d files, \d+ dirs of {entries} entries, [\d.]+ B of 4 B "
                     r"read, ", real.stderr, re.MULTILINE), real.stderr
    assert f"\nfile {env.root / 'data' / 'a.txt'} (2 B)\n" in real.stderr
