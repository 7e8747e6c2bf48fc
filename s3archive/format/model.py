"""The data of one run's manifest (format 1).  See docs/FORMAT.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from datetime import datetime

FORMAT_VERSION = 1

# Entry kinds, as written in the manifest.
FILE = "file"
DIR = "dir"
SYMLINK = "symlink"
HARDLINK = "hardlink"  # another name of an earlier "file" entry (its path in ``target``)
FIFO = "fifo"
CHARDEV = "chardev"
BLOCKDEV = "blockdev"
KINDS = (FILE, DIR, SYMLINK, HARDLINK, FIFO, CHARDEV, BLOCKDEV)

ENCODINGS = ("zstd", "raw")


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where the bytes of one chunk live: ``[hash, size, pack, offset, stored, encoding]``."""

    hash: str  # SHA-256 (hex) of the plain bytes
    size: int  # plain length
    pack: int  # index into the manifest's pack table
    offset: int  # byte offset of the stored chunk inside the pack
    stored: int  # stored (possibly compressed) length
    encoding: str  # "zstd" | "raw"


@dataclass(frozen=True, slots=True)
class PackRef:
    """One pack object version a run references."""

    id: int
    key: str  # relative to the prefix: packs/<h[0:2]>/<sha256 of body>
    version_id: str
    size: int
    # the lock this run made sure the version has: until (>= the run's) and mode
    locked_until: datetime | None = None
    lock_mode: str | None = None


@dataclass(slots=True)
class Entry:
    """One filesystem entry.  ``path`` is absolute, as on the host, in bytes."""

    path: bytes
    kind: str
    mode: int  # permission bits incl. setuid/setgid/sticky (st_mode & 0o7777)
    uid: int
    gid: int
    mtime_ns: int
    user: str | None = None
    group: str | None = None
    size: int = 0
    target: bytes | None = None  # symlink target, or the first path of a hardlink group
    rdev: tuple[int, int] | None = None  # (major, minor) of devices
    acl_access: str | None = None  # extended access ACL, short text, numeric ids
    acl_default: str | None = None  # default ACL of a directory
    xattrs: dict[str, bytes] = field(default_factory=dict)
    chunks: list[ChunkRef] = field(default_factory=list)
    extents: list[tuple[int, int]] | None = None  # data extents of a sparse file
    ino: int | None = None  # inode and ctime of files: let a new cache recognise them
    ctime_ns: int | None = None


@dataclass(slots=True)
class Snapshot:
    """The output of one snapshotter of ``snapshots.d``."""

    name: str
    status: str  # "ok" | "failed" | "timeout" | "empty"
    exit_status: int | None
    size: int
    started: datetime
    duration_s: float
    description: str = ""
    restore_through: str | None = None
    chunks: list[ChunkRef] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Warning_:
    """A problem with one source that did not stop the run."""

    source: str  # "picker", "file", "snapshot", "pack", ...
    message: str
    path: bytes | None = None


@dataclass(slots=True)
class Header:
    host: str
    run_id: str
    started: datetime
    lock_mode: str | None
    retain_until: datetime
    tier: str
    tool: str
    legal_hold: bool = False
    chunker: dict = field(default_factory=dict)
    format: int = FORMAT_VERSION
    # format 2: null for a plain run, else scheme, recipients, dedup id and the pinned
    # copy of the dedup secret (docs/FORMAT.md); format 1 runs are plain
    encryption: dict | None = None


@dataclass(slots=True)
class Trailer:
    finished: datetime
    counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    warnings: list[Warning_] = field(default_factory=list)


@dataclass(slots=True)
class Manifest:
    header: Header
    packs: list[PackRef]
    entries: list[Entry]
    snapshots: list[Snapshot]
    trailer: Trailer
    # format 2, a whole run read: every metadata blob it references (record, nodes,
    # chunk lists), each once; empty for format 1 (the manifest is the metadata)
    metadata: list[ChunkRef] = field(default_factory=list)
    # an encrypted run read with its key: opens each sealed blob (repo/run_crypto.py)
    opener: "BlobOpener | None" = None


class BlobOpener(Protocol):
    """What opens the sealed blobs of an encrypted run (repo/run_crypto.RunCrypto)."""

    def open(self, pack: PackRef, ref: ChunkRef, sealed: bytes | memoryview,
             kind: bytes) -> bytes: ...

    def data_id(self, plain: bytes | memoryview) -> str: ...


def run_key(host: str, run_id: str) -> str:
    return f"runs/{host}/{run_id}.jsonl.zst"


def pack_key(body_hash: str) -> str:
    return f"packs/{body_hash[:2]}/{body_hash}"
