"""Large files written by their GET threads (restore/direct.py): the same bytes,
holes and damage reports as the ordered path, and no write after the file is closed.

The thresholds are lowered so that files of a few hundred KiB take the direct
path on the in-memory store (no Object Lock fidelity needed here).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import threading
import time
from pathlib import Path

import pytest

from s3archive.restore import direct, restorer, tree
from s3archive.restore.restorer import RestoreOptions, restore_run
from support.manifest_builder import RunBuilder
from support.memory_store import FakeClock, MemoryStore
from support.store_wrapper import StoreWrapper

CHUNK = 16 << 10


@pytest.fixture
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Files of 128 KiB or more go direct, in GETs of 48 KiB, 5 files at a time at most;
    returns the paths that did."""
    monkeypatch.setattr(restorer, "DIRECT_BYTES", 128 << 10)
    monkeypatch.setattr(direct, "DIRECT_REQUEST", 48 << 10)
    monkeypatch.setattr(restorer, "GROUP_FILES", 5)
    went: list[bytes] = []
    original = direct.DirectWriter.start

    def start(self, files, *args, **kwargs):  # type: ignore[no-untyped-def]
        went.extend(entry.path for _, entry, *_ in files)
        return original(self, files, *args, **kwargs)
    monkeypatch.setattr(direct.DirectWriter, "start", start)
    return went


def _builder() -> tuple[MemoryStore, RunBuilder]:
    store = MemoryStore(FakeClock())
    return store, RunBuilder(store, lock_mode=None, chunk_size=CHUNK, pack_size=100 << 10)


def test_large_files_restore_the_same_bytes_holes_and_links(small_thresholds, tmp_path: Path
                                                            ) -> None:
    rng = random.Random(15)
    store, builder = _builder()
    builder.dir(b"/")
    block = rng.randbytes(CHUNK)
    repeated = block + rng.randbytes(8 * CHUNK) + block + rng.randbytes(3000)  # a chunk twice
    text = b"".join(b"line %d of a compressible dump\n" % n for n in range(20_000))
    sparse_data = rng.randbytes(9 * CHUNK + 100)
    extents = [(0, 3 * CHUNK + 50), (1 << 20, 6 * CHUNK + 50)]  # a hole of ~1 MiB between
    builder.file(b"/big-random", repeated)
    builder.file(b"/big-text", text)
    builder.hardlink(b"/link-to-big", b"/big-random")
    builder.file(b"/small", b"stays on the ordered path\n")
    builder.file(b"/sparse", sparse_data, extents=extents, size=(1 << 20) + 6 * CHUNK + 50)
    manifest = builder.manifest()
    target = tmp_path / "t"

    report = restore_run(store, manifest, target, options=RestoreOptions(window=160 << 10))

    assert report.ok, (report.damaged, report.failed)
    assert sorted(small_thresholds) == [b"/big-random", b"/big-text", b"/sparse"]
    assert (target / "big-random").read_bytes() == repeated
    assert (target / "big-text").read_bytes() == text
    assert os.stat(target / "link-to-big").st_ino == os.stat(target / "big-random").st_ino
    assert (target / "small").read_bytes() == b"stays on the ordered path\n"
    got = (target / "sparse").read_bytes()
    assert len(got) == (1 << 20) + 6 * CHUNK + 50
    assert got[:3 * CHUNK + 50] == sparse_data[:3 * CHUNK + 50]
    assert got[3 * CHUNK + 50:1 << 20] == bytes((1 << 20) - 3 * CHUNK - 50)
    assert got[1 << 20:] == sparse_data[3 * CHUNK + 50:]
    assert os.stat(target / "sparse").st_blocks * 512 < 1 << 20  # the hole stayed a hole
    for name in ("big-random", "big-text", "sparse"):
        assert os.stat(target / name).st_mtime_ns == 1_700_000_000_000_000_000
    assert report.bytes_written == len(repeated) + len(text) + 26 + len(sparse_data)


def test_a_bad_chunk_damages_only_its_range_of_a_large_file(small_thresholds, tmp_path: Path
                                                            ) -> None:
    data = random.Random(16).randbytes(20 * CHUNK)
    store, builder = _builder()
    builder.dir(b"/")
    entry = builder.file(b"/big", data)
    builder.file(b"/zz-after", b"after\n")
    entry.chunks[7] = dataclasses.replace(entry.chunks[7], hash="0" * 64)
    target = tmp_path / "t"

    report = restore_run(store, builder.manifest(), target)

    assert small_thresholds == [b"/big"]
    assert [p.path for p in report.damaged] == [b"/big"] and not report.failed
    first, last = 7 * CHUNK, 8 * CHUNK - 1
    assert report.damaged[0].message.startswith(f"bytes {first}-{last}: ")
    assert "does not match its hash" in report.damaged[0].message
    got = (target / "big").read_bytes()
    assert got[:first] == data[:first] and got[last + 1:] == data[last + 1:]
    assert got[first:last + 1] == bytes(CHUNK)  # never the unverified bytes
    assert report.bytes_written == len(data) - CHUNK + 6
    assert (target / "zz-after").read_bytes() == b"after\n"


