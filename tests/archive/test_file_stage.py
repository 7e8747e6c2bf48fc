"""The per-file work of a run: batches of small files, system calls saved (in-memory store)."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

import s3archive.archive.file_stage as file_stage
from s3archive.archive.local_cache import LocalCache
from s3archive.archive.sources import file_reader, fs_metadata
from s3archive.archive.sources.file_reader import Unreadable
from support.memory_host import MemoryHost



@pytest.fixture
def host(tmp_path: Path) -> MemoryHost:
    return MemoryHost(tmp_path, "file-stage-test")


def test_small_files_are_read_in_batches_spooled_in_walk_order(host: MemoryHost, monkeypatch) -> None:
    monkeypatch.setattr(file_stage, "BATCH_FILES", 8)
    monkeypatch.setattr(file_stage, "BATCH_BYTES", 64 * 1024)  # larger files: a task each
    rng = random.Random(15)
    contents = {}
    for number in range(60):
        size = rng.choice([0, 10, 3000, 20_000, 70_000])
        contents[f"f{number:03d}"] = rng.randbytes(size)
    for name, data in contents.items():
        (host.tree / name).write_bytes(data)
    tasks: list[list[bytes]] = []
    real_batch = file_stage.FileStage._read_batch

    def counted(self, files):
        tasks.append([entry.path for entry, _ in files])
        return real_batch(self, files)

    real_read = file_reader.read_file

    def one_unreadable(path, *args, **kwargs):
        if path.endswith(b"/f021"):
            raise Unreadable("cannot read: Input/output error")
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(file_stage.FileStage, "_read_batch", counted)
    monkeypatch.setattr(file_reader, "read_file", one_unreadable)
    summary = host.attempt()

    assert len(summary.warnings) == 1
    assert "f021" in summary.warnings[0] and "Input/output error" in summary.warnings[0]
    read = [path for task in tasks for path in task]
    assert read == sorted(os.fsencode(host.tree / name) for name in contents)  # walk order
    for task in tasks:
        sizes = [len(contents[os.fsdecode(path).rsplit("/", 1)[1]]) for path in task]
        assert len(task) <= 8 and (sum(sizes) < 64 * 1024 + max(sizes) or len(task) == 1)
        if any(size >= 64 * 1024 for size in sizes):
            assert len(task) == 1, "a large file is a task of its own"
    assert len(tasks) < len(contents) / 2, "small files share tasks"
    entries = host.entries()
    assert "f021" not in entries
    for name, data in contents.items():
        if name == "f021":
            continue
        entry = entries[name]
        assert entry.size == len(data)
        assert [c.hash for c in entry.chunks] == ([hashlib.sha256(data).hexdigest()]
                                                  if data else [])
    assert summary.files == len(contents) - 1


def test_a_dense_file_is_not_searched_for_holes_a_sparse_one_is(host: MemoryHost, monkeypatch) -> None:
    (host.tree / "dense").write_bytes(os.urandom(300_000))
    with open(host.tree / "sparse", "wb") as handle:
        handle.write(b"A" * 4096)
        handle.seek(8 << 20)
        handle.write(b"B" * 4096)
    if os.stat(host.tree / "sparse").st_blocks * 512 >= 8 << 20:
        pytest.skip("this filesystem keeps no holes")
    searched: list[int] = []
    real = fs_metadata.data_extents

    def counted(fd, size):
        searched.append(size)
        return real(fd, size)

    monkeypatch.setattr(fs_metadata, "data_extents", counted)
    assert host.attempt().exit_code == 0
    assert searched == [(8 << 20) + 4096], "only the sparse file is searched for holes"
    entries = host.entries()
    assert entries["sparse"].extents == [(0, 4096), (8 << 20, 4096)]
    assert entries["dense"].extents is None
    assert file_reader.is_dense(os.stat(host.tree / "dense"))


def test_a_first_run_makes_no_file_cache_lookups(host: MemoryHost, monkeypatch) -> None:
    for number in range(5):
        (host.tree / f"f{number}").write_bytes(b"x" * number)
    lookups: list[bytes] = []
    real = LocalCache.get_file

    def counted(self, path, key):
        lookups.append(path)
        return real(self, path, key)

    monkeypatch.setattr(LocalCache, "get_file", counted)
    host.attempt()
    assert lookups == []
    second = host.attempt()
    assert len(lookups) == 5 and second.files_unchanged == 5


def test_hits_spooled_at_once_or_behind_files_being_read_make_the_same_run(
        host: MemoryHost, monkeypatch) -> None:
    """A file-cache hit with nothing waiting before it is spooled at once; one behind a
    file still being read waits its turn.  Either way the run is the one reading every
    file again makes, entry for entry, and its hits' chunks are all located."""
    monkeypatch.setattr(file_stage, "HIT_CHUNKS_BYTES", 100)  # handed over a few at a time
    rng = random.Random(21)
    sizes = {}
    for d in range(4):
        (host.tree / f"d{d}").mkdir()
        for n in range(30):
            data = rng.randbytes(rng.choice([0, 50, 5000]))
            (host.tree / f"d{d}" / f"f{n:02d}").write_bytes(data)
            sizes[f"d{d}/f{n:02d}"] = len(data)
    host.archive()
    for d in (1, 3):  # every third file of two directories changes
        for n in range(0, 30, 3):
            with open(host.tree / f"d{d}" / f"f{n:02d}", "ab") as handle:
                handle.write(b"more")
            sizes[f"d{d}/f{n:02d}"] += 4
    ways: list[str] = []
    real_unchanged = file_stage.FileStage._unchanged

    def seen(self, path, st):
        queued = real_unchanged(self, path, st)
        if queued is not None:
            ways.append("at once" if queued is file_stage._SPOOLED else "queued")
        return queued

    monkeypatch.setattr(file_stage.FileStage, "_unchanged", seen)
    summary = host.attempt()
    assert summary.exit_code == 0 and summary.files == 120 and summary.files_unchanged == 100
    assert summary.bytes_total == sum(sizes.values())
    assert ways.count("at once") > 10 and ways.count("queued") > 10, "both ways taken"
    with_hits = host.entries()
    monkeypatch.setattr(LocalCache, "get_file", lambda self, path, key: None)
    again = host.attempt()  # nothing changed since: every file read, no hit
    assert again.exit_code == 0 and again.files_unchanged == 0 and again.files == 120
    assert host.entries() == with_hits
    assert {name: e.size for name, e in with_hits.items() if e.kind == "file"} == sizes


