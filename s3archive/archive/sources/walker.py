"""Expand picked paths into filesystem entries, in manifest (component-wise) order.

The walk starts at ``/`` and visits only what is needed: the picked roots,
their whole trees, and the directories above them (recorded too, so a restore
gets their owners and modes back).  Below a picked directory everything is
included except excluded names, the contents of directories tagged with
``CACHEDIR.TAG``, and — with ``one_file_system`` — other filesystems (a mount
point is recorded as an empty directory unless it is picked itself).

Every entry is ``lstat``'ed here, except, when the walker is told not to
(``stat_files`` False: a run without a file cache to consult, whose content
workers open and ``fstat`` each file anyway), the entries a directory listing
says are regular files (``d_type``: no system call on ext4, xfs, btrfs; where
the file system does not say, the listing stats the entry): those are yielded
with no stat, by name only — in a directory of many small files only.  A
directory of fewer than ``BY_NAME_ENTRIES`` names is stat'ed whole; in a larger
one the first ``SAMPLED_FILES`` regular files are stat'ed, and the rest go by
name only if those were small (``SMALL_MEAN``, a mean size).  A file read by
name that turns out large is handed back by the worker and read at its turn, one
batch's latency each: where files are large, their stat costs nothing beside
reading them, and where there are few, nothing at all.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

from s3archive.format.model import Warning_

CACHEDIR_TAG = b"CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
BY_NAME_ENTRIES = 256  # (stat_files off) a directory with fewer names: every entry stat'ed
SAMPLED_FILES = 64  # ... with more: its first regular files stat'ed, and if their mean
SMALL_MEAN = 32 << 10  # size is below this, its other regular files go by name


class WalkItem(NamedTuple):
    path: bytes
    st: os.stat_result | None  # None: a regular file as listed, not stat'ed (stat_files off)


def listed_regular(entry: os.DirEntry[bytes]) -> bool:
    """Whether a directory listing says ``entry`` is a regular file (its ``d_type``;
    an unknown one is looked up with ``lstat``, by ``DirEntry`` itself)."""
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:  # the lookup failed: the walk's own lstat says why
        return False


class _Descend(NamedTuple):
    """A subdirectory the walk enters (:meth:`Walker._children`'s arguments)."""

    path: bytes
    st: os.stat_result
    full: bool  # taken whole (below a picked root, on its file system)
    root_dev: int | None


@dataclass
class WalkOptions:
    one_file_system: bool = True
    exclude: tuple[str, ...] = ()


@dataclass
class _Roots:
    """The picked roots and every directory above them."""

    roots: set[bytes] = field(default_factory=set)
    # directory -> names of children that are roots or lie above roots
    needed: dict[bytes, set[bytes]] = field(default_factory=dict)

    def add(self, path: bytes) -> None:
        self.roots.add(path)
        child = path
        while child != b"/":
            parent, _, name = child.rpartition(b"/")
            parent = parent or b"/"
            self.needed.setdefault(parent, set()).add(name)
            child = parent


def normalise_root(path: bytes) -> bytes:
    """Absolute, normalised, with symlinks above the last component resolved."""
    path = os.path.normpath(b"/" + path.lstrip(b"/"))
    if path == b"/":
        return path
    parent, _, name = path.rpartition(b"/")
    real_parent = os.path.realpath(parent or b"/")
    return os.path.join(real_parent, name)


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + name if parent == b"/" else parent + b"/" + name


class Walker:
    def __init__(self, options: WalkOptions, warn: Callable[[Warning_], None],
                 stat_files: bool = True):
        self.options = options
        self.warn = warn
        self.stat_files = stat_files
        self._patterns = [(p.encode("utf-8", "surrogateescape"), "/" in p) for p in options.exclude]

    def excluded(self, path: bytes, name: bytes) -> bool:
        return bool(self._patterns) and any(fnmatch.fnmatchcase(path if full else name, pattern)
                                            for pattern, full in self._patterns)

    def walk(self, picked: list[bytes]) -> Iterator[WalkItem]:
        roots = _Roots()
        for path in picked:
            root = normalise_root(path)
            try:
                os.lstat(root)
            except FileNotFoundError:
                self.warn(Warning_("picker", "picked path does not exist", root))
                continue
            except OSError as err:
                self.warn(Warning_("picker", f"cannot stat picked path: {err.strerror}", root))
                continue
            roots.add(root)
        if not roots.roots:
            return
        yield from self._visit(b"/", roots, full=b"/" in roots.roots, root_dev=None)

    def lstat(self, path: bytes) -> os.stat_result | None:
        """The entry's stat; None (and the warning) when it cannot be had."""
        try:
            return os.lstat(path)
        except FileNotFoundError:
            self.warn(Warning_("file", "vanished during the walk", path))
        except OSError as err:
            self.warn(Warning_("file", f"cannot stat: {err.strerror}", path))
        return None

    def _visit(self, path: bytes, roots: _Roots, full: bool,
               root_dev: int | None) -> Iterator[WalkItem]:
        """``path`` and, if it is a directory, what the walk takes below it.

        The directories being walked are a stack of :meth:`_children`, driven
        here: an entry passes through two generators whatever its depth (nested
        generators would pass each through one per directory above it)."""
        st = self.lstat(path)
        if st is None:
            return
        yield WalkItem(path, st)
        if not stat.S_ISDIR(st.st_mode):
            return
        stack = [self._children(path, st, full, root_dev, roots)]
        while stack:
            for item in stack[-1]:
                if type(item) is _Descend:  # a subdirectory: its entries next
                    yield WalkItem(item.path, item.st)
                    stack.append(self._children(*item, roots))
                    break
                yield item
            else:
                stack.pop()

    def _children(self, path: bytes, st: os.stat_result, full: bool, root_dev: int | None,
                  roots: _Roots) -> Iterator[WalkItem | _Descend]:
        """What the walk takes in directory ``path``: its entries, each child
        stat'ed once here, and a subdirectory as a :class:`_Descend` (its own
        entries are taken before the next name's)."""
        if path in roots.roots:
            full, root_dev = True, st.st_dev
        crosses = (full and self.options.one_file_system and root_dev is not None
                   and st.st_dev != root_dev)
        wanted = roots.needed.get(path, set())
        regular: set[bytes] | None = None  # names listed as regular files, not to be stat'ed
        if full and not crosses:
            names, regular = self._list(path)
            if names is None:
                names = sorted(wanted)
            elif CACHEDIR_TAG in names and self._is_cachedir(path):
                names = sorted({CACHEDIR_TAG} | wanted)
            if regular is not None:
                regular -= wanted  # a picked root (or a path above one) is stat'ed
        else:
            names = sorted(wanted)
        below = full and not crosses
        prefix = path if path == b"/" else path + b"/"
        sampled = sampled_bytes = 0  # its regular files stat'ed so far, and their bytes
        for name in names:
            child = prefix + name
            if name not in wanted and self.excluded(child, name):
                continue
            if regular is not None and name in regular and sampled >= SAMPLED_FILES:
                yield WalkItem(child, None)
                continue
            child_st = self.lstat(child)
            if child_st is None:
                continue
            if regular is not None and sampled < SAMPLED_FILES \
                    and stat.S_ISREG(child_st.st_mode):
                sampled += 1
                sampled_bytes += child_st.st_size
                if sampled == SAMPLED_FILES and sampled_bytes >= SAMPLED_FILES * SMALL_MEAN:
                    regular = None  # large files: each stat'ed, as in a directory of few
            if stat.S_ISDIR(child_st.st_mode):
                yield _Descend(child, child_st, below or child in roots.roots, root_dev)
            else:
                yield WalkItem(child, child_st)

    def _list(self, path: bytes) -> tuple[list[bytes] | None, set[bytes] | None]:
        """The directory's names, sorted, and (``stat_files`` off, a directory of
        ``BY_NAME_ENTRIES`` names or more) those listed as regular files."""
        try:
            if self.stat_files:
                return sorted(os.listdir(path)), None
            with os.scandir(path) as listing:
                entries = list(listing)
            names = sorted(entry.name for entry in entries)
            if len(names) < BY_NAME_ENTRIES:  # (every entry stat'ed: no type asked)
                return names, None
            return names, {entry.name for entry in entries if listed_regular(entry)}
        except FileNotFoundError:
            self.warn(Warning_("file", "directory vanished during the walk", path))
        except OSError as err:
            self.warn(Warning_("file", f"cannot list directory: {err.strerror}", path))
        return None, None

    @staticmethod
    def _is_cachedir(path: bytes) -> bool:
        """A regular file CACHEDIR.TAG with the signature (never a fifo, device or link)."""
        try:
            fd = os.open(_join(path, CACHEDIR_TAG),
                         os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            return os.pread(fd, len(CACHEDIR_SIGNATURE), 0) == CACHEDIR_SIGNATURE
        except OSError:
            return False
        finally:
            os.close(fd)