def test_a_write_error_fails_the_file_after_every_get_ended(small_thresholds, monkeypatch,
                                                             tmp_path: Path) -> None:
    data = random.Random(17).randbytes(40 * CHUNK)
    store, builder = _builder()
    builder.dir(b"/")
    builder.file(b"/big", data)
    builder.file(b"/zz-after", b"after\n")
    calls: list[bool] = []  # per pwrite: was the file still open (not yet ended)?
    ended: set[bytes] = set()
    original_end, original_write = tree.TreeWriter._file_ended, direct.pwrite_all

    def file_ended(self, opened):  # type: ignore[no-untyped-def]
        ended.add(opened.item.entry.path)
        return original_end(self, opened)

    def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
        calls.append(b"/big" not in ended)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original_write(fd, data, offset)
    monkeypatch.setattr(tree.TreeWriter, "_file_ended", file_ended)
    monkeypatch.setattr(direct, "pwrite_all", pwrite_all)
    target = tmp_path / "t"

    report = restore_run(store, builder.manifest(), target,
                         options=RestoreOptions(workers=4, window=400 << 10))

    assert [(p.path, p.message) for p in report.failed] == [
        (b"/big", "cannot write: No space left on device")]
    assert calls and all(calls)  # no thread wrote once the file was given up
    assert sorted(os.listdir(target)) == ["zz-after"]  # the partial file is removed
    assert report.files == 1 and report.entries == 3


class _HeldGets(StoreWrapper):
    """Ranged GETs of the direct path wait until ``release`` is set: the files they
    write are still being written when the main thread goes on."""

    def __init__(self, inner: MemoryStore):
        super().__init__(inner)
        self.release = threading.Event()

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        if threading.current_thread().name.startswith("s3archive-write"):
            assert self.release.wait(10), "the main thread never got past the directory"
        return self.inner.get(key, version_id, byte_range)


def test_a_directory_gets_its_metadata_after_its_files_written_in_the_background(
        small_thresholds, monkeypatch, tmp_path: Path) -> None:
    """--overwrite moves each file into place from a temporary name when it ends: a
    directory left while its large files are still written waits for them (else the
    rename would change its mtime, or fail in a read-only directory), and entries are
    still told in path order."""
    rng = random.Random(18)
    store, builder = _builder()
    held = _HeldGets(store)
    builder.dir(b"/")
    builder.dir(b"/ro", mode=0o555, mtime_ns=1_600_000_000_000_000_000)
    first, second = rng.randbytes(12 * CHUNK), rng.randbytes(9 * CHUNK)
    builder.file(b"/ro/a-big", first)
    builder.file(b"/ro/b-big", second)
    builder.file(b"/ro/c-small", b"small\n")
    builder.file(b"/zz", b"after the directory\n")
    original_leave = tree.TreeWriter.leave_dirs

    def leave_dirs(self, parts):  # type: ignore[no-untyped-def]
        result = original_leave(self, parts)
        if parts == (b"zz",):  # /ro was left: its files may go on now
            held.release.set()
        return result
    monkeypatch.setattr(tree.TreeWriter, "leave_dirs", leave_dirs)
    target = tmp_path / "t"
    target.mkdir()
    (target / "old").write_bytes(b"the target is not empty\n")
    told: list[bytes] = []

    report = restore_run(held, builder.manifest(), target, listed=told.append,
                         options=RestoreOptions(overwrite=True))

    assert report.ok, (report.damaged, report.failed)
    assert sorted(small_thresholds) == [b"/ro/a-big", b"/ro/b-big"]
    assert (target / "ro" / "a-big").read_bytes() == first
    assert (target / "ro" / "b-big").read_bytes() == second
    assert (target / "ro" / "c-small").read_bytes() == b"small\n"
    assert sorted(os.listdir(target / "ro")) == ["a-big", "b-big", "c-small"]
    st = os.stat(target / "ro")
    assert st.st_mode & 0o7777 == 0o555
    assert st.st_mtime_ns == 1_600_000_000_000_000_000
    assert told == [b"/", b"/ro", b"/ro/a-big", b"/ro/b-big", b"/ro/c-small", b"/zz"]


def test_the_dry_run_counts_the_gets_of_files_fetched_together(small_thresholds,
                                                               tmp_path: Path) -> None:
    """Large files back to back share GETs (groups of GROUP_FILES); --dry-run plans the
    same GETs: its requests and bytes are what the restore downloads."""
    rng = random.Random(19)
    store, builder = _builder()
    builder.dir(b"/")
    shared = rng.randbytes(CHUNK)
    for number in range(7):  # one group of 5 (GROUP_FILES lowered), then one of 2
        builder.file(b"/big-%d" % number, rng.randbytes(8 * CHUNK + number) + shared)
    builder.file(b"/small", b"between\n")
    builder.file(b"/later-big", shared + rng.randbytes(9 * CHUNK))
    manifest = builder.manifest()
    target = tmp_path / "t"
    before = store.usage()

    preview = restorer.preview_restore(manifest)
    report = restore_run(store, manifest, target)

    assert report.ok, (report.damaged, report.failed)
    assert len(small_thresholds) == 8
    gets = report.store["requests"]["GetObject"] - before.requests.get("GetObject", 0)
    assert gets == preview.requests
    assert store.usage().bytes_down - before.bytes_down == preview.download_bytes
    alone = sum(len(direct.group_reads(entry.chunks).requests)
                for entry in manifest.entries if entry.size >= 128 << 10)
    assert preview.requests < alone  # files back to back share GETs


