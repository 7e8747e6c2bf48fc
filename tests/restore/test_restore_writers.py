"""The smaller files created, written and closed by writer threads (restore/writers.py):
the same bytes, modes and times as before, each directory's metadata after all its
files, hard links after their file, entries told in path order, a write error
failing its file only, and a bug in a writer stopping the restore.

The in-memory store is enough (no Object Lock fidelity needed); writer threads are
slowed for some files so that the main thread runs ahead of them.
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from pathlib import Path

import pytest

from s3archive.restore import tree, writers
from s3archive.restore.restorer import restore_run
from support.manifest_builder import RunBuilder
from support.memory_store import FakeClock, MemoryStore

DIR_TIME = 1_600_000_000_000_000_000


def _run(rng: random.Random) -> tuple[MemoryStore, RunBuilder, dict[bytes, bytes]]:
    """Three read-only directories of 70 small files (empty, tiny, a few chunks), one
    nested, a hard link to a file just written and a sparse file."""
    store = MemoryStore(FakeClock())
    builder = RunBuilder(store, lock_mode=None, chunk_size=4 << 10, pack_size=64 << 10)
    builder.dir(b"/")
    files: dict[bytes, bytes] = {}
    for d in range(3):
        top = b"/d%d" % d
        builder.dir(top, mode=0o555, mtime_ns=DIR_TIME + d)
        if d == 1:
            builder.dir(top + b"/inner", mode=0o500, mtime_ns=DIR_TIME + 10)
            for n in range(40):
                path = top + b"/inner/f%03d" % n
                files[path] = rng.randbytes(rng.choice((0, 5, 3000, 9000)))
                builder.file(path, files[path], mode=0o600, mtime_ns=DIR_TIME + 100 + n)
        for n in range(70):
            path = top + b"/f%03d" % n
            files[path] = rng.randbytes(rng.choice((0, 7, 1000, 13000)))
            builder.file(path, files[path], mode=0o640, mtime_ns=DIR_TIME + 200 + n)
    builder.hardlink(b"/d2/f069-link", b"/d2/f069")
    sparse = rng.randbytes(8192)
    builder.file(b"/d2/sparse", sparse, extents=[(0, 4096), (65536, 4096)], size=69632)
    files[b"/d2/sparse"] = sparse[:4096] + bytes(65536 - 4096) + sparse[4096:]
    return store, builder, files


def _slow_writes(monkeypatch: pytest.MonkeyPatch, every: int = 9) -> list[bytes]:
    """Every ``every``-th file a writer thread writes takes 20 ms: the main thread runs
    ahead into the next directories meanwhile.  Returns the paths writer threads wrote."""
    original = tree._fill
    written: list[bytes] = []

    def fill(fd, entry, chunks, kept, result):  # type: ignore[no-untyped-def]
        if threading.current_thread() is not threading.main_thread():
            written.append(entry.path)
            if len(written) % every == 0:
                time.sleep(0.02)
        return original(fd, entry, chunks, kept, result)
    monkeypatch.setattr(tree, "_fill", fill)
    return written


def test_small_files_written_by_threads_restore_exactly(monkeypatch, tmp_path: Path) -> None:
    store, builder, files = _run(random.Random(30))
    by_writers = _slow_writes(monkeypatch)
    target = tmp_path / "t"
    told: list[bytes] = []

    report = restore_run(store, builder.manifest(), target, listed=told.append)

    assert report.ok, (report.damaged, report.failed)
    assert sorted(by_writers) == sorted(files)  # every file went through a writer thread
    for path, data in files.items():
        local = target / path.decode()[1:]
        assert local.read_bytes() == data, path
        if path == b"/d2/sparse":
            continue
        st = os.stat(local)
        assert st.st_mode & 0o777 == (0o600 if b"/inner/" in path else 0o640), path
        assert st.st_mtime_ns == DIR_TIME + int(path[-3:]) + (
            100 if b"/inner/" in path else 200), path
    assert os.stat(target / "d2" / "sparse").st_blocks * 512 < 65536  # a hole stayed one
    assert os.stat(target / "d2/f069-link").st_ino == os.stat(target / "d2/f069").st_ino
    # every directory's mode and mtime came after its last file (a file created in it
    # later would have moved its mtime)
    for d in range(3):
        st = os.stat(target / f"d{d}")
        assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o555, DIR_TIME + d)
    st = os.stat(target / "d1" / "inner")
    assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o500, DIR_TIME + 10)
    assert told == sorted(told, key=lambda p: p.split(b"/")) and len(told) == report.entries
    assert report.files == len(files)
    assert report.bytes_written == sum(len(d) for d in files.values()) - (65536 - 4096)


def test_a_write_error_on_a_writer_thread_fails_its_file_only(monkeypatch, tmp_path: Path
                                                              ) -> None:
    store, builder, files = _run(random.Random(31))
    _slow_writes(monkeypatch)
    victim = next(p for p, d in sorted(files.items()) if p.startswith(b"/d1/f") and d)
    original = tree.pwrite_all

    def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
        if bytes(data) == files[victim][offset:offset + len(data)] and offset == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(fd, data, offset)
    monkeypatch.setattr(tree, "pwrite_all", pwrite_all)
    target = tmp_path / "t"
    told: list[bytes] = []

    report = restore_run(store, builder.manifest(), target, listed=told.append)

    assert [(p.path, p.message) for p in report.failed] == [
        (victim, "cannot write: No space left on device")]
    assert not report.damaged
    assert not (target / victim.decode()[1:]).exists()  # the partial file is removed
    assert victim not in told
    for path, data in files.items():
        if path != victim:
            assert (target / path.decode()[1:]).read_bytes() == data, path
    assert os.stat(target / "d1").st_mtime_ns == DIR_TIME + 1  # after the removal
    assert report.files == len(files) - 1


def test_a_bug_on_a_writer_thread_stops_the_restore(monkeypatch, tmp_path: Path) -> None:
    store, builder, files = _run(random.Random(32))
    original = tree._fill
    count = [0]

    def fill(fd, entry, chunks, kept, result):  # type: ignore[no-untyped-def]
        count[0] += 1
        if count[0] == 50:
            raise RuntimeError("a bug in a writer")
        return original(fd, entry, chunks, kept, result)
    monkeypatch.setattr(tree, "_fill", fill)
    before = set(os.listdir("/proc/self/fd"))

    with pytest.raises(RuntimeError, match="a bug in a writer"):
        restore_run(store, builder.manifest(), tmp_path / "t")

    assert not [t for t in threading.enumerate() if t.name == "s3archive-restore-write"]
    assert set(os.listdir("/proc/self/fd")) <= before  # no descriptor left open


def test_writers_hand_back_every_job_and_what_it_raised() -> None:
    def write(job: int) -> None:
        if job % 7 == 3:
            raise OSError(errno.EIO, "bad")

    got: dict[int, BaseException | None] = {}
    with writers.FileWriters(write, max_files=40, max_bytes=1 << 30) as pool:
        for job in range(100):
            pool.add(job, 1)
            while pool.full:
                for done, error in pool.finished(wait=True):
                    got[done] = error
                    pool.taken(1)
        while pool.under_way:
            for done, error in pool.finished(wait=True):
                got[done] = error
                pool.taken(1)
    assert sorted(got) == list(range(100))
    assert {job for job, error in got.items() if error is not None} == {
        job for job in range(100) if job % 7 == 3}
