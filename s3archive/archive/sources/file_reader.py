"""Read one regular file into chunks, noticing when it changes underneath.

The file is opened without following symlinks and without updating its
atime; a shared advisory ``flock`` is tried first (a writer that holds an
exclusive one gets a short grace period); holes of sparse files are never
read (a file whose allocated blocks cover its size has none: its holes are
not looked for).  The caller re-reads a file that changed while read, once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from s3archive.archive.chunker import MIN_SIZE, Chunker
from s3archive.archive.sources import fs_metadata

FLOCK_WAIT_S = 2.0  # the default of [sources] lock_timeout
# a dense file no larger than this is one chunk (the chunker's minimum), read in one pread
ONE_READ = MIN_SIZE

log = logging.getLogger(__name__)


class Unreadable(Exception):
    """The file could not be read; ``str()`` is the warning."""


@dataclass
class FileContent:
    size: int
    extents: list[tuple[int, int]] | None
    chunks: list[tuple[str, int]]  # (hash, plain size), in file order
    bytes_read: int
    changed: bool  # size, mtime or ctime moved while it was read
    after: os.stat_result


@dataclass
class FileRead:
    """A file read whole (once more if it changed meanwhile): what its entry and
    the file cache need.  ``ok`` False: unreadable, ``problems`` says why."""

    ok: bool = True
    bytes_read: int = 0
    chunks: list[tuple[str, int]] = field(default_factory=list)  # (id, plain size)
    problems: list[str] = field(default_factory=list)  # warnings about the file
    size: int = 0
    extents: list[tuple[int, int]] | None = None
    mtime_ns: int = 0
    ino: int = 0
    ctime_ns: int = 0
    # (dev, ino, size, mtime_ns, ctime_ns) when the file did not change while read
    cache_key: tuple[int, int, int, int, int] | None = None


class Opened(NamedTuple):
    """A file open for reading, checked against the walk (:func:`open_checked`)."""

    fd: int
    before: os.stat_result


def read_whole(path: bytes, expected_ino: int, walked_ctime_ns: int, chunker: Chunker,
               add_chunk: Callable[[bytes | memoryview], tuple[str, int]],
               on_read: Callable[[int], None] = lambda n: None,
               lock_timeout: float = FLOCK_WAIT_S, opened: Opened | None = None) -> FileRead:
    """Read a file, once more if it changed meanwhile (in a reader thread or a
    content worker: nothing here touches the run's state).  ``opened``: the
    file's first reading starts from it (and closes it)."""
    result = FileRead()
    for attempt in (1, 2):
        try:
            if opened is not None:
                content = read_opened(opened, path, chunker, add_chunk, on_read, lock_timeout)
                opened = None
            else:
                content = read_file(path, expected_ino, chunker, add_chunk, on_read,
                                    lock_timeout)
        except Unreadable as problem:
            result.problems.append(str(problem))
            result.ok = False
            return result
        result.bytes_read += content.bytes_read
        if not content.changed:
            break
        if attempt == 2:
            result.problems.append("changed while being read (read twice); stored as read "
                                   "the second time")
    after = content.after
    result.size, result.extents = content.size, content.extents
    result.chunks = content.chunks
    result.mtime_ns, result.ino, result.ctime_ns = after.st_mtime_ns, after.st_ino, after.st_ctime_ns
    if not content.changed and after.st_ctime_ns == walked_ctime_ns:
        # (a ctime that moved since the walk may hide a metadata change
        # the entry does not have: such a file is described afresh next time)
        result.cache_key = (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns,
                            after.st_ctime_ns)
    return result


def read_file(path: bytes, expected_ino: int, chunker: Chunker,
              add_chunk: Callable[[bytes | memoryview], tuple[str, int]],
              on_read: Callable[[int], None] = lambda n: None,
              lock_timeout: float = FLOCK_WAIT_S) -> FileContent:
    return read_opened(open_checked(path, expected_ino), path, chunker, add_chunk, on_read,
                       lock_timeout)


def open_checked(path: bytes, expected_ino: int) -> Opened:
    """The file open for reading, still the regular file the walk saw (inode);
    Unreadable (its warning) when it is not."""
    try:
        fd = open_for_reading(path)
    except FileNotFoundError:
        raise Unreadable("vanished before it could be read") from None
    except OSError as err:
        raise Unreadable(f"cannot read: {err.strerror or err}") from None
    try:
        before = os.fstat(fd)
    except OSError as err:
        os.close(fd)
        raise Unreadable(f"read failed: {err.strerror or err}") from None
    if not stat.S_ISREG(before.st_mode) or before.st_ino != expected_ino:
        os.close(fd)
        raise Unreadable("was replaced while being read; skipped")
    return Opened(fd, before)


def read_opened(opened: Opened, path: bytes, chunker: Chunker,
                add_chunk: Callable[[bytes | memoryview], tuple[str, int]],
                on_read: Callable[[int], None] = lambda n: None,
                lock_timeout: float = FLOCK_WAIT_S) -> FileContent:
    """Read a file :func:`open_checked` opened (its descriptor is closed here)."""
    fd, before = opened
    if before.st_size <= ONE_READ and is_dense(before):  # most files
        return _read_in_one(fd, before, path, add_chunk, on_read, lock_timeout)
    try:
        _try_shared_flock(fd, path, lock_timeout)
        extents = None if is_dense(before) else fs_metadata.data_extents(fd, before.st_size)
        chunks: list[tuple[str, int]] = []
        total = 0
        for plain in chunker.file(fd, before.st_size, extents):
            chunks.append(add_chunk(plain))
            total += len(plain)
            on_read(len(plain))
        after = os.fstat(fd)
    except OSError as err:
        raise Unreadable(f"read failed: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if extents is not None and total != sum(n for _, n in extents):
        # the file shrank while we read: keep the extents as far as they were read
        changed = True
        extents = clip_extents(extents, total)
        size = max(after.st_size, extents[-1][0] + extents[-1][1] if extents else 0)
    else:
        size = total if extents is None else before.st_size
        changed = (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != \
            (before.st_size, before.st_mtime_ns, before.st_ctime_ns) or \
            (extents is None and total != before.st_size)
    return FileContent(size=size, extents=extents, chunks=chunks, bytes_read=total,
                       changed=changed, after=after)


def _read_in_one(fd: int, before: os.stat_result, path: bytes,
                 add_chunk: Callable[[bytes | memoryview], tuple[str, int]],
                 on_read: Callable[[int], None], lock_timeout: float) -> FileContent:
    """:func:`read_opened` of a dense file of at most ``ONE_READ`` bytes: one chunk
    (:meth:`Chunker.file`), read with one ``pread`` of a byte more than its size (that
    byte shows growth), without the chunker's generator (~2 us of a small file's ~40)."""
    try:
        _try_shared_flock(fd, path, lock_timeout)
        data = os.pread(fd, before.st_size + 1, 0)
        after = os.fstat(fd)
    except OSError as err:
        raise Unreadable(f"read failed: {err.strerror or err}") from None
    finally:
        os.close(fd)
    total = len(data)
    chunks = []
    if total:
        chunks.append(add_chunk(data))
        on_read(total)
    changed = (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != \
        (before.st_size, before.st_mtime_ns, before.st_ctime_ns) or total != before.st_size
    return FileContent(size=total, extents=None, chunks=chunks, bytes_read=total,
                       changed=changed, after=after)


def is_dense(st: os.stat_result) -> bool:
    """Whether the file's allocated blocks cover its size: then it has no holes
    to map (three ``lseek`` calls saved on almost every file).

    Blocks preallocated past the end (``fallocate --keep-size``) could hide a
    hole: such a file is stored as if dense, its bytes the same (zeros).
    """
    return st.st_blocks * 512 >= st.st_size


def clip_extents(extents: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """The first ``total`` bytes' worth of ``extents``."""
    clipped = []
    for offset, length in extents:
        if total <= 0:
            break
        clipped.append((offset, min(length, total)))
        total -= length
    return clipped


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC


def open_for_reading(path: bytes) -> int:
    """The file's descriptor, opened without following a symlink, without blocking
    (a fifo), without updating its atime where allowed."""
    try:
        return os.open(path, _OPEN_FLAGS | os.O_NOATIME)
    except PermissionError:
        return os.open(path, _OPEN_FLAGS)  # O_NOATIME needs ownership or CAP_FOWNER


def _try_shared_flock(fd: int, path: bytes, timeout: float) -> None:
    """Politely wait a little for writers holding an exclusive advisory lock;
    a wait is logged, so a slow run can be explained."""
    began: float | None = None  # set once a writer's lock made us wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            if began is not None:
                log.info("waited %.1f s for a writer's lock on %s", time.monotonic() - began,
                         path.decode("utf-8", "backslashreplace"))
            return
        except BlockingIOError:
            if began is None:
                began = time.monotonic()
            if time.monotonic() - began >= timeout:
                log.info("%s: a writer still holds its lock after %g s (sources.lock_timeout); "
                         "reading it anyway", path.decode("utf-8", "backslashreplace"), timeout)
                return
            time.sleep(0.05)
        except OSError as err:
            if err.errno in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP):
                return
            raise
