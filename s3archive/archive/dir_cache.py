"""The directory cache: an unchanged directory costs one digest and one lookup, not an encode.

Format 2 stores a directory as tree nodes (format/tree_codec.py).  Their bytes
follow from the directory's entries (their spooled lines: metadata, and chunk ids
of files), its subdirectories' tree references, the cut parameters, and where the
files' chunks lie.  The local cache keeps, per directory, a digest of all but the
last, and what the last encode produced: the directory's own blobs (leaves, inner
nodes, chunk lists) with their places, and the data packs its files' chunks lie
in.  When the digest matches, the directory's tree is reused without encoding,
under the conditions that make it as safe as encoding it again
(``TreeBuilder._reuse``):

* every blob is where the metadata writer would find it anyway
  (``ChunkWriter.adopt_blobs``: the chunk index has it at that place, and its pack
  is not one the run writes anew); the blobs are then the run's, so the metadata
  lease covers their packs;
* every data pack is one the run references anyway (a pack it uploaded or
  leased), so the root's pack table lists it and its lock covers the run.

A subdirectory's tree reference is part of its parent's digest: a directory is
reused only when everything below it is.  Rows are written pending and count once
the run's root object is written (``LocalCache.commit_pending_files``), never
ahead of a committed run; then the rows of directories the run did not have are
dropped.  An encrypting host names a row by
``HMAC(K_cache, "dir" 0x00 path)[:16]`` and keys its digest (docs/FORMAT.md part
2, 10.2): the table holds no path, name or metadata in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from s3archive.archive.packer import ChunkLocation
from s3archive.crypto.dedup import HmacSha256
from s3archive.format import tree_codec as tc

if TYPE_CHECKING:
    from s3archive.archive.local_cache import LocalCache

log = logging.getLogger(__name__)

ROWS_BATCH = 256  # pending rows written at once
_ROW_VERSION = 1


def new_digest() -> hashlib._Hash:
    """A directory's digest, begun with the encoder's version and cut parameters
    (copy it for each directory), so that rows of another encoder never match."""
    seed = (f"s3archive dir v{_ROW_VERSION} {tc.LEAF_MIN} {tc.LEAF_MAX} {tc.LEAF_CUT} "
            f"{tc.NODE_TARGET_BYTES} {tc.MAX_HEIGHT} {tc.INLINE_CHUNKS} {tc.LIST_MIN} "
            f"{tc.LIST_MAX} {tc.LIST_CUT}\n")
    return hashlib.sha256(seed.encode("ascii"))


def ref_line(ref: tc.BlobRef) -> bytes:
    """A subdirectory's tree reference as it enters its parent's digest."""
    return (f"tree {ref.id} {ref.size} {ref.pack} {ref.offset} {ref.stored} "
            f"{ref.encoding}\n").encode()


@dataclass(frozen=True, slots=True)
class DirRow:
    """What encoding a directory produced."""

    tree: ChunkLocation  # the directory's top node
    blobs: tuple[ChunkLocation, ...]  # every blob of the directory's own (the top node too)
    data_packs: frozenset[str]  # the packs its files' chunks lie in

    def encode(self) -> bytes:
        return json.dumps({"v": _ROW_VERSION, "tree": self.blobs.index(self.tree),
                           "blobs": [[b.hash, b.pack, b.offset, b.stored, b.size, b.encoding]
                                     for b in self.blobs],
                           "data": sorted(self.data_packs)},
                          separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> DirRow | None:
        """The row, or None when it is not one this version wrote (a miss, never an error)."""
        try:
            obj: Any = json.loads(raw)
            if obj.get("v") != _ROW_VERSION:
                return None
            blobs = tuple(ChunkLocation(str(h), str(p), int(o), int(s), int(n), str(e))
                          for h, p, o, s, n, e in obj["blobs"])
            data = frozenset(str(pack) for pack in obj["data"])
            return cls(blobs[obj["tree"]], blobs, data)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return None


class DirCache:
    """The ``dir_trees`` table of the local cache, named and keyed for this host.

    ``key`` is the dedup secret's cache key of an encrypting host (None: plain).
    ``remember`` is off in a dry run (its packs are never stored).
    """

    def __init__(self, cache: LocalCache, key: bytes | None, remember: bool):
        self.cache = cache
        self._mac = HmacSha256(key) if key is not None else None  # the key's pads once
        self.remember_rows = remember
        self._pending: list[tuple[bytes, bytes, bytes]] = []
        self._kept: list[bytes] = []
        # a cache with no rows (a first run's) is not asked once a directory: each ask
        # waited for the cache's lock, held by an upload thread recording a pack
        self._none_remembered = False

    def _name(self, path: bytes) -> bytes:
        if self._mac is None:
            return path
        return self._mac.digest(b"dir\0" + path)[:16]

    def _keyed(self, digest: bytes) -> bytes:
        if self._mac is None:
            return digest
        return self._mac.digest(b"dir-digest\0" + digest)

    def begin_pass(self) -> None:
        """A build starts (again): rows of an earlier pass of this run are void."""
        self._pending, self._kept = [], []
        self.cache.discard_pending_dirs()
        self._none_remembered = not self.cache.has_dirs()

    def lookup(self, path: bytes, digest: bytes) -> DirRow | None:
        if self._none_remembered:
            return None
        found = self.cache.get_dir(self._name(path))
        if found is None or not hmac.compare_digest(found[0], self._keyed(digest)):
            return None
        row = DirRow.decode(found[1])
        if row is None:
            log.debug("directory cache: a row this version cannot read; encoding")
        return row

    def remember(self, path: bytes, digest: bytes, row: DirRow) -> None:
        if not self.remember_rows:
            return
        self._pending.append((self._name(path), self._keyed(digest), row.encode()))
        if len(self._pending) >= ROWS_BATCH:
            self.flush()

    def keep(self, path: bytes) -> None:
        """A directory reused as its row says: the row stays (rows of directories the
        run does not have are dropped when it commits)."""
        if not self.remember_rows:
            return
        self._kept.append(self._name(path))
        if len(self._kept) >= ROWS_BATCH:
            self.flush()

    def flush(self) -> None:
        if self._pending or self._kept:
            self.cache.put_dirs(self._pending, self._kept)
            self._pending, self._kept = [], []
