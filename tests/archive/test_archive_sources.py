"""What the archiver records of the filesystem, and how it survives bad input."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import threading
import time
from typing import Any
from pathlib import Path

import posix1e
import pytest

from support.archive_env import ArchiveEnv, entries_by_path

MiB = 1 << 20
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (devices, trusted xattrs, chown)")


@pytest.fixture
def env(rgw, tmp_path: Path) -> ArchiveEnv:
    return ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())


@needs_root
def test_metadata_of_every_kind_of_entry_is_captured(env: ArchiveEnv, tmp_path: Path,
                                                    read_by: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "plain").write_bytes(b"hello\n")
    os.chown(src / "plain", 1234, 5678)  # owners that do not exist: numbers only
    os.utime(src / "plain", ns=(1, 123_456_789_012_345_678))
    (src / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "setuid", 0o4755)
    (src / "sticky").mkdir()
    os.chmod(src / "sticky", 0o1777)
    os.link(src / "plain", src / "plain-link")
    os.symlink("plain", src / "rel-link")
    os.symlink("/nowhere/at/all", src / "dangling")
    os.mkfifo(src / "fifo")
    os.mknod(src / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(src / "loop", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    odd = os.fsencode(src) + b"/caf\xe9-\xff name"
    with open(odd, "wb") as handle:
        handle.write(b"latin-1 name")
    acl_file = src / "acl"
    acl_file.write_text("acl")
    posix1e.ACL(text="u::rw-,u:1000:r--,g::r--,m::r--,o::---").applyto(str(acl_file))
    acl_dir = src / "acl-dir"
    acl_dir.mkdir()
    posix1e.ACL(text="u::rwx,g::r-x,g:100:rwx,m::rwx,o::---").applyto(str(acl_dir), posix1e.ACL_TYPE_DEFAULT)
    os.setxattr(src / "plain", "user.binary", b"\x00\xff\x10")
    os.setxattr(src / "plain", "user.empty", b"")
    os.setxattr(src / "plain", "trusted.secret", b"t")
    (src / "odd-xattr").write_text("x")
    os.setxattr(src / "odd-xattr", b"user.\xff", b"v")
    os.setxattr(src / "odd-xattr", "user.fine", b"kept")
    sparse = src / "sparse"
    with open(sparse, "wb") as handle:
        handle.truncate(1 << 30)
        handle.seek(512 * MiB)
        handle.write(os.urandom(MiB))
    subprocess.run(["python3", "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); "
                    f"s.bind({str(src / 'sock')!r})"], check=True)

    (src / "cache").mkdir()
    os.mkfifo(src / "cache" / "CACHEDIR.TAG")  # must not hang the walk
    (src / "cache" / "kept-inside").write_text("a fifo is no cache tag")

    env.pick(src)
    summary = env.archive()
    assert summary["exit_code"] == 3
    assert summary["warnings"] == [f"file: {src}/odd-xattr: metadata incomplete: xattr names "
                                   "that are not UTF-8 left out: user.\\xff"]
    assert summary["bytes_read"] < 2 * MiB + 4096, "holes are not read"
    entries = entries_by_path(env.manifest_lines(summary["manifest_key"]))
    p = lambda name: os.fsencode(src / name)  # noqa: E731
    assert entries[b"/"]["kind"] == "dir"
    assert entries[os.fsencode(tmp_path)]["kind"] == "dir"
    plain = entries[p("plain")]
    assert (plain["kind"], plain["uid"], plain["gid"], plain["mode"]) == ("file", 1234, 5678, "0644")
    assert "user" not in plain and plain["mtime_ns"] == 123_456_789_012_345_678
    assert {k: base64.b64decode(v) for k, v in plain["xattrs"].items()} == {
        "user.binary": b"\x00\xff\x10", "user.empty": b"", "trusted.secret": b"t"}
    assert entries[p("plain-link")]["kind"] == "hardlink"
    assert entries[p("plain-link")]["target"] == os.fsdecode(p("plain"))
    assert entries[p("setuid")]["mode"] == "4755"
    assert entries[p("sticky")]["mode"] == "1777"
    assert entries[p("rel-link")] | {} == entries[p("rel-link")]
    assert entries[p("rel-link")]["target"] == "plain"
    assert entries[p("dangling")]["target"] == "/nowhere/at/all"
    assert entries[p("fifo")]["kind"] == "fifo"
    assert (entries[p("null")]["kind"], entries[p("null")]["rdev"]) == ("chardev", [1, 3])
    assert (entries[p("loop")]["kind"], entries[p("loop")]["rdev"]) == ("blockdev", [7, 0])
    assert p("sock") not in entries
    assert entries[p("cache/CACHEDIR.TAG")]["kind"] == "fifo"
    assert p("cache/kept-inside") in entries
    assert base64.b64decode(entries[p("odd-xattr")]["xattrs"]["user.fine"]) == b"kept"
    assert entries[odd]["kind"] == "file" and "path_b64" in entries[odd]
    assert entries[p("acl")]["acl_access"] == "u::rw-,u:1000:r--,g::r--,m::r--,o::---"
    assert entries[p("acl-dir")]["acl_default"] == "u::rwx,g::r-x,g:100:rwx,m::rwx,o::---"
    sparse_entry = entries[p("sparse")]
    assert sparse_entry["size"] == 1 << 30
    assert sparse_entry["extents"] == [[512 * MiB, MiB]]
    assert sum(c[1] for c in sparse_entry["chunks"]) == MiB
    trailer = env.manifest_lines(summary["manifest_key"])[-1]
    assert trailer["counts"]["sockets_skipped"] == 1


def test_bad_pickers_become_warnings_and_the_rest_is_archived(env: ArchiveEnv, tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "kept").write_text("kept")
    env.pick(good, name="10-good")
    env.picker("20-relative", "echo relative/path\necho /does/not/exist\n")
    env.picker("30-fails", f"echo '{good}'\nexit 4\n")
    env.picker("40-hangs", "sleep 30\n")
    env.picker("50-latin1", "printf '/tmp/\\351t\\351\\n'\n")
    (env.etc / "pickers.d" / "60-disabled").write_text("#!/bin/sh\necho /etc\n")  # not executable
    env.write_config(extra="[sources]\npicker_timeout = 1")
    started = time.monotonic()
    summary = env.archive()
    assert time.monotonic() - started < 15
    assert summary["exit_code"] == 3
    text = "\n".join(summary["warnings"])
    assert "20-relative: line 1: ignored relative path b'relative/path'" in text
    assert "/does/not/exist: picked path does not exist" in text
    assert "30-fails: exited with status 4" in text
    assert "40-hangs: timed out after 1 s" in text
    assert "/tmp/\\xe9t\\xe9: picked path does not exist" in text
    entries = entries_by_path(env.manifest_lines(summary["manifest_key"]))
    assert os.fsencode(good / "kept") in entries
    assert not any(p.startswith(b"/etc") for p in entries)
    trailer = env.manifest_lines(summary["manifest_key"])[-1]
    assert len(trailer["warnings"]) == len(summary["warnings"])


def test_bad_snapshotters_become_warnings(env: ArchiveEnv, tmp_path: Path) -> None:
    env.pick(tmp_path / "nothing")
    env.snapshotter("10-good", "printf 'payload' >&\"$1\"\necho good one\n"
                    "echo '::restore-through:: cat > /dev/null'\n")
    env.snapshotter("20-fails", "printf 'partial' >&\"$1\"\necho oops >&2\nexit 7\n")
    env.snapshotter("30-hangs", "printf 'x' >&\"$1\"\nsleep 30\n")
    env.snapshotter("40-empty", "echo nothing to say\n")
    env.write_config(extra="[sources]\nsnapshot_timeout = 2")
    started = time.monotonic()
    summary = env.archive()
    assert time.monotonic() - started < 20
    assert summary["exit_code"] == 3 and summary["snapshots"] == 4
    snaps = {line["name"]: line for line in env.manifest_lines(summary["manifest_key"])
             if line["type"] == "snapshot"}
    assert snaps["10-good"]["status"] == "ok" and snaps["10-good"]["size"] == 7
    assert snaps["10-good"]["description"] == "good one"
    assert snaps["10-good"]["restore_through"] == "cat > /dev/null"
    assert (snaps["20-fails"]["status"], snaps["20-fails"]["exit_status"]) == ("failed", 7)
    assert snaps["30-hangs"]["status"] == "timeout"
    assert snaps["40-empty"]["status"] == "empty"
    text = "\n".join(summary["warnings"])
    assert "20-fails: exited with status 7; stderr: oops" in text
    assert "30-hangs: timed out after 2 s" in text
    assert "40-empty: wrote no data" in text


def test_files_that_change_while_read_are_read_twice_then_stored_with_a_warning(env: ArchiveEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    growing = src / "growing.log"
    growing.write_bytes(os.urandom(8 * MiB))
    (src / "stable").write_text("stable")
    stop = threading.Event()

    def writer() -> None:  # a slow, bounded writer: at most 64 MiB, whatever happens
        with open(growing, "ab") as handle:
            for _ in range(16384):
                if stop.wait(0.0005):
                    return
                handle.write(b"y" * 4096)
                handle.flush()

    env.pick(src)
    threads = [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    try:
        summary = env.archive()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert summary["exit_code"] == 3
    text = "\n".join(summary["warnings"])
    assert f"{growing}: changed while being read (read twice)" in text
    entries = entries_by_path(env.manifest_lines(summary["manifest_key"]))
    assert os.fsencode(src / "stable") in entries
    assert entries[os.fsencode(growing)]["size"] >= 8 * MiB


def test_entries_that_vanish_during_the_walk_become_warnings(tmp_path: Path, monkeypatch) -> None:
    from s3archive.archive.sources import walker as walker_module
    from s3archive.archive.sources.walker import Walker, WalkOptions

    (tmp_path / "here").write_text("x")
    real_listdir = os.listdir
    monkeypatch.setattr(walker_module.os, "listdir",
                        lambda path: real_listdir(path) + [b"gone-before-lstat"])
    warnings = []
    paths = [item.path for item in Walker(WalkOptions(), warnings.append).walk([os.fsencode(tmp_path)])]
    assert os.fsencode(tmp_path / "here") in paths
    assert [(w.message, w.path) for w in warnings] == [
        ("vanished during the walk", os.fsencode(tmp_path / "gone-before-lstat"))]


def test_a_snapshotter_whose_data_cannot_be_read_is_failed_not_timed_out(tmp_path: Path) -> None:
    from s3archive.archive.sources.snapshotters import run_snapshotter

    script = tmp_path / "10-dump"
    script.write_text("#!/bin/sh\nprintf 'data' >&\"$1\"\nsleep 5\n")
    script.chmod(0o755)

    def broken(reader) -> int:
        raise OSError("disk on fire")

    started = time.monotonic()
    outcome = run_snapshotter(script, timeout=30, consume=broken)
    assert time.monotonic() - started < 5, "the snapshotter is killed, not waited for"
    assert outcome.status == "failed" and "disk on fire" in outcome.problem


def test_an_error_while_consuming_kills_and_reaps_the_snapshotter(tmp_path: Path) -> None:
    from s3archive.errors import StoreError
    from s3archive.archive.sources.snapshotters import run_snapshotter

    script = tmp_path / "10-dump"
    marker = tmp_path / "still-running"
    script.write_text(f"#!/bin/sh\nprintf 'data' >&\"$1\"\nsleep 3\ntouch '{marker}'\n")
    script.chmod(0o755)

    def upload_fails(reader) -> int:
        raise StoreError("PUT failed")

    with pytest.raises(StoreError):
        run_snapshotter(script, timeout=30, consume=upload_fails)
    time.sleep(3.5)
    assert not marker.exists(), "the snapshotter must not outlive the run"


def test_executables_with_names_that_are_not_utf8_are_ignored(tmp_path: Path) -> None:
    from s3archive.archive.sources.pickers import executables

    for name in (b"10-fine", b"20-caf\xe9"):
        path = os.fsencode(tmp_path) + b"/" + name
        with open(path, "w") as handle:
            handle.write("#!/bin/sh\n")
        os.chmod(path, 0o755)
    assert [p.name for p in executables(tmp_path)] == ["10-fine"]


def test_a_symlink_whose_target_cannot_be_read_is_left_out_and_the_run_stays_restorable(
        env: ArchiveEnv, tmp_path: Path, monkeypatch) -> None:
    # as readlink("/proc/1/cwd") fails with EACCES, even for root
    from s3archive.archive.sources import entries as entries_module

    src = tmp_path / "src"
    src.mkdir()
    (src / "kept").write_text("kept")
    os.symlink("kept", src / "fine-link")
    os.symlink("/secret", src / "forbidden-link")
    forbidden = os.fsencode(src / "forbidden-link")
    real_readlink = os.readlink

    def readlink(path, *args, **kwargs):
        if os.fsencode(path) == forbidden:
            raise PermissionError(13, "Permission denied")
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(entries_module.os, "readlink", readlink)
    env.pick(src)
    summary = env.archive()
    assert summary["exit_code"] == 3
    assert summary["warnings"] == [
        f"file: {src}/forbidden-link: left out: cannot read the symlink's target: Permission denied"]
    entries = entries_by_path(env.manifest_lines(summary["manifest_key"]))
    assert forbidden not in entries
    assert entries[os.fsencode(src / "fine-link")]["target"] == "kept"
    monkeypatch.undo()
    run_id = summary["run_id"]
    verified = env.run("verify", run_id, "--read-data")
    assert verified.exit_code == 0, verified.stderr
    target = tmp_path / "restored"
    restored = env.run("restore", run_id, "--target", str(target))
    assert restored.exit_code == 0, restored.stderr
    assert (target / src.relative_to("/") / "kept").read_text() == "kept"
    assert os.readlink(target / src.relative_to("/") / "fine-link") == "kept"


def test_the_writer_refuses_entries_its_reader_would_refuse() -> None:
    from s3archive.format.manifest_codec import entry_problem
    from s3archive.format.model import Entry

    def entry(**fields) -> Entry:
        base = dict(path=b"/a", kind="file", mode=0o644, uid=0, gid=0, mtime_ns=1)
        return Entry(**(base | fields))

    assert entry_problem(entry()) is None
    assert entry_problem(entry(path=b"/caf\xe9", size=7)) is None, "chunks are not the guard's"
    assert entry_problem(entry(kind="symlink", target=b"\xff")) is None
    assert entry_problem(entry(kind="symlink")) == "missing field 'target'"
    assert entry_problem(entry(kind="symlink", target=b"")) == "target is empty or contains NUL"
    assert entry_problem(entry(path=b"/a/../b")) == "path contains '.' or '..': b'/a/../b'"
    assert entry_problem(entry(kind="chardev")) == "rdev must be [major, minor]"
    assert entry_problem(entry(user="caf\udce9")) == "field 'user' cannot be encoded as UTF-8"
    assert entry_problem(entry(xattrs={"user.\udcff": b""})) == \
        "field 'user.\\udcff' cannot be encoded as UTF-8"
    assert entry_problem(entry(xattrs={"": b"x"})) == "malformed xattrs"


def test_the_guard_remembering_what_it_accepted_answers_as_decoding_each_entry(
        monkeypatch) -> None:
    """entry_problem accepts an entry like one it accepted (all but its path and mtime
    the same) without decoding it: its answers are those of decoding every entry."""
    import random

    from s3archive.format import manifest_codec
    from s3archive.format.limits import INT64_MAX, ManifestLimits
    from s3archive.format.model import Entry

    rng = random.Random(22)
    small = ManifestLimits(path_bytes=40, name_bytes=12, owner_chars=6, target_bytes=20)
    paths = [b"/a", b"/d/f", b"/caf\xe9/x", b"/a/../b", b"/a//b", b"/a/", b"a", b"/n\0ul",
             b"/" + b"x" * 13, b"/" + b"y/" * 25, b"/d/.hidden", b"/d/."]
    def pick(usual: Any, *odd: Any) -> Any:  # mostly the usual value
        return usual if rng.random() < 0.8 else rng.choice(odd)

    samples = []
    for _ in range(3000):
        kind = pick("file", "dir", "symlink", "fifo", "chardev")
        samples.append(Entry(
            path=rng.choice(paths), kind=kind, mode=pick(0o644, 0o755, 0o7777),
            uid=pick(0, 1000, (1 << 32) - 1, 1 << 32), gid=pick(0, 5, -1),
            mtime_ns=pick(rng.randrange(1 << 62), -5, INT64_MAX, INT64_MAX + 1,
                          -INT64_MAX - 2),
            user=pick("root", None, "someone-long"), group=pick("g", None),
            size=pick(7, 0),
            target=pick(b"t", None, b"", b"x" * 30) if kind == "symlink" else None,
            rdev=pick(None, (1, 3)) if kind == "chardev" else None,
            acl_access=pick(None, "user::rw-"), xattrs=pick({}, {"user.k": b"v"})))
    limits = [manifest_codec.LIMITS, small]
    remembered: set = set()
    decode = manifest_codec.decode_entry
    decoded = []

    def counted(*args, **kwargs):
        decoded.append(1)
        return decode(*args, **kwargs)

    answers = []
    for entry in samples:
        monkeypatch.setattr(manifest_codec, "LIMITS", rng.choice(limits))
        monkeypatch.setattr(manifest_codec, "_ACCEPTED", remembered)
        monkeypatch.setattr(manifest_codec, "decode_entry", counted)
        answers.append(manifest_codec.entry_problem(entry))
        monkeypatch.setattr(manifest_codec, "decode_entry", decode)
        monkeypatch.setattr(manifest_codec, "_ACCEPTED", set())  # decoded afresh
        assert manifest_codec.entry_problem(entry) == answers[-1], entry
    accepted = sum(answer is None for answer in answers)
    assert len(decoded) < len(samples) - accepted / 2  # most accepted from what it remembered
    assert len({answer for answer in answers if answer}) > 8  # many ways to be refused


def test_user_and_group_names_that_are_not_utf8_are_left_out(monkeypatch) -> None:
    from s3archive.archive.sources import fs_metadata

    class Named:
        pw_name = gr_name = "caf\udce9"  # how Python decodes a latin-1 /etc/passwd name

    monkeypatch.setattr(fs_metadata.pwd, "getpwuid", lambda uid: Named)
    monkeypatch.setattr(fs_metadata.grp, "getgrgid", lambda gid: Named)
    fs_metadata.user_name.cache_clear()
    fs_metadata.group_name.cache_clear()
    try:
        assert fs_metadata.user_name(4242) is None and fs_metadata.group_name(4242) is None
    finally:
        fs_metadata.user_name.cache_clear()
        fs_metadata.group_name.cache_clear()


# -- descendants that leave the process group (setsid) must not hold the run

def _alive(needle: str) -> list[int]:
    """Live (not zombie) processes whose command line contains ``needle``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if needle.encode() in cmdline and state != "Z":
            found.append(int(name))
    return found


@pytest.fixture
def quick_grace(monkeypatch) -> None:
    """Shorter waits after a child ended (the CLI test below keeps the real ones)."""
    from s3archive.archive.sources import supervision

    monkeypatch.setattr(supervision, "GRACE_S", 0.5)
    monkeypatch.setattr(supervision, "ABANDON_S", 0.3)


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_a_picker_whose_setsid_child_keeps_stdout_open_does_not_hold_the_run(tmp_path: Path, quick_grace) -> None:
    from s3archive.archive.sources.pickers import run_pickers
    from s3archive.archive.sources.supervision import ABANDON_S, GRACE_S

    tag = f"31{os.getpid()}"
    _script(tmp_path / "10-escapes", f"echo /kept\nsetsid sleep {tag} &\necho /also-kept\n")
    started = time.monotonic()
    result = run_pickers(tmp_path, timeout=60)
    assert time.monotonic() - started < GRACE_S + ABANDON_S + 2
    assert result.paths == [b"/kept", b"/also-kept"]
    [warning] = result.warnings
    assert warning.message.startswith(f"10-escapes: its pipes were still held open {GRACE_S:g} s "
                                      "after it ended, by pid ")
    assert "(sleep, holding its stdout)" in warning.message and warning.message.endswith("(killed)")
    assert _alive(f"sleep {tag}") == []


