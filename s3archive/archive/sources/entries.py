"""One walked path -> its manifest entry (everything but the file's content)."""

from __future__ import annotations

import os
import stat
from typing import Protocol

from s3archive.format.manifest_codec import entry_problem
from s3archive.format.model import BLOCKDEV, CHARDEV, DIR, SYMLINK, Entry, Warning_
from s3archive.archive.sources import fs_metadata


class Vanished(Exception):
    """The entry disappeared between the walk and reading its metadata."""


class Unrecordable(Exception):
    """The entry cannot be recorded in a form the manifest reader accepts.

    It is left out of the run; ``warning`` says which and why.
    """

    def __init__(self, warning: Warning_):
        super().__init__(warning.message)
        self.warning = warning


class StatFields(Protocol):
    """What an entry is made of from a stat (an ``os.stat_result``, or the fields a
    content worker is handed: archive/content_workers.py)."""

    @property
    def st_mode(self) -> int: ...
    @property
    def st_uid(self) -> int: ...
    @property
    def st_gid(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_rdev(self) -> int: ...


def describe_entry(path: bytes, st: StatFields, fd: int | None = None
                   ) -> tuple[Entry, Warning_ | None]:
    """The entry of a non-socket path; the warning says what could not be read.
    With ``fd``, a regular file's ACLs and xattrs are read through it (the file
    open for reading: archive/content_workers.py).

    Raises Vanished when the path is gone, and Unrecordable when what could
    be read does not make an entry the reader accepts (a symlink whose
    target cannot be read, e.g. EACCES on ``/proc/1/cwd``): a writer never
    writes what its own reader refuses.
    """
    kind = fs_metadata.kind_of(st.st_mode)
    assert kind is not None, "sockets are filtered out by the caller"
    entry = Entry(path=path, kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
                  gid=st.st_gid, mtime_ns=st.st_mtime_ns,
                  user=fs_metadata.user_name(st.st_uid), group=fs_metadata.group_name(st.st_gid))
    warning = None
    try:
        if kind == SYMLINK:
            entry.target = _read_link(path)
        elif kind in (CHARDEV, BLOCKDEV):
            entry.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        entry.acl_access, entry.acl_default, entry.xattrs, skipped = \
            fs_metadata.read_acls_and_xattrs(path if fd is None else fd, kind == DIR)
    except FileNotFoundError:
        raise Vanished(path) from None
    except (OSError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        warning = Warning_("file", f"metadata incomplete: {why}", path)
    else:
        if skipped:
            warning = Warning_("file", "metadata incomplete: xattr names that are not UTF-8 "
                               f"left out: {', '.join(skipped)}", path)
    problem = entry_problem(entry)
    if problem is not None:
        raise Unrecordable(Warning_("file", f"left out: the manifest cannot hold it: {problem}",
                                    path))
    return entry, warning


def _read_link(path: bytes) -> bytes:
    try:
        return os.readlink(path)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise Unrecordable(Warning_(
            "file", f"left out: cannot read the symlink's target: {err.strerror or err}",
            path)) from None
