"""Apply an entry's recorded metadata to a restored filesystem object.

Order matters and is the same for every kind: owner first (``chown`` clears
setuid/setgid and ``security.capability``), then extended attributes, then
ACLs, then the mode (which also sets the ACL mask), then the mtime last.

Nothing here resolves a path string through the filesystem: regular files
and directories are changed through an open file descriptor, other kinds
through ``dir_fd`` + name without following a symlink, or through
``/proc/self/fd/N`` of a descriptor opened with ``O_PATH | O_NOFOLLOW``.
Failures become warnings for the entry; they never stop a restore.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
from dataclasses import dataclass, field
from typing import Callable

from s3archive.format.model import DIR, SYMLINK, Entry

try:
    import posix1e
except ImportError:  # pragma: no cover - pylibacl is a dependency
    posix1e = None

log = logging.getLogger(__name__)

Warn = Callable[[bytes, str], None]


def _proc_fd(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


@dataclass
class OwnerMap:
    """Recorded owner -> local ids: names first, numbers as fallback."""

    numeric: bool = False
    _users: dict[str, int | None] = field(default_factory=dict)
    _groups: dict[str, int | None] = field(default_factory=dict)

    def uid(self, entry: Entry) -> int:
        if not self.numeric and entry.user:
            if entry.user not in self._users:
                try:
                    self._users[entry.user] = pwd.getpwnam(entry.user).pw_uid
                except KeyError:
                    self._users[entry.user] = None
            found = self._users[entry.user]
            if found is not None:
                return found
        return entry.uid

    def gid(self, entry: Entry) -> int:
        if not self.numeric and entry.group:
            if entry.group not in self._groups:
                try:
                    self._groups[entry.group] = grp.getgrnam(entry.group).gr_gid
                except KeyError:
                    self._groups[entry.group] = None
            found = self._groups[entry.group]
            if found is not None:
                return found
        return entry.gid


class MetadataApplier:
    """Applies owner, xattrs, ACLs, mode and mtime; reports what it could not."""

    def __init__(self, warn: Warn, numeric_owner: bool = False,
                 is_root: bool | None = None):
        self.warn = warn
        self.owners = OwnerMap(numeric=numeric_owner)
        self.is_root = os.geteuid() == 0 if is_root is None else is_root
        self._acl_missing_warned = False

    # ---------------------------------------------------------- by descriptor

    def apply_fd(self, fd: int, entry: Entry, mode_set: bool = False,
                 owned_by: tuple[int, int] | None = None) -> None:
        """A regular file or a directory, open as ``fd`` (``mode_set``: created with its
        mode, which nothing applied here changes; ``owned_by``: the (uid, gid) it was
        created with, when known: no ``fchown`` when they are the recorded owner's)."""
        if self.is_root:
            uid, gid = self.owners.uid(entry), self.owners.gid(entry)
            if (uid, gid) != owned_by:
                self._try(entry, "owner", os.fchown, fd, uid, gid)
        for name, value in entry.xattrs.items():
            self._try(entry, f"xattr {name}", os.setxattr, fd, name, value)
        self._apply_acls(entry, _proc_fd(fd))
        if not mode_set:
            self._try(entry, "mode", os.fchmod, fd, entry.mode)
        self._try(entry, "mtime", os.utime, fd, ns=(entry.mtime_ns, entry.mtime_ns))

    # ------------------------------------------------------- by dir_fd + name

    def apply_at(self, dir_fd: int, name: bytes, entry: Entry) -> None:
        """A symlink, fifo or device node called ``name`` in ``dir_fd``."""
        if self.is_root:
            self._try(entry, "owner", os.chown, name, self.owners.uid(entry),
                      self.owners.gid(entry), dir_fd=dir_fd, follow_symlinks=False)
        if entry.kind != SYMLINK:
            self._apply_via_o_path(dir_fd, name, entry)
        elif entry.xattrs:
            where = os.fsencode(_proc_fd(dir_fd)) + b"/" + name
            for attr, value in entry.xattrs.items():
                self._try(entry, f"xattr {attr}", os.setxattr, where, attr, value,
                          follow_symlinks=False)
        self._try(entry, "mtime", os.utime, name, ns=(entry.mtime_ns, entry.mtime_ns),
                  dir_fd=dir_fd, follow_symlinks=False)

    def _apply_via_o_path(self, dir_fd: int, name: bytes, entry: Entry) -> None:
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as err:
            self.warn(entry.path, f"cannot open to set metadata: {err.strerror}")
            return
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                self.warn(entry.path, "replaced by a symlink meanwhile; metadata not set")
                return
            where = _proc_fd(fd)
            for attr, value in entry.xattrs.items():
                self._try(entry, f"xattr {attr}", os.setxattr, where, attr, value)
            self._apply_acls(entry, where)
            self._try(entry, "mode", os.chmod, where, entry.mode)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ ACLs

    def _apply_acls(self, entry: Entry, where: str) -> None:
        if not entry.acl_access and not (entry.kind == DIR and entry.acl_default):
            return
        if posix1e is None:
            if not self._acl_missing_warned:
                self._acl_missing_warned = True
                self.warn(b"", "pylibacl is not installed: ACLs are not restored")
            return
        if entry.acl_access:
            self._try(entry, "access ACL", _set_acl, where, entry.acl_access,
                      posix1e.ACL_TYPE_ACCESS)
        if entry.kind == DIR and entry.acl_default:
            self._try(entry, "default ACL", _set_acl, where, entry.acl_default,
                      posix1e.ACL_TYPE_DEFAULT)

    # -------------------------------------------------------------- failures

    def _try(self, entry: Entry, what: str, func: Callable[..., object], *args: object,
             **kwargs: object) -> None:
        try:
            func(*args, **kwargs)
        except OSError as err:
            self.warn(entry.path, f"cannot set {what}: {err.strerror or err}")
        except (ValueError, OverflowError) as err:  # an ACL text pylibacl cannot parse,
            self.warn(entry.path, f"cannot set {what}: {err}")  # ids or times out of range


def _set_acl(where: str, text: str, kind: int) -> None:
    try:
        acl = posix1e.ACL(text=text)
    except OSError as err:
        raise ValueError(f"not a valid ACL: {text!r}") from err
    acl.applyto(where, kind)