def test_a_picker_child_that_never_exits_and_leaves_the_group_is_killed_at_the_time_out(tmp_path: Path, quick_grace) -> None:
    from s3archive.archive.sources.pickers import run_pickers

    tag = f"32{os.getpid()}"
    # one escapee keeps the environment (killed by its token), one clears it
    # and keeps stdout (killed as the pipe's holder); the picker itself hangs
    _script(tmp_path / "10-hangs", f"echo /kept\nsetsid sh -c 'while :; do sleep 1; done; : {tag}' &\n"
                                   f"setsid env -i sleep {tag}1 &\nsleep {tag}2\n")
    started = time.monotonic()
    result = run_pickers(tmp_path, timeout=1)
    assert time.monotonic() - started < 1 + 3
    assert result.paths == [b"/kept"]
    [warning] = result.warnings
    assert warning.message.startswith("10-hangs: timed out after 1 s (killed; its 6 bytes")
    assert "(sleep, holding its stdout)" in warning.message
    assert _alive(tag) == []


def test_a_snapshotter_whose_setsid_child_keeps_fd_3_open_does_not_hold_the_run(tmp_path: Path, quick_grace) -> None:
    from s3archive.archive.sources.snapshotters import run_snapshotter
    from s3archive.archive.sources.supervision import ABANDON_S, GRACE_S

    tag = f"33{os.getpid()}"
    script = _script(tmp_path / "10-dump", "printf 'data' >&\"$1\"\necho a dump\n"
                                           f"setsid env -i sleep {tag} >/dev/null 2>&1 &\n")
    started = time.monotonic()
    outcome = run_snapshotter(script, timeout=60, consume=_read_all)
    assert time.monotonic() - started < GRACE_S + ABANDON_S + 2
    assert (outcome.status, outcome.exit_status, outcome.description) == ("failed", 0, "a dump")
    assert outcome.problem.startswith("its data may be incomplete; its pipes were still held "
                                      f"open {GRACE_S:g} s after it ended, by pid ")
    assert "(sleep, holding its data (fd 3))" in outcome.problem
    assert _alive(f"sleep {tag}") == []