class _SlowGets(StoreWrapper):
    """Every ranged GET takes 10 ms: files stay under way while the main thread goes on."""

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        if byte_range is not None:
            time.sleep(0.01)
        return self.inner.get(key, version_id, byte_range)


def test_files_under_way_are_bounded_in_number_and_bytes(small_thresholds, monkeypatch,
                                                         tmp_path: Path) -> None:
    """The main thread waits rather than open more than MAX_FILES files, or files of
    more than MAX_BYTES (their chunk lists are held), for the direct path."""
    monkeypatch.setattr(direct, "MAX_FILES", 3)
    monkeypatch.setattr(direct, "MAX_BYTES", 400 << 10)
    rng = random.Random(20)
    store, builder = _builder()
    builder.dir(b"/")
    sizes = [9 * CHUNK, 40 * CHUNK, 9 * CHUNK, 9 * CHUNK, 10 * CHUNK, 12 * CHUNK, 9 * CHUNK]
    contents = {b"/f%d" % n: rng.randbytes(size) for n, size in enumerate(sizes)}
    for path, data in contents.items():
        builder.file(path, data)
    seen: list[tuple[int, int]] = []  # (files, bytes) under way before each start
    original = direct.DirectWriter.start

    def start(self, files, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((self.under_way, self._under_way_bytes))
        return original(self, files, *args, **kwargs)
    monkeypatch.setattr(direct.DirectWriter, "start", start)
    target = tmp_path / "t"

    report = restore_run(_SlowGets(store), builder.manifest(), target)

    assert report.ok and len(small_thresholds) == len(sizes)
    for path, data in contents.items():
        assert (target / path.decode()[1:]).read_bytes() == data
    assert all(files < 3 and (files == 0 or size < 400 << 10) for files, size in seen), seen


def test_a_large_file_whose_chunks_overrun_its_extents_fails_alone(small_thresholds,
                                                                   tmp_path: Path) -> None:
    """A crafted entry (chunks longer than its data extents) is refused by itself; the
    files fetched with it and after it are restored (no hang, no crash)."""
    rng = random.Random(21)
    store, builder = _builder()
    builder.dir(b"/")
    before, after = rng.randbytes(10 * CHUNK), rng.randbytes(10 * CHUNK)
    builder.file(b"/a", before)
    bad = builder.file(b"/b", rng.randbytes(10 * CHUNK))
    builder.file(b"/c", after)
    object.__setattr__(bad, "extents", [(0, 100)])
    target = tmp_path / "t"

    report = restore_run(store, builder.manifest(), target)

    assert [(p.path, p.message) for p in report.failed] == [
        (b"/b", "its chunks are longer than its data extents")]
    assert (target / "a").read_bytes() == before and (target / "c").read_bytes() == after
    assert sorted(os.listdir(target)) == ["a", "c"]


class _SmallGetsWait(StoreWrapper):
    """The GETs of the ordered path (smaller files' chunks) wait, up to a bound, until
    a GET of the direct path has begun."""

    def __init__(self, inner: MemoryStore):
        super().__init__(inner)
        self.direct_began = threading.Event()
        self.waited_in_vain = 0

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        if threading.current_thread().name.startswith("s3archive-write"):
            self.direct_began.set()
        elif not self.direct_began.wait(2):
            self.waited_in_vain += 1
        return self.inner.get(key, version_id, byte_range)


@pytest.mark.parametrize("where", ["/a", "/b"])
def test_large_files_are_written_before_the_chunks_of_the_smaller_files_after_them_arrive(
        where: str, small_thresholds, tmp_path: Path) -> None:
    """The main thread hands a run of large files to the GET threads as soon as the
    entries before them are written, not after the chunks of the small files that
    follow them (in the same directory or the next) are in."""
    rng = random.Random(19)
    store, builder = _builder()
    slow = _SmallGetsWait(store)
    builder.dir(b"/")
    builder.dir(b"/a")
    big = rng.randbytes(12 * CHUNK)
    builder.file(b"/a/big", big)
    if where == "/b":
        builder.dir(b"/b")
    small = {f"{where}/small-{n:02d}": b"small file %d\n" % n for n in range(20)}
    for path, data in small.items():
        builder.file(path.encode(), data)
    target = tmp_path / "t"

    report = restore_run(slow, builder.manifest(), target)

    assert report.ok, (report.damaged, report.failed)
    assert small_thresholds == [b"/a/big"]
    assert slow.waited_in_vain == 0
    assert (target / "a" / "big").read_bytes() == big
    assert all((target / path[1:]).read_bytes() == data for path, data in small.items())
