"""Reading the metadata of one filesystem entry: stat, owners, ACLs, xattrs, holes."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from functools import lru_cache

import posix1e

from s3archive.format.model import (BLOCKDEV, CHARDEV, DIR, FIFO, FILE, SYMLINK)

ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
_ACL_TEXT_OPTIONS = posix1e.TEXT_ABBREVIATE | posix1e.TEXT_NUMERIC_IDS


def kind_of(mode: int) -> str | None:
    """The manifest kind for a stat mode; None for sockets and the unknown."""
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    if stat.S_ISFIFO(mode):
        return FIFO
    if stat.S_ISCHR(mode):
        return CHARDEV
    if stat.S_ISBLK(mode):
        return BLOCKDEV
    return None


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str | None:
    """The user's name; None when unknown or not UTF-8 (the number is recorded anyway)."""
    try:
        return _utf8_or_none(pwd.getpwuid(uid).pw_name)
    except KeyError:
        return None


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str | None:
    """The group's name; None when unknown or not UTF-8."""
    try:
        return _utf8_or_none(grp.getgrgid(gid).gr_name)
    except KeyError:
        return None


def _utf8_or_none(name: str) -> str | None:
    """Names from /etc/passwd are decoded with surrogateescape: drop those that were not UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return name


def read_acls_and_xattrs(path: bytes | int, is_dir: bool
                         ) -> tuple[str | None, str | None, dict[str, bytes], list[str]]:
    """Extended access ACL, default ACL (short text, numeric ids), the other
    xattrs, and what could not be recorded.

    One ``listxattr`` tells which exist: the kernel keeps an ACL as the xattr
    ``system.posix_acl_access`` / ``_default`` only when it is more than the
    mode bits, so most files cost a single system call here.  An xattr whose
    name is not UTF-8 (any user can make one) is left out and reported.

    ``path`` is the entry's path (never followed), or a descriptor of the entry
    open for reading (a file a content worker reads: the inode it reads, and no
    second lookup of its path); a directory's default ACL is read by its path.
    """
    by_fd = type(path) is int
    try:
        names = os.listxattr(path) if by_fd else os.listxattr(path, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return None, None, {}, []
        raise
    if not names:  # most entries
        return None, None, {}, []
    access = default = None
    if ACL_XATTRS[0] in names:
        access = _acl_text(posix1e.ACL(fd=path) if by_fd else posix1e.ACL(file=path))
    if is_dir and ACL_XATTRS[1] in names:
        assert not by_fd, "a directory's default ACL is read by its path"
        default = _acl_text(posix1e.ACL(filedef=path))
    values: dict[str, bytes] = {}
    skipped: list[str] = []
    for name in names:
        if name in ACL_XATTRS:
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            skipped.append(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
            continue
        try:
            values[name] = (os.getxattr(path, name) if by_fd
                            else os.getxattr(path, name, follow_symlinks=False))
        except OSError as err:
            if err.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP):
                continue
            raise
    return access, default, values, skipped


def _acl_text(acl: posix1e.ACL) -> str:
    return acl.to_any_text(options=_ACL_TEXT_OPTIONS, separator=b",").decode("ascii")


def data_extents(fd: int, size: int) -> list[tuple[int, int]] | None:
    """Data regions of a file with holes, or None when the file is dense."""
    if size == 0:
        return None
    extents: list[tuple[int, int]] = []
    offset = 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:  # only a hole up to the end
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if end > start:
                extents.append((start, end - start))
            offset = end
    except OSError as err:
        if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return None
        raise
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    if len(extents) == 1 and extents[0] == (0, size):
        return None
    return extents
