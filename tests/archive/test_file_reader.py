"""file_reader: a small dense file is read in one pread from where it was opened."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from s3archive.archive.chunker import MIN_SIZE, Chunker
from s3archive.archive.sources import file_reader
from s3archive.archive.sources.file_reader import open_checked, read_whole


def _read(path: Path, change=None) -> tuple[file_reader.FileRead, list[bytes]]:
    """read_whole of ``path`` opened first (as a content worker does), ``change``
    applied between the open and the read."""
    st = os.lstat(path)
    opened = open_checked(os.fsencode(path), st.st_ino)
    if change is not None:
        change()
    added: list[bytes] = []

    def add(plain):
        added.append(bytes(plain))
        return hashlib.sha256(plain).hexdigest(), len(plain)

    return read_whole(os.fsencode(path), st.st_ino, st.st_ctime_ns, Chunker(), add,
                      opened=opened), added


def test_a_small_file_is_one_chunk_read_once_and_cacheable(tmp_path: Path) -> None:
    for size in (0, 1, 1700, MIN_SIZE):
        path = tmp_path / f"f{size}"
        data = os.urandom(size)
        path.write_bytes(data)
        read, added = _read(path)
        after = os.stat(path)
        assert read.ok and read.problems == [] and read.size == size and read.extents is None
        assert added == ([data] if size else [])
        assert read.chunks == ([(hashlib.sha256(data).hexdigest(), size)] if size else [])
        assert read.bytes_read == size
        assert read.cache_key == (after.st_dev, after.st_ino, size, after.st_mtime_ns,
                                  after.st_ctime_ns)


def test_a_small_file_that_grows_or_shrinks_after_it_was_opened_is_read_again(
        tmp_path: Path) -> None:
    path = tmp_path / "grows"
    path.write_bytes(b"x" * 100)

    def grow() -> None:
        with open(path, "ab") as handle:
            handle.write(b"y" * 10)

    read, added = _read(path, grow)
    assert read.ok and read.problems == []
    assert read.size == 110 and read.chunks[-1][1] == 110 and added[-1] == b"x" * 100 + b"y" * 10
    assert read.bytes_read == 101 + 110  # the first reading saw the byte past its size
    assert read.cache_key is None  # its ctime moved since the walk: described afresh

    path = tmp_path / "shrinks"
    path.write_bytes(b"z" * 100)
    read, added = _read(path, lambda: os.truncate(path, 40))
    assert read.ok and read.problems == [] and read.size == 40 and added[-1] == b"z" * 40
    assert read.bytes_read == 40 + 40 and read.cache_key is None


def test_a_file_replaced_after_the_walk_is_not_opened_as_the_walk_saw_it(
        tmp_path: Path) -> None:
    path = tmp_path / "replaced"
    path.write_bytes(b"old")
    st = os.lstat(path)
    (tmp_path / "new").write_bytes(b"new")
    os.rename(tmp_path / "new", path)  # another inode under the same name
    try:
        open_checked(os.fsencode(path), st.st_ino)
    except file_reader.Unreadable as problem:
        assert str(problem) == "was replaced while being read; skipped"
    else:
        raise AssertionError("a replaced file was opened")
