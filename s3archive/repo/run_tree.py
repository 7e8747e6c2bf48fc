"""Read a format-2 run: its root object, run record and tree nodes, on demand.

A path is found by reading one node per level (binary search over the
``first`` names of inner nodes); a whole-run walk is depth-first, one node
per level in memory, and stops with an error past the number of entries the
root object declares (shared subtrees are legal, but cannot blow up).  Every
blob read is checked against its id and size before it is parsed; every
node is validated (format/tree_codec.py).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import threading
from collections import OrderedDict
from typing import Iterator

from s3archive.errors import IntegrityError, ManifestError, NoSuchVersion
from s3archive.format import pack2
from s3archive.format import tree_codec as tc
from s3archive.format.chunk_codec import decode_chunk
from s3archive.format.limits import LIMITS
from s3archive.format.manifest_codec import check_path, covered_bytes
from s3archive.format.model import DIR, FILE, HARDLINK, ChunkRef, Entry, Manifest, Trailer
from s3archive.format.run_root import TAG_SIZE, RunRoot
from s3archive.repo.run_crypto import RunCrypto
from s3archive.store.base import StoreReader

log = logging.getLogger(__name__)

WHOLE_PACK_LIMIT = 32 << 20  # metadata packs up to this size are read whole on a walk
PACKS_KEPT = 4
# Point reads (ls, restore of one path) fetch single blobs with ranged GETs; once a walk
# read this many blobs of one pack so, the pack is read whole (a walk of a subtree).
# The nodes a lookup descends through are not counted: a deep path is no walk.
RANGED_BEFORE_WHOLE = 8
# Decoded nodes kept for lookups, so the path to a name is read once however often
# it is looked up (a restore looks up the path, then its chain, then hardlink targets):
# at most this many, and at most this many plain bytes of them (a deep path of
# small directories fits; a few large leaves push the oldest out).
NODES_KEPT = 64
NODE_BYTES_KEPT = 4 << 20
# A whole run read into memory holds at most as many entries as a format-1 manifest
# could (identical directories are one shared node, so a crafted root object could
# otherwise claim any count): the same bound, the same exposure.
MAX_WALK_ENTRIES = LIMITS.lines


class PackCache:
    """Whole metadata packs (LRU), by key, version and size: one run's, or shared by
    the runs one command reads (consecutive runs share most of their packs, and
    a run's nodes lie in the packs of every run that changed them: a search
    across runs keeps them by bytes, not a few)."""

    def __init__(self, kept: int = PACKS_KEPT, bytes_kept: int | None = None,
                 once: bool = False):
        self.kept = kept
        self.bytes_kept = bytes_kept
        self.bytes = 0
        # ``once``: a pack dropped is not read whole again (its blobs are read by
        # range): a walk whose packs do not fit never downloads one pack many times
        self.once = once
        self.dropped: set[tuple[str, str, int]] = set()
        self._packs: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[str, str, int]) -> bool:
        with self._lock:
            return key in self._packs

    def whole(self, key: tuple[str, str, int]) -> bool:
        """Whether to read (or take) this pack whole."""
        return not self.once or key not in self.dropped

    def get(self, key: tuple[str, str, int]) -> bytes | None:
        with self._lock:
            body = self._packs.get(key)
            if body is not None:
                self._packs.move_to_end(key)
            return body

    def put(self, key: tuple[str, str, int], body: bytes) -> None:
        with self._lock:
            if key in self._packs:
                self._packs.move_to_end(key)
                return
            self._packs[key] = body
            self.bytes += len(body)
            while len(self._packs) > 1 and (
                    len(self._packs) > self.kept
                    or (self.bytes_kept is not None and self.bytes > self.bytes_kept)):
                dropped, body = self._packs.popitem(last=False)
                self.bytes -= len(body)
                if self.once:
                    self.dropped.add(dropped)


class BlobReader:
    """Metadata blobs of one run, verified; whole metadata packs kept (LRU) on walks."""

    def __init__(self, store: StoreReader, table: tc.PackTable, whole_packs: bool = False,
                 crypto: RunCrypto | None = None):
        self.store = store
        self.table = table
        self.whole_packs = whole_packs
        self.crypto = crypto
        self._packs = PackCache()
        self._ranged: dict[int, int] = {}  # pack -> blobs read from it with ranged GETs
        self._lock = threading.Lock()
        self.gets = 0

    def share_packs(self, cache: PackCache) -> None:
        """Read whole metadata packs, kept in ``cache`` (shared with other runs' readers)."""
        self.whole_packs = True
        self._packs = cache

    def release_packs(self) -> None:
        """Drop the whole metadata packs kept (a walk is over: up to PACKS_KEPT
        packs of up to WHOLE_PACK_LIMIT bytes each); later reads fetch again."""
        self._packs = PackCache(self._packs.kept, self._packs.bytes_kept, self._packs.once)

    def _whole(self, number: int, point: bool) -> bool:
        pack = self.table.packs[number]
        key = (pack.key, pack.version_id, pack.size)
        if pack.size > WHOLE_PACK_LIMIT or not self._packs.whole(key):
            return False
        if self.whole_packs or key in self._packs:
            return True
        if point:  # a lookup's node: ranged, and no step towards reading the pack whole
            return False
        with self._lock:
            seen = self._ranged.get(number, 0)
            self._ranged[number] = seen + 1
        return seen >= RANGED_BEFORE_WHOLE

    def read(self, ref: ChunkRef, kind: bytes, point: bool = False) -> bytes:
        """The blob ``ref``, verified.  ``point``: a lookup's read, never the reason
        to read its pack whole."""
        pack = self.table.packs[ref.pack]
        where = f"{pack.key}@{pack.version_id} offset {ref.offset}"
        if kind in pack2.META_KINDS and not pack.key.startswith(pack2.META_PREFIX + "/"):
            raise ManifestError(f"{where}: a metadata blob outside meta/")
        try:
            if self._whole(ref.pack, point):
                body = self._pack(ref.pack)
                if ref.offset + ref.stored > len(body):
                    raise ManifestError(f"{where}: blob lies beyond the end of the pack")
                stored: bytes | memoryview = memoryview(body)[ref.offset:ref.offset + ref.stored]
            else:
                self.gets += 1
                stored = self.store.get(pack.key, pack.version_id,
                                        (ref.offset, ref.offset + ref.stored - 1))
                if len(stored) != ref.stored:
                    raise ManifestError(f"{where}: short read ({len(stored)} of {ref.stored} "
                                        "bytes)")
            if self.crypto is None:
                return bytes(decode_chunk(stored, ref.encoding, ref.size, ref.hash))
            crypto = self.crypto
            opened = crypto.open(pack, ref, stored, kind)
            return bytes(decode_chunk(opened, ref.encoding, ref.size, ref.hash,
                                      lambda plain: crypto.blob_id(kind, plain)))
        except IntegrityError as err:
            raise ManifestError(f"{where}: {err}") from None
        except NoSuchVersion:
            raise ManifestError(f"{where}: the pack version is gone") from None

    def _pack(self, number: int) -> bytes:
        pack = self.table.packs[number]
        key = (pack.key, pack.version_id, pack.size)
        body = self._packs.get(key)
        if body is None:
            self.gets += 1
            body = self.store.get(pack.key, pack.version_id)
            if len(body) != pack.size:
                raise ManifestError(f"{pack.key}@{pack.version_id}: {len(body)} bytes, the run "
                                    f"records {pack.size}")
        try:
            preamble = pack2.parse_preamble(body[:pack2.PREAMBLE_FIXED])
        except pack2.PackLayoutError as err:
            raise ManifestError(f"{pack.key}@{pack.version_id}: {err}") from None
        if (preamble.flags == pack2.FLAG_ENCRYPTED) != (self.crypto is not None):
            raise ManifestError(f"{pack.key}: an {'encrypted' if preamble.flags else 'plain'} "
                                f"pack in a{' plain' if self.crypto is None else 'n encrypted'} "
                                "run")
        self._packs.put(key, body)
        return body


@dataclasses.dataclass(slots=True)
class Item:
    """One entry of a directory, with what its reader may follow."""

    entry: Entry
    tree: ChunkRef | None  # a directory's node
    lists: list[ChunkRef] | None  # a file's chunk lists (its chunks not yet read)


class RunTree:
    def __init__(self, store: StoreReader, root: RunRoot, where: str, whole_packs: bool = False,
                 identities: list | None = None):
        self.root = root
        self.where = where
        self.crypto = (RunCrypto(store, root.encryption, identities or [], where)
                       if root.encryption is not None else None)
        self.table = tc.PackTable.of(root.packs, TAG_SIZE if self.crypto is not None else 0)
        self.blobs = BlobReader(store, self.table, whole_packs, self.crypto)
        self._record: tc.RunRecord | None = None
        self.metadata: dict[tuple[str, int, int], ChunkRef] = {}  # every metadata blob read
        self.keep_metadata = True  # False: a walk that needs no list of them (restore, verify)
        self._nodes: OrderedDict[tuple[ChunkRef, bytes], tc.Node] = OrderedDict()  # lookups
        self._node_bytes = 0  # plain bytes of the nodes kept

    # ------------------------------------------------------------ record
    def record(self) -> tc.RunRecord:
        if self._record is None:
            plain = self._read(self.root.record, pack2.KIND_RECORD)
            self._record = tc.decode_record(plain, self.table, f"{self.where}: run record")
        return self._record

    def snapshots(self) -> list:
        record = self.record()
        out = []
        for snap in record.snapshots:
            lists = record.snapshot_lists.get(snap.name)
            if lists is not None:
                snap = dataclasses.replace(snap, chunks=self._listed(lists, snap.name))
                if sum(c.size for c in snap.chunks) != snap.size:
                    raise ManifestError(f"{self.where}: snapshot {snap.name!r}: its chunk "
                                        "lists do not add up to its size")
            out.append(snap)
        return out

    def trailer(self) -> Trailer:
        trailer = dataclasses.replace(self.root.trailer)
        trailer.warnings = list(self.record().warnings)
        return trailer

    def _read(self, ref: ChunkRef, kind: bytes, point: bool = False) -> bytes:
        plain = self.blobs.read(ref, kind, point)
        if self.keep_metadata:
            self.metadata.setdefault((ref.hash, ref.pack, ref.offset), ref)
        return plain

    # ------------------------------------------------------------ nodes
    def _node(self, ref: ChunkRef, parent: bytes, point: bool = False) -> tc.Node:
        plain = self._read(ref, pack2.KIND_TREE, point)
        return tc.decode_node(plain, parent, self.table,
                              f"{self.where}: node {ref.hash[:16]} of {_shown(parent)}")

    def listing(self, ref: ChunkRef, parent: bytes) -> tc.Listing:
        """A node of directory ``parent`` read for a search: names, kinds, trees."""
        plain = self._read(ref, pack2.KIND_TREE)
        return tc.decode_listing(plain, self.table,
                                 f"{self.where}: node {ref.hash[:16]} of {_shown(parent)}")

    def listed(self, ref: ChunkRef, listing: tc.Listing, index: int, parent: bytes) -> Item:
        """Entry ``index`` of a listed leaf (``ref``) of directory ``parent``, decoded."""
        entry, lists = tc.listed_entry(listing, index, parent, self.table,
                                       f"{self.where}: node {ref.hash[:16]} of "
                                       f"{_shown(parent)}")
        return Item(entry, listing.trees[index], lists)

    def items(self, tree: ChunkRef, path: bytes) -> Iterator[Item]:
        """The entries of directory ``path`` in name order."""
        yield from self._items(tree, path, None, None)

    def _items(self, ref: ChunkRef, path: bytes, height: int | None,
               first: bytes | None) -> Iterator[Item]:
        node = self._node(ref, path)
        if height is not None and node.height != height:
            raise ManifestError(f"{self.where}: node {ref.hash[:16]} of {_shown(path)} has "
                                f"height {node.height}, its parent expects {height}")
        if node.height == 0:
            if first is not None and (not node.names or node.names[0] != first):
                raise ManifestError(f"{self.where}: node {ref.hash[:16]} of {_shown(path)} "
                                    "does not start with the name its parent gives")
            trees, lists = node.trees, node.lists
            assert len(node.names) == len(node.entries)  # decode_node gives both
            for name, entry in zip(node.names, node.entries):
                yield Item(entry, trees.get(name), lists.get(name))
            return
        if first is not None and node.children[0].first != first:
            raise ManifestError(f"{self.where}: node {ref.hash[:16]} of {_shown(path)} does "
                                "not start with the name its parent gives")
        # each child's names are in order (its leaves check theirs, its children this):
        # the order across children is checked where one ends and the next begins
        last: bytes | None = None
        for child in node.children:
            count = 0
            item = None
            for item in self._items(child.ref, path, node.height - 1, child.first):
                if not count and last is not None and _name(item.entry) <= last:
                    raise ManifestError(f"{self.where}: {_shown(path)}: names out of order "
                                        "across nodes")
                count += 1
                yield item
            if count != child.entries:
                raise ManifestError(f"{self.where}: {_shown(path)}: a child node holds "
                                    f"{count} entries, its parent says {child.entries}")
            if item is not None:
                last = _name(item.entry)

    def _kept_node(self, ref: ChunkRef, path: bytes) -> tc.Node:
        """A node read for a lookup: the last few are kept (a path is looked up
        again by the next step of a restore, e.g. its parents, then its subtree)."""
        key = (ref, path)
        node = self._nodes.get(key)
        if node is not None:
            self._nodes.move_to_end(key)
            return node
        node = self._node(ref, path, point=True)
        self._nodes[key] = node
        self._node_bytes += ref.size
        while len(self._nodes) > 1 and (len(self._nodes) > NODES_KEPT
                                        or self._node_bytes > NODE_BYTES_KEPT):
            (dropped, _), _ = self._nodes.popitem(last=False)
            self._node_bytes -= dropped.size
        return node

    def find(self, tree: ChunkRef, path: bytes, name: bytes) -> Item | None:
        """The entry ``name`` of directory ``path``: one node per level."""
        ref, height = tree, None
        while True:
            node = self._kept_node(ref, path)
            if height is not None and node.height != height:
                raise ManifestError(f"{self.where}: {_shown(path)}: node heights do not "
                                    "decrease by one")
            if node.height == 0:
                names = node.names
                at = bisect.bisect_left(names, name)
                if at < len(names) and names[at] == name:
                    entry = node.entries[at]
                    return Item(entry, node.trees.get(name), node.lists.get(name))
                return None
            firsts = [c.first for c in node.children]
            at = bisect.bisect_right(firsts, name) - 1
            if at < 0:
                return None
            ref, height = node.children[at].ref, node.height - 1

    def _listed(self, lists: list[ChunkRef], what: str) -> list[ChunkRef]:
        chunks: list[ChunkRef] = []
        for ref in lists:
            plain = self._read(ref, pack2.KIND_CHUNK_LIST)
            chunks += tc.decode_chunk_list(plain, self.table,
                                           f"{self.where}: chunk list of {what}")
        return chunks

    def complete(self, item: Item) -> Entry:
        """The entry with its chunks (read from its chunk lists when it has them)."""
        if item.lists is None:
            return item.entry
        entry = item.entry
        entry.chunks = self._listed(item.lists, _shown(entry.path))
        if sum(c.size for c in entry.chunks) != covered_bytes(entry):
            raise ManifestError(f"{self.where}: {_shown(entry.path)}: its chunks do not add "
                                "up to the file")
        return entry

    # ------------------------------------------------------------ paths
    def top(self) -> Item | None:
        record = self.record()
        if record.root is None:
            return None
        return Item(record.root, record.root_tree, None)

    def lookup(self, path: bytes) -> Item | None:
        """The entry at ``path`` (absolute), or None when the run does not hold it."""
        chain = self.lookup_chain(path)
        return chain[-1] if chain is not None else None

    def lookup_chain(self, path: bytes) -> list[Item] | None:
        """The entries of ``/``, every ancestor of ``path`` and ``path`` itself (one
        descent, one node per level), or None when the run does not hold it."""
        item = self.top()
        if item is None or check_path(path) is not None:
            return None
        chain = [item]
        if path == b"/":
            return chain
        current = b""
        for name in path.strip(b"/").split(b"/"):
            if item.tree is None:
                return None
            found = self.find(item.tree, current or b"/", name)
            if found is None:
                return None
            current += b"/" + name
            item = found
            chain.append(item)
        return chain

    def walk_budget(self) -> list[int]:
        """The entries a walk of this run may still meet (shared by several walks)."""
        return [min(self.root.entries, MAX_WALK_ENTRIES)]

    def walk(self, start: Item | None = None, budget: list[int] | None = None,
             complete: bool = True) -> Iterator[Entry]:
        """Every entry at and below ``start`` (default ``/``) in path order, complete
        (``complete=False``: a file's chunk lists are not read; its size is right).
        Memory: one node per level."""
        start = start or self.top()
        if start is None:
            return
        budget = budget if budget is not None else self.walk_budget()
        stack: list[Iterator[Item]] = []

        def take(item: Item) -> Entry:
            budget[0] -= 1
            if budget[0] < 0:
                raise ManifestError(f"{self.where}: more entries than the run declares "
                                    f"({self.root.entries})")
            return self.complete(item) if complete else item.entry

        yield take(start)
        if start.tree is not None:
            stack.append(self.items(start.tree, start.entry.path))
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            yield take(item)
            if item.tree is not None:
                if len(stack) >= LIMITS.path_bytes // 2:
                    raise ManifestError(f"{self.where}: the tree is deeper than a path allows")
                stack.append(self.items(item.tree, item.entry.path))

    # ------------------------------------------------------------ as a manifest
    def head(self, with_record: bool = False) -> Manifest:
        """The run without entries: the root object, or with the run record's
        snapshots and warnings (``show``)."""
        if not with_record:
            return Manifest(header=self.root.header, packs=self.root.packs, entries=[],
                            snapshots=[], trailer=dataclasses.replace(self.root.trailer))
        return Manifest(header=self.root.header, packs=self.root.packs, entries=[],
                        snapshots=self.snapshots(), trailer=self.trailer(), opener=self.crypto)

    def manifest(self, paths: list[bytes] | None = None) -> Manifest:
        """The run as a format-1 :class:`Manifest`: every entry, or (``paths``)
        the ancestors and subtrees of those paths and the files their hardlinks name."""
        entries: list[Entry] = []
        if paths is None or any(p.strip(b"/") == b"" for p in paths):
            entries = list(self.walk())
        else:
            seen: set[bytes] = set()
            budget = [min(self.root.entries, MAX_WALK_ENTRIES)]
            for path in paths:
                path = b"/" + b"/".join(p for p in path.split(b"/") if p)
                for ancestor in _ancestors(path):
                    if ancestor in seen:
                        continue
                    item = self.lookup(ancestor)
                    if item is None or item.entry.kind != DIR:
                        break
                    seen.add(ancestor)
                    entries.append(item.entry)
                item = self.lookup(path)
                if item is None or path in seen:
                    continue
                for entry in self.walk(item, budget):
                    if entry.path not in seen:
                        seen.add(entry.path)
                        entries.append(entry)
            for entry in list(entries):
                if entry.kind == HARDLINK and entry.target not in seen:
                    assert entry.target is not None
                    target = self.lookup(entry.target)
                    if target is not None:
                        seen.add(entry.target)
                        entries.append(self.complete(target))
            entries.sort(key=lambda e: tuple(e.path.split(b"/")))
        _check_hardlinks(entries, self.where, complete=paths is None)
        snapshots = self.snapshots()
        return Manifest(header=self.root.header, packs=self.root.packs, entries=entries,
                        snapshots=snapshots, trailer=self.trailer(),
                        metadata=list(self.metadata.values()) if paths is None else [],
                        opener=self.crypto)


def _check_hardlinks(entries: list[Entry], where: str, complete: bool) -> None:
    """A whole run: every hardlink names an earlier file (as format 1 requires).
    A partial read holds the files its hardlinks name wherever they are."""
    if not complete:
        return
    files: set[bytes] = set()
    for entry in entries:
        if entry.kind == FILE:
            files.add(entry.path)
        elif entry.kind == HARDLINK and entry.target not in files:
            raise ManifestError(f"{where}: hardlink {_shown(entry.path)} to "
                                f"{_shown(entry.target or b'')}, which is no earlier file")


def _ancestors(path: bytes) -> list[bytes]:
    parts = [p for p in path.split(b"/") if p]
    return [b"/"] + [b"/" + b"/".join(parts[:i]) for i in range(1, len(parts))]


def _name(entry: Entry) -> bytes:
    return entry.path.rsplit(b"/", 1)[1]


def _shown(path: bytes) -> str:
    return path[:200].decode("utf-8", "backslashreplace")