def test_a_snapshotter_child_that_never_exits_and_leaves_the_group_is_killed_at_the_time_out(tmp_path: Path, quick_grace) -> None:
    from s3archive.archive.sources.snapshotters import run_snapshotter

    tag = f"34{os.getpid()}"
    script = _script(tmp_path / "10-dump", "printf 'data' >&\"$1\"\n"
                                           f"setsid sh -c 'while :; do sleep 1; done; : {tag}' &\n"
                                           f"sleep {tag}\n")
    started = time.monotonic()
    outcome = run_snapshotter(script, timeout=1, consume=_read_all)
    assert time.monotonic() - started < 1 + 3
    assert (outcome.status, outcome.exit_status) == ("timeout", None)
    assert outcome.problem.startswith("timed out after 1 s and was killed (4 bytes kept)")
    assert _alive(tag) == []


def _read_all(reader) -> int:
    total = 0
    buffer = memoryview(bytearray(1 << 16))
    while count := reader.readinto(buffer):
        total += count
    return total


def test_snapshotter_stdout_is_bounded_and_the_truncation_is_reported(tmp_path: Path) -> None:
    # run in a fresh interpreter: its peak RSS shows what the 100 MB cost
    script = _script(tmp_path / "10-chatty", "printf 'data' >&\"$1\"\necho first line\n"
                                             "head -c 100000000 /dev/zero | tr '\\0' x\n")
    probe = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from s3archive.archive.sources.snapshotters import run_snapshotter\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "def drain(reader):\n"
        "    buffer, total = memoryview(bytearray(1 << 16)), 0\n"
        "    while count := reader.readinto(buffer):\n"
        "        total += count\n"
        "    return total\n"
        "out = run_snapshotter(Path(sys.argv[1]), 60, drain)\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(peak - base, len(out.description), out.status)\n"
        "print(out.problem)\n")
    done = subprocess.run(["python3", "-c", probe, str(script)], capture_output=True, text=True,
                          check=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])))
    figures, problem = done.stdout.splitlines()
    growth_kib, description_len, status = figures.split()
    assert int(growth_kib) < 20 * 1024, "peak RSS grew by more than 20 MiB"
    assert int(description_len) <= 64 * 1024 and status == "ok"
    assert problem == ("its stdout (the description) was truncated: 100000011 bytes written, "
                       "the first 65536 kept")


