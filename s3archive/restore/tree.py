"""Write restored entries below a target directory, and nowhere else.

Every directory is opened relative to an open descriptor of its parent with
``O_DIRECTORY | O_NOFOLLOW`` (starting from the target's descriptor), every
object is created with ``dir_fd`` (files with ``O_EXCL | O_NOFOLLOW``: at
their name in an empty target, else under a temporary name renamed into
place), and no path string is ever resolved through the filesystem.  A symlink met where a directory should be
is never followed: with ``--overwrite`` it is removed and replaced by the
directory, otherwise the entries below it are refused.  Directory modes,
ACLs and mtimes are applied last, deepest first, so a read-only directory
still receives its contents.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from s3archive.errors import UsageError
from s3archive.restore.apply import MetadataApplier
from s3archive.format.model import BLOCKDEV, CHARDEV, FIFO, SYMLINK, ChunkRef, Entry
from s3archive.restore.plan import PlannedEntry

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class EntryFailed(Exception):
    """This entry could not be restored; the message says why."""


@dataclass
class FileResult:
    written: int = 0  # plain bytes written
    damage: list[str] = field(default_factory=list)  # why some ranges are missing


ChunkSource = Iterator[tuple[ChunkRef, bytes | memoryview | None, str | None]]


class TreeWriter:
    """Creates entries below ``target``; use as a context manager."""

    def __init__(self, target: Path, applier: MetadataApplier, overwrite: bool = False):
        self.target = target
        self.applier = applier
        self.overwrite = overwrite
        self.root_fd = -1
        self._stack: list[tuple[bytes, int]] = []  # open directories below the root
        self._dirs: list[Entry] = []  # directory entries, metadata applied at the end
        self._dir_parts: list[tuple[bytes, ...]] = []
        self._tmp_names = (f".s3archive-restore.{os.getpid()}.{n}".encode()
                           for n in itertools.count())

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> "TreeWriter":
        try:
            self.target.mkdir(parents=True, exist_ok=True)
            self.root_fd = os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise UsageError(f"{self.target}: cannot use as restore target: "
                             f"{err.strerror}") from None
        if not self.overwrite and os.listdir(self.root_fd):
            os.close(self.root_fd)
            raise UsageError(f"{self.target} is not empty (use --overwrite to restore "
                             "into it anyway)")
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_stack(0)
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    # ---------------------------------------------------------- directories

    def _close_stack(self, keep: int) -> None:
        while len(self._stack) > keep:
            os.close(self._stack.pop()[1])

    def _open_child_dir(self, parent_fd: int, name: bytes, create: bool) -> int:
        """Open (or create) directory ``name`` in ``parent_fd`` without following symlinks."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise EntryFailed(f"directory {name!r} is missing") from None
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise EntryFailed(f"cannot open directory {name!r}: {err.strerror}") from None
        if not self.overwrite:
            raise EntryFailed(f"{name!r} in the target is not a directory (a symlink is "
                              "never followed)")
        self._remove(parent_fd, name)
        os.mkdir(name, 0o755, dir_fd=parent_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)

    def parent_fd(self, parts: tuple[bytes, ...]) -> int:
        """The open directory holding ``parts[-1]`` (the stack follows sorted order)."""
        wanted = parts[:-1]
        common = 0
        while (common < len(self._stack) and common < len(wanted)
               and self._stack[common][0] == wanted[common]):
            common += 1
        self._close_stack(common)
        for name in wanted[common:]:
            fd = self._stack[-1][1] if self._stack else self.root_fd
            self._stack.append((name, self._open_child_dir(fd, name, create=True)))
        return self._stack[-1][1] if self._stack else self.root_fd

    def _walk_open(self, parts: tuple[bytes, ...]) -> int:
        """A new descriptor of the restored directory ``parts`` (caller closes it)."""
        fd = os.dup(self.root_fd)
        try:
            for name in parts:
                child = self._open_child_dir(fd, name, create=False)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def make_dir(self, item: PlannedEntry) -> None:
        if item.parts:
            parent = self.parent_fd(item.parts)
            name = item.parts[-1]
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    if not self.overwrite:
                        raise EntryFailed("exists and is not a directory") from None
                    self._remove(parent, name)
                    os.mkdir(name, 0o700, dir_fd=parent)
        self._dirs.append(item.entry)
        self._dir_parts.append(item.parts)

    def finish_dirs(self, fail: Callable[[bytes, str], None]) -> None:
        """Directory metadata, deepest first (the reverse of manifest order)."""
        self._close_stack(0)
        for entry, parts in zip(reversed(self._dirs), reversed(self._dir_parts)):
            try:
                fd = self._walk_open(parts)
            except (EntryFailed, OSError) as err:
                fail(entry.path, f"cannot set directory metadata: {err}")
                continue
            try:
                self.applier.apply_fd(fd, entry)
            finally:
                os.close(fd)

    # ------------------------------------------------------------ other kinds

    def _place(self, parent: int, tmp: bytes, name: bytes) -> None:
        """Rename ``tmp`` over ``name`` (never follows a symlink at ``name``)."""
        try:
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError as err:
            if err.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST,
                                 errno.ENOTDIR) or not self.overwrite:
                _unlink_quietly(parent, tmp)
                raise EntryFailed(f"cannot move into place: {err.strerror}") from None
            self._remove(parent, name)
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)

    @staticmethod
    def _remove(parent: int, name: bytes) -> None:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(os.fsdecode(name), dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)

    def make_special(self, item: PlannedEntry) -> None:
        """Symlinks, fifos and device nodes."""
        entry = item.entry
        parent = self.parent_fd(item.parts)
        tmp = next(self._tmp_names)
        if entry.kind == SYMLINK:
            assert entry.target is not None
            if not entry.target or b"\0" in entry.target:
                raise EntryFailed("symlink target is empty or contains NUL")
            os.symlink(entry.target, tmp, dir_fd=parent)
        elif entry.kind == FIFO:
            os.mkfifo(tmp, 0o600, dir_fd=parent)
        elif entry.kind in (CHARDEV, BLOCKDEV):
            if not self.applier.is_root:
                self.applier.warn(entry.path, "device node not created: that needs root")
                return
            assert entry.rdev is not None
            kind = stat.S_IFCHR if entry.kind == CHARDEV else stat.S_IFBLK
            try:
                os.mknod(tmp, kind | 0o600, os.makedev(*entry.rdev), dir_fd=parent)
            except (OverflowError, ValueError):
                raise EntryFailed(f"device number {entry.rdev} out of range") from None
            except OSError as err:
                raise EntryFailed(f"cannot create device node: {err.strerror}") from None
        else:
            raise EntryFailed(f"unexpected kind {entry.kind}")
        self.applier.apply_at(parent, tmp, entry)
        self._place(parent, tmp, item.parts[-1])

    def make_hardlink(self, item: PlannedEntry) -> None:
        assert item.link_to is not None
        parent = self.parent_fd(item.parts)
        try:
            source_dir = self._walk_open(item.link_to[:-1])
        except EntryFailed as err:
            raise EntryFailed(f"link source missing: {err}") from None
        tmp = next(self._tmp_names)
        try:
            os.link(item.link_to[-1], tmp, src_dir_fd=source_dir, dst_dir_fd=parent,
                    follow_symlinks=False)
        except OSError as err:
            raise EntryFailed(f"cannot link to {b'/'.join(item.link_to)!r}: "
                              f"{err.strerror}") from None
        finally:
            os.close(source_dir)
        self._place(parent, tmp, item.parts[-1])
        # rename() between two names of one inode does nothing: drop the temporary name
        _unlink_quietly(parent, tmp)

    # ----------------------------------------------------------------- files

    def write_file(self, item: PlannedEntry, chunks: ChunkSource) -> FileResult:
        """Create the file from ``chunks``: this file's chunks, in order.

        Holes stay holes: a sparse file is truncated to its size first and
        only its data extents are written.  A bad chunk leaves its range as a
        hole and is reported in ``damage``; the file is still placed.  Into an
        empty target the file is created at its name with ``O_EXCL |
        O_NOFOLLOW``; with ``--overwrite`` under a temporary name, then renamed.
        """
        entry = item.entry
        parent = self.parent_fd(item.parts)
        name = next(self._tmp_names) if self.overwrite else item.parts[-1]
        result = FileResult()
        try:
            fd = os.open(name, _NEW_FILE, 0o600, dir_fd=parent)
        except OSError as err:
            raise EntryFailed(f"cannot create: {err.strerror}") from None
        try:
            try:
                if entry.extents is not None:
                    os.ftruncate(fd, entry.size)
                for offset, data, length, error in _placements(entry, chunks):
                    if data is None:
                        result.damage.append(f"bytes {offset}-{offset + length - 1}: {error}")
                        continue
                    _pwrite_all(fd, data, offset)
                    result.written += len(data)
                if result.damage:
                    os.ftruncate(fd, entry.size)  # a bad last chunk: keep the size
            except OSError as err:
                raise EntryFailed(f"cannot write: {err.strerror}") from None
            self.applier.apply_fd(fd, entry)
        except BaseException:
            os.close(fd)
            _unlink_quietly(parent, name)
            raise
        os.close(fd)
        if self.overwrite:
            self._place(parent, name, item.parts[-1])
        return result


def _placements(entry: Entry, chunks: ChunkSource
                ) -> Iterator[tuple[int, memoryview | None, int, str | None]]:
    """(file offset, bytes or None, length, error) for the entry's chunks, split at extents."""
    extents = entry.extents if entry.extents is not None else [(0, entry.size)]
    extent_iter = iter(extents)
    ext_offset, ext_left = 0, 0
    for ref, data, error in chunks:
        view = memoryview(data) if data is not None else None
        remaining, pos = ref.size, 0
        while remaining:
            while ext_left == 0:
                ext_offset, ext_left = next(extent_iter)
            take = min(remaining, ext_left)
            yield (ext_offset, view[pos:pos + take] if view is not None else None, take, error)
            ext_offset += take
            ext_left -= take
            pos += take
            remaining -= take


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


def _unlink_quietly(parent: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass

