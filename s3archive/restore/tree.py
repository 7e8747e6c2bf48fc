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

With ``resume`` (a restore interrupted, even by kill -9, is run again into
the same target) existing entries are taken as they are where they can be:
a regular file at its name is read back and every chunk of it that matches
its hash is kept (:meth:`TreeWriter.survey_file`), so only the rest is
downloaded and written in place; other kinds are created again and renamed
over what is there; temporary names a killed restore left are removed.
Metadata is applied to every entry again, directories last.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import re
import shutil
import stat
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from s3archive.errors import UsageError
from s3archive.restore.apply import MetadataApplier
from s3archive.format.model import BLOCKDEV, CHARDEV, FIFO, SYMLINK, ChunkRef, Entry
from s3archive.restore.plan import PlannedEntry

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OLD_FILE = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_READ_OLD = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TMP_PREFIX = ".s3archive-restore."
_TMP_NAME = re.compile(rb"\.s3archive-restore\.[0-9]+\.[0-9]+")


class EntryFailed(Exception):
    """This entry could not be restored; the message says why."""


@dataclass
class FileResult:
    written: int = 0  # plain bytes written
    kept: int = 0  # plain bytes found already restored (resume)
    damage: list[str] = field(default_factory=list)  # why some ranges are missing


@dataclass
class OpenFile:
    """A file being restored (:meth:`TreeWriter.open_file`)."""

    item: PlannedEntry
    fd: int
    parent: int  # a descriptor of its directory (held until the file ends)
    name: bytes  # the name it is written under (temporary with --overwrite)
    in_place: bool  # resume finishes the file at its name
    token: int | None  # None: not held (ends before the next entry is created)
    mode_set: bool = False  # created with its recorded mode: no fchmod
    result: FileResult = field(default_factory=FileResult)


ChunkSource = Iterator[tuple[ChunkRef, bytes | memoryview | None, str | None]]


class TreeWriter:
    """Creates entries below ``target``; use as a context manager."""

    def __init__(self, target: Path, applier: MetadataApplier, overwrite: bool = False,
                 resume: bool = False, chunk_id: Callable[[bytes], str] | None = None):
        self.target = target
        # how the run names chunks (keyed in an encrypted run): resume checks what is there
        self.chunk_id = chunk_id or (lambda plain: hashlib.sha256(plain).hexdigest())
        self.applier = applier
        self.overwrite = overwrite
        self.resume = resume
        self.root_fd = -1
        self._stack: list[tuple[bytes, int]] = []  # open directories below the root
        # restored directories along the current path: metadata applied when complete
        self._dirs: list[tuple[tuple[bytes, ...], Entry]] = []
        self._failed_dirs: list[tuple[bytes, str]] = []
        # files opened and not yet ended (open_file .. finish_file), by token; and the
        # directories left meanwhile, with the last token given out when they were
        self._tokens = itertools.count()
        self._open_files: set[int] = set()
        self._held_dirs: dict[tuple[bytes, ...], list[int]] = {}  # parts -> [fd, files]
        self._waiting_dirs: deque[tuple[int, tuple[bytes, ...], Entry]] = deque()
        self._tmp_names = (f"{_TMP_PREFIX}{os.getpid()}.{n}".encode()
                           for n in itertools.count())
        self._umask: int | None = None  # (into an empty target) files created with their mode
        # (into an empty target whose directory is not set-group-ID) the owner every file
        # created gets, as a file created in the target shows: the process's effective
        # ids, unless the filesystem decides otherwise (every directory below is this
        # restore's, made without the bit, which comes with its mode once it is complete)
        self._new_owner: tuple[int, int] | None = None

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> "TreeWriter":
        try:
            self.target.mkdir(parents=True, exist_ok=True)
            self.root_fd = os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise UsageError(f"{self.target}: cannot use as restore target: "
                             f"{err.strerror}") from None
        if not self.overwrite and not self.resume and os.listdir(self.root_fd):
            os.close(self.root_fd)
            raise UsageError(f"{self.target} is not empty (use --resume to finish an "
                             "interrupted restore, --overwrite to restore into it anyway)")
        if not self.overwrite and not self.resume and not _default_acl(self.root_fd):
            self._umask = _umask()
            if not os.fstat(self.root_fd).st_mode & stat.S_ISGID:
                self._new_owner = _new_file_owner(self.root_fd)
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
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    if not self.overwrite:
                        raise EntryFailed("exists and is not a directory") from None
                    self._remove(parent, name)
                    os.mkdir(name, 0o700, dir_fd=parent)
                elif self.resume and not st.st_mode & stat.S_IWUSR:
                    self._make_writable(parent, name)  # its mode comes back at the end
        self._dirs.append((item.parts, item.entry))

    @staticmethod
    def _make_writable(parent: int, name: bytes) -> None:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)

    def remove_stray_temporaries(self, planned_names: set[tuple[bytes, ...]]) -> int:
        """(resume) Remove the temporary names a killed restore left; never follows a symlink."""
        removed = 0
        for dirpath, dirnames, filenames, dirfd in os.fwalk(b".", dir_fd=self.root_fd,
                                                             follow_symlinks=False):
            for name in filenames + [d for d in dirnames if _TMP_NAME.fullmatch(d)]:
                if not _TMP_NAME.fullmatch(name):
                    continue
                parts = tuple(p for p in dirpath.split(b"/") if p not in (b"", b".")) + (name,)
                if parts in planned_names:
                    continue
                try:  # never a directory: a restore makes none under a temporary name
                    if not stat.S_ISDIR(os.stat(name, dir_fd=dirfd,
                                                follow_symlinks=False).st_mode):
                        os.unlink(name, dir_fd=dirfd)
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def leave_dirs(self, parts: tuple[bytes, ...]) -> None:
        """The next entry is ``parts``: every restored directory it is not below is
        complete (entries come in path order), and gets its metadata now, deepest
        first.  A failure is reported by :meth:`finish_dirs`."""
        while self._dirs:
            dir_parts = self._dirs[-1][0]
            if len(parts) > len(dir_parts) and parts[:len(dir_parts)] == dir_parts:
                return
            _, entry = self._dirs.pop()
            if self._open_files:  # files still being written: later (_apply_waiting_dirs)
                self._waiting_dirs.append((self._last_token, dir_parts, entry))
            else:
                self._apply_dir(dir_parts, entry)

    @property
    def _last_token(self) -> int:
        return max(self._open_files)

    def _apply_dir(self, parts: tuple[bytes, ...], entry: Entry) -> None:
        try:
            fd = self._walk_open(parts)
        except (EntryFailed, OSError) as err:
            self._failed_dirs.append((entry.path, f"cannot set directory metadata: {err}"))
            return
        try:
            self.applier.apply_fd(fd, entry)
        finally:
            os.close(fd)

    def finish_dirs(self, fail: Callable[[bytes, str], None]) -> None:
        """The metadata of the directories still open, deepest first; ``fail``
        hears every directory whose metadata could not be set.  Every file opened
        has ended (:meth:`finish_file`, :meth:`discard_file`)."""
        assert not self._open_files, "files still open"
        self._close_stack(0)
        while self._dirs:
            parts, entry = self._dirs.pop()
            self._apply_dir(parts, entry)
        for path, message in self._failed_dirs:
            fail(path, message)
        self._failed_dirs.clear()

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

    def survey_file(self, item: PlannedEntry) -> frozenset[int]:
        """(resume) Indexes of the chunks already in place in the file at the item's name.

        Only a regular file with one link counts (a second link could lead out
        of the target); a sparse file is always written again (its holes are
        not checked).  Each chunk's bytes are read back and hashed: the chunk
        is kept only when they match its hash.
        """
        entry = item.entry
        if entry.extents is not None:
            return frozenset()
        try:
            parent = self._walk_open(item.parts[:-1])
        except (EntryFailed, OSError):
            return frozenset()
        try:  # never open a device or a fifo someone left at the name
            if not stat.S_ISREG(os.stat(item.parts[-1], dir_fd=parent,
                                        follow_symlinks=False).st_mode):
                return frozenset()
            fd = os.open(item.parts[-1], _READ_OLD, dir_fd=parent)
        except OSError:
            return frozenset()
        finally:
            os.close(parent)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                return frozenset()
            good, offset = set(), 0
            for index, ref in enumerate(entry.chunks):
                if offset + ref.size <= st.st_size and \
                        self.chunk_id(_pread_all(fd, ref.size, offset)) == ref.hash:
                    good.add(index)
                offset += ref.size
            return frozenset(good)
        except OSError:
            return frozenset()
        finally:
            os.close(fd)

    def write_file(self, item: PlannedEntry, chunks: ChunkSource,
                   kept: frozenset[int] = frozenset()) -> FileResult:
        """Create the file from ``chunks``: this file's chunks, in order.

        Holes stay holes: a sparse file is truncated to its size first and
        only its data extents are written.  A bad chunk leaves its range as a
        hole and is reported in ``damage``; the file is still placed.  Into an
        empty target the file is created at its name with ``O_EXCL |
        O_NOFOLLOW``; with ``--overwrite`` under a temporary name, then renamed.
        With ``resume``, ``kept`` are the chunks :meth:`survey_file` found in
        place: ``chunks`` leaves them out and the file is finished in place.
        """
        entry = item.entry

        def fill(fd: int, result: FileResult) -> None:
            if entry.extents is not None or kept:
                os.ftruncate(fd, entry.size)
            for offset, data, length, error in _placements(entry, chunks, kept):
                if data is _KEPT:
                    result.kept += length
                elif data is None:
                    result.damage.append(f"bytes {offset}-{offset + length - 1}: {error}")
                else:
                    pwrite_all(fd, data, offset)  # type: ignore[arg-type]
                    result.written += length
        return self.write_file_with(item, fill, bool(kept))

    def write_file_with(self, item: PlannedEntry, fill: Callable[[int, "FileResult"], None],
                        in_place: bool = False) -> FileResult:
        """Create the file as :meth:`write_file` does, its bytes written by ``fill(fd,
        result)`` (which says in ``result`` what it wrote, kept and could not write,
        and has stopped writing to ``fd`` when it returns or raises); then the
        metadata, and the file moved into place.  ``in_place``: resume finishes
        the file already at its name."""
        opened = self.open_file(item, in_place, held=False)
        try:
            fill(opened.fd, opened.result)
        except OSError as err:
            return self.finish_file(opened, err)
        except BaseException:
            self.discard_file(opened)
            raise
        return self.finish_file(opened)

    def open_file(self, item: PlannedEntry, in_place: bool = False,
                  held: bool = True) -> OpenFile:
        """The file created (as :meth:`write_file` does) and open for its bytes, to be
        ended by :meth:`finish_file` (or :meth:`discard_file`).  Until then its
        directories' metadata waits (:meth:`leave_dirs`), so that moving it into
        place, or removing it after a failure, happens in directories still as
        the restore made them.  ``held=False``: the file ends before the next
        entry is created (no wait, and its directory's descriptor is borrowed)."""
        parent = self.parent_fd(item.parts)
        entry = item.entry
        # created with its permission bits when nothing applied before the mode can
        # change them (no special bits, which chown clears; no ACLs or xattrs) and the
        # umask keeps them all: one fchmod less per file
        # (only into an empty target without a default ACL: every directory below it is
        # this restore's, and gets its ACLs when its files have ended, so none inherits one)
        mode = entry.mode & 0o777
        mode_set = (self._umask is not None and not mode & self._umask
                    and not entry.mode & 0o7000 and not entry.xattrs and not entry.acl_access)
        fd, name = self._open_for_writing(parent, item.parts[-1], in_place,
                                          mode if mode_set else 0o600)
        if not held:
            return OpenFile(item, fd, parent, name, in_place, None, mode_set)
        # a descriptor of the directory of its own (the stack may close ``parent`` before
        # the file ends), shared by the files of one directory
        holder = self._held_dirs.get(item.parts[:-1])
        if holder is None:
            try:
                holder = self._held_dirs[item.parts[:-1]] = [os.dup(parent), 0]
            except BaseException:
                os.close(fd)
                if not in_place:
                    _unlink_quietly(parent, name)
                raise
        holder[1] += 1
        token = next(self._tokens)
        self._open_files.add(token)
        return OpenFile(item, fd, holder[0], name, in_place, token, mode_set)

    def finish_file(self, opened: OpenFile, error: OSError | None = None) -> FileResult:
        """The file's bytes are written (or ``error`` stopped them): its size and
        metadata, and the file moved into place (after an error: removed, and
        :class:`EntryFailed` raised)."""
        entry, fd, parent, name = opened.item.entry, opened.fd, opened.parent, opened.name
        try:
            try:
                if error is not None:
                    raise error
                if opened.result.damage or self.resume:
                    os.ftruncate(fd, entry.size)  # a bad last chunk, a longer old file
            except OSError as err:
                raise EntryFailed(f"cannot write: {err.strerror}") from None
            self.applier.apply_fd(fd, entry, mode_set=opened.mode_set,
                                  owned_by=None if opened.in_place else self._new_owner)
        except BaseException:
            os.close(fd)
            if not opened.in_place:
                _unlink_quietly(parent, name)
            self._file_ended(opened)
            raise
        os.close(fd)
        try:
            if name != opened.item.parts[-1]:
                self._place(parent, name, opened.item.parts[-1])
        finally:
            self._file_ended(opened)
        return opened.result

    def discard_file(self, opened: OpenFile) -> None:
        """Give the file up (the restore stops): closed, and removed unless resume
        was finishing it in place."""
        os.close(opened.fd)
        if not opened.in_place:
            _unlink_quietly(opened.parent, opened.name)
        self._file_ended(opened)

    def _file_ended(self, opened: OpenFile) -> None:
        if opened.token is None:
            return
        holder = self._held_dirs[opened.item.parts[:-1]]
        holder[1] -= 1
        if not holder[1]:
            del self._held_dirs[opened.item.parts[:-1]]
            os.close(holder[0])
        self._open_files.discard(opened.token)
        self._apply_waiting_dirs()

    def _apply_waiting_dirs(self) -> None:
        """The metadata of the directories left while files were open, once every
        file opened before each was left has ended (in the order they were left)."""
        while self._waiting_dirs and (not self._open_files
                                      or min(self._open_files) > self._waiting_dirs[0][0]):
            _, parts, entry = self._waiting_dirs.popleft()
            self._apply_dir(parts, entry)

    def _open_for_writing(self, parent: int, final: bytes, in_place: bool,
                          mode: int = 0o600) -> tuple[int, bytes]:
        """A descriptor to write the file through, and the name it has (a new file is
        created with ``mode``)."""
        if in_place:  # resume: the survey found some of it there
            try:
                fd = os.open(final, _OLD_FILE, dir_fd=parent)
            except OSError as err:
                raise EntryFailed(f"cannot reopen: {err.strerror}") from None
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                return fd, final
            os.close(fd)
            raise EntryFailed("changed while being restored")
        name = next(self._tmp_names) if self.overwrite else final
        try:
            return os.open(name, _NEW_FILE, mode, dir_fd=parent), name
        except OSError as err:
            if not self.resume or err.errno != errno.EEXIST:
                raise EntryFailed(f"cannot create: {err.strerror}") from None
        # resume: what is there is not this file's (another file, a second link ...)
        try:
            if stat.S_ISDIR(os.stat(final, dir_fd=parent, follow_symlinks=False).st_mode):
                raise EntryFailed("exists and is a directory")
            os.unlink(final, dir_fd=parent)
            return os.open(final, _NEW_FILE, mode, dir_fd=parent), final
        except OSError as err:
            raise EntryFailed(f"cannot create: {err.strerror}") from None


_KEPT = memoryview(b"")  # (resume) a chunk already in place: nothing to write


def _default_acl(fd: int) -> bool:
    """The directory ``fd`` has a default ACL (or may have: it cannot be read)."""
    try:
        os.getxattr(fd, "system.posix_acl_default")
    except OSError as err:
        return err.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)
    return True


def _umask() -> int | None:
    """The process's umask, read without changing it (None where /proc cannot say)."""
    try:
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    parts, left = [], size
    while left:
        data = os.pread(fd, min(left, 1 << 20), offset)
        if not data:
            break
        parts.append(data)
        offset += len(data)
        left -= len(data)
    return b"".join(parts)


def _placements(entry: Entry, chunks: ChunkSource, kept: frozenset[int] = frozenset()
                ) -> Iterator[tuple[int, memoryview | None, int, str | None]]:
    """(file offset, bytes or None, length, error) for the entry's chunks, split at extents.

    ``chunks`` leaves out the ``kept`` ones: their ranges come as ``_KEPT``.
    """
    extents = entry.extents if entry.extents is not None else [(0, entry.size)]
    extent_iter = iter(extents)
    ext_offset, ext_left = 0, 0
    for index, expected in enumerate(entry.chunks):
        if index in kept:
            ref, data, error = expected, _KEPT, None
        else:
            ref, data, error = next(chunks)
        if data is _KEPT:
            view: memoryview | None = _KEPT
        else:
            view = memoryview(data) if data is not None else None
        remaining, pos = ref.size, 0
        while remaining:
            while ext_left == 0:
                ext_offset, ext_left = next(extent_iter)
            take = min(remaining, ext_left)
            piece = view if view is None or view is _KEPT else view[pos:pos + take]
            yield (ext_offset, piece, take, error)
            ext_offset += take
            ext_left -= take
            pos += take
            remaining -= take


def chunk_spans(entry: Entry) -> list[list[tuple[int, int, int]]]:
    """For each of the entry's chunks, where its bytes go: (file offset, offset in
    the chunk, length) pieces, split at the data extents as :func:`_placements` does."""
    extents = entry.extents if entry.extents is not None else [(0, entry.size)]
    extent_iter = iter(extents)
    ext_offset, ext_left = 0, 0
    spans: list[list[tuple[int, int, int]]] = []
    for ref in entry.chunks:
        pieces: list[tuple[int, int, int]] = []
        remaining, pos = ref.size, 0
        while remaining:
            while ext_left == 0:
                following = next(extent_iter, None)
                if following is None:
                    raise EntryFailed("its chunks are longer than its data extents")
                ext_offset, ext_left = following
            take = min(remaining, ext_left)
            pieces.append((ext_offset, pos, take))
            ext_offset += take
            ext_left -= take
            pos += take
            remaining -= take
        spans.append(pieces)
    return spans


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (pwrite may write less than asked)."""
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


def _unlink_quietly(parent: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass


def _new_file_owner(root_fd: int) -> tuple[int, int] | None:
    """The owner a file created in the directory ``root_fd`` gets, if it is the
    process's effective ids; else None (every file is then chowned).  Asked of the
    filesystem with an unnamed file: ext4 mounted ``grpid`` gives new files their
    directory's group, NFS with root squashing and vfat's ``uid=`` another owner."""
    try:
        fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=root_fd)
    except OSError:
        return None  # no unnamed files here: chown every file
    try:
        probe = os.fstat(fd)
    finally:
        os.close(fd)
    owner = (os.geteuid(), os.getegid())
    return owner if (probe.st_uid, probe.st_gid) == owner else None