# -- picker output that would mean '/' by accident

@pytest.mark.parametrize("output, expected", [
    (b"/\n", [(b"/", None)]),
    (b"/etc//ssh/\n/var/./lib/../log\r\n\n  \n", [(b"/etc/ssh", None), (b"/var/log", None)]),
    (b"/.\n//\n/..\n/./\n", [
        (None, "line 1: ignored b'/.': it means '/' (print exactly '/' to archive the whole filesystem)"),
        (None, "line 2: ignored b'//': it means '/' (print exactly '/' to archive the whole filesystem)"),
        (None, "line 3: ignored b'/..': it means '/' (print exactly '/' to archive the whole filesystem)"),
        (None, "line 4: ignored b'/./': it means '/' (print exactly '/' to archive the whole filesystem)")]),
    (b".\netc\n /etc\n", [(None, "line 1: ignored relative path b'.'"),
                          (None, "line 2: ignored relative path b'etc'"),
                          (None, "line 3: ignored relative path b' /etc'")]),
    (b"/a\0\0/\0x\0", [(b"/a", None), (b"/", None), (None, "item 4: ignored relative path b'x'")]),
], ids=["root", "normalised", "means-root", "relative", "nul-separated"])
def test_picker_output_is_taken_literally(output: bytes, expected: list) -> None:
    from s3archive.archive.sources.pickers import parse_picker_output

    assert parse_picker_output(output) == expected


def test_garbage_from_a_picker_is_refused_not_archived_as_the_root(env: ArchiveEnv) -> None:
    import random

    garbage = random.Random(11).randbytes(20000)  # NULs too: NUL-separated items
    (env.etc / "garbage").write_bytes(garbage + b"\n/..\n")
    env.picker("10-garbage", f"cat '{env.etc / 'garbage'}'\n")
    summary = env.archive()
    assert summary["exit_code"] == 3
    refused = [w for w in summary["warnings"] if w.startswith("picker: 10-garbage: ")]
    assert 2 <= len(refused) <= 21
    assert refused[-1].endswith(" more items ignored (relative, or meaning '/')")
    entries = entries_by_path(env.manifest_lines(summary["manifest_key"]))
    assert entries == {}, "nothing picked, nothing archived: certainly not /"


def test_archive_finishes_despite_escaped_descendants_of_a_picker_and_a_snapshotter(
        env: ArchiveEnv, tmp_path: Path) -> None:
    tag = f"35{os.getpid()}"
    (tmp_path / "kept").write_text("kept")
    env.picker("10-escapes", f"echo '{tmp_path / 'kept'}'\nsetsid sleep {tag}1 &\n")
    env.snapshotter("10-escapes", "printf 'data' >&\"$1\"\n"
                    f"setsid sh -c 'while :; do sleep 1; done; : {tag}2' &\nsleep {tag}3\n")
    env.write_config(extra="[sources]\npicker_timeout = 2\nsnapshot_timeout = 2")
    started = time.monotonic()
    summary = env.archive()
    assert time.monotonic() - started < 2 + 2 + 10
    assert summary["exit_code"] == 3
    text = "\n".join(summary["warnings"])
    assert "picker: 10-escapes: its pipes were still held open 2 s after it ended, by pid " in text
    assert "snapshot: 10-escapes: timed out after 2 s and was killed (4 bytes kept)" in text
    assert os.fsencode(tmp_path / "kept") in entries_by_path(env.manifest_lines(summary["manifest_key"]))
    assert _alive(tag) == []