def test_no_wait_for_a_lock_is_logged_when_none_was_held(tmp_path: Path, monkeypatch,
                                                           caplog) -> None:
    # a reader thread can be held up (by the GIL, by a busy machine) between taking the
    # lock and looking at the clock: that is no writer's lock and must not read as one
    path = tmp_path / "free"
    path.write_bytes(b"x")
    ticks = iter(range(1000))
    monkeypatch.setattr(file_reader.time, "monotonic", lambda: float(next(ticks)))
    fd = os.open(path, os.O_RDONLY)
    try:
        with caplog.at_level("INFO", logger=file_reader.__name__):
            file_reader._try_shared_flock(fd, os.fsencode(path), 2.0)
    finally:
        os.close(fd)
    assert "writer's lock" not in caplog.text


def _tree_behind_a_large_file(host: MemoryHost, monkeypatch, small_files: int) -> bytes:
    """A large file (a reader task of its own) first in walk order, ``small_files``
    small ones after it; archived once, then the large file changes: a run reads it
    again while every small file is a file-cache hit queued behind it."""
    monkeypatch.setattr(file_stage, "BATCH_BYTES", 64 * 1024)
    rng = random.Random(33)
    large = host.tree / "a-large"
    large.write_bytes(rng.randbytes(300_000))
    for number in range(small_files):
        (host.tree / f"b{number:03d}").write_bytes(rng.randbytes(rng.choice([0, 40, 900])))
    host.archive()
    with open(large, "ab") as handle:
        handle.write(b"appended")
    return os.fsencode(large)


def _read_after(monkeypatch, path: bytes, event) -> list[bool]:
    """The reading of ``path`` waits (10 s at most) until ``event`` is set; returns
    whether it was, once read."""
    seen: list[bool] = []
    real_read = file_stage.FileStage._read_file

    def held(self, entry, st):
        if entry.path == path:
            seen.append(event.wait(10))
        return real_read(self, entry, st)

    monkeypatch.setattr(file_stage.FileStage, "_read_file", held)
    return seen


def test_the_walk_goes_on_past_a_large_file_being_read(host: MemoryHost, monkeypatch) -> None:
    """Unchanged files queued behind a large file being read do not stop the walk (the
    1 % run: its walk and its changed large files overlap), and the run is the one
    reading every file again makes."""
    import threading

    large = _tree_behind_a_large_file(host, monkeypatch, 60)
    monkeypatch.setattr(file_stage, "MAX_PENDING", 4)  # entries being read: few
    last = os.fsencode(host.tree / "b059")
    walked_all = threading.Event()
    real_unchanged = file_stage.FileStage._unchanged

    def seen(self, path, st):
        if path == last:
            walked_all.set()
        return real_unchanged(self, path, st)

    monkeypatch.setattr(file_stage.FileStage, "_unchanged", seen)
    read = _read_after(monkeypatch, large, walked_all)
    summary = host.attempt()
    assert read == [True], "the walk waited for the large file"
    assert summary.exit_code == 0 and summary.files == 61 and summary.files_unchanged == 60
    with_hits = host.entries()
    monkeypatch.setattr(LocalCache, "get_file", lambda self, path, key: None)
    assert host.attempt().files_unchanged == 0
    assert host.entries() == with_hits


def test_hits_queued_behind_a_large_file_are_bounded(host: MemoryHost, monkeypatch) -> None:
    """The walk waits once the hits queued behind a file being read hold
    ``MAX_QUEUED_HIT_BYTES`` of spool lines (bounded memory)."""
    import threading

    large = _tree_behind_a_large_file(host, monkeypatch, 120)
    monkeypatch.setattr(file_stage, "MAX_QUEUED_HIT_BYTES", 3000)
    walk_waits = threading.Event()
    real_waits = file_stage.FileStage._walk_waits
    queued: list[int] = []
    longest: list[int] = [0]

    def waits(self):
        queued.append(self._queued_hit_bytes)
        if self._pending and type(self._pending[-1]) is file_stage._QueuedHit:
            hit = self._pending[-1]
            longest[0] = max(longest[0], len(hit.path) + len(hit.spooled))
        if real_waits(self):
            walk_waits.set()
            return True
        return False

    monkeypatch.setattr(file_stage.FileStage, "_walk_waits", waits)
    read = _read_after(monkeypatch, large, walk_waits)
    summary = host.attempt()
    assert read == [True], "the walk never waited"
    assert summary.exit_code == 0 and summary.files == 121 and summary.files_unchanged == 120
    assert 3000 < max(queued) <= 3000 + longest[0] + file_stage.HIT_OVERHEAD