def _readlink_fails(path: str) -> bool:
    try:
        os.readlink(path)
    except PermissionError:
        return True
    except OSError:
        return False
    return False


@pytest.mark.skipif(not _readlink_fails("/proc/1/cwd"), reason="readlink /proc/1/cwd works here")
def test_the_real_unreadable_symlink_proc_1_cwd(env: ArchiveEnv) -> None:
    env.pick("/proc/1/cwd")
    summary = env.archive()
    assert summary["exit_code"] == 3
    assert ("file: /proc/1/cwd: left out: cannot read the symlink's target: Permission denied"
            in summary["warnings"])
    verified = env.run("verify", summary["run_id"])
    assert verified.exit_code == 0, verified.stderr


def test_picker_output_past_the_limit_is_drained_and_only_whole_paths_are_used(
        tmp_path: Path, monkeypatch) -> None:
    from s3archive.archive.sources import pickers

    monkeypatch.setattr(pickers, "OUTPUT_LIMIT", 1000)
    _script(tmp_path / "10-many", "i=0\nwhile [ $i -lt 500 ]; do echo /path/$i; i=$((i+1)); done\n")
    result = pickers.run_pickers(tmp_path, timeout=30)
    kept = result.paths
    assert kept == [b"/path/%d" % i for i in range(len(kept))] and 50 < len(kept) < 200
    assert sum(len(p) + 1 for p in kept) <= 1000
    total = sum(len(b"/path/%d\n" % i) for i in range(500))
    assert [w.message for w in result.warnings] == [
        f"10-many: wrote {total} bytes; only the paths in its first 1000 bytes are used"]



def _drain(reader) -> int:
    buffer, total = memoryview(bytearray(4096)), 0
    while count := reader.readinto(buffer):
        total += count
    return total


def _held_for_writing(path: Path, seconds: float) -> None:
    """Open ``path`` for writing as a process forked just after it was written would,
    and let go after ``seconds``."""
    writer = os.open(path, os.O_WRONLY)
    threading.Timer(seconds, os.close, (writer,)).start()


def test_an_executable_still_held_open_for_writing_runs_once_released(tmp_path: Path) -> None:
    """exec says "Text file busy" while any process holds the file open for writing: a
    process forked elsewhere just after a picker was written holds it until it execs.
    Pickers and snapshotters are started again for about a second (CI saw
    "10-tree: cannot run: Text file busy" and a run with nothing to archive)."""
    from s3archive.archive.sources.pickers import run_pickers
    from s3archive.archive.sources.snapshotters import run_snapshotter

    (tmp_path / "pickers").mkdir()
    picker = _script(tmp_path / "pickers" / "10-tree", "echo /kept\n")
    _held_for_writing(picker, 0.3)
    result = run_pickers(picker.parent, timeout=30)
    assert (result.paths, result.failures) == ([b"/kept"], []), result

    dump = _script(tmp_path / "20-dump", "printf 'data' >&\"$1\"\n")
    _held_for_writing(dump, 0.3)
    outcome = run_snapshotter(dump, timeout=30, consume=_drain)
    assert outcome.status == "ok", outcome.problem
