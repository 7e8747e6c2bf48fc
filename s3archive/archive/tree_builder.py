"""Format 2: turn the run's spooled entries into tree nodes, bottom-up, streaming.

Entries arrive in path (component-wise) order, so a directory's contents
follow it directly and a directory is complete when the walk leaves it.
Each directory keeps only its current leaf and the references of the leaves
already written: memory is bounded by the depth times one leaf, whatever the
size of the run.  Nodes go to the metadata writer (content-addressed: an
unchanged directory encodes to the same bytes, hence the same id, and is
not stored again).  Every pack a node references is collected for the
run's pack table.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator

from s3archive.archive.chunk_writer import ChunkWriter
from s3archive.archive.packer import ChunkId, ChunkLocation
from s3archive.errors import ManifestError
from s3archive.format import pack2
from s3archive.format import tree_codec as tc
from s3archive.format.manifest_codec import dumps as line_dumps

log = logging.getLogger(__name__)

Leaf = list[tuple[dict[str, Any], list[tc.BlobRef] | None, list[tc.BlobRef] | None,
                  tc.BlobRef | None]]


def blob_ref(location: ChunkLocation) -> tc.BlobRef:
    return tc.BlobRef(location.hash, location.size, location.pack, location.offset,
                      location.stored, location.encoding)


@dataclass
class _Dir:
    path: bytes
    obj: dict[str, Any]  # the directory's own entry (spool form)
    leaf: Leaf = field(default_factory=list)
    leaf_bytes: int = 0
    leaves: list[tuple[bytes, int, tc.BlobRef]] = field(default_factory=list)
    last_name: bytes = b""
    synthetic: bool = False


@dataclass
class TreeResult:
    root: dict[str, Any] | None  # the entry of "/" (spool form), None for a run without files
    root_tree: tc.BlobRef | None
    entries: int
    packs: set[str]  # every pack a node references (data and metadata)


SPOOL_BLOCK = 1024  # spooled entries read ahead: their chunks are located at once


class TreeBuilder:
    def __init__(self, meta: ChunkWriter, locate: Callable[[ChunkId], ChunkLocation],
                 prefetch: Callable[[list[str]], None] | None = None):
        self.meta = meta
        self.locate = locate
        self.prefetch = prefetch  # told the chunks of the next block of entries
        self.packs: set[str] = set()
        self.entries = 0
        self.nodes_written = 0

    # ------------------------------------------------------------ blobs
    def store_blob(self, plain: bytes, kind: bytes, what: bytes) -> tc.BlobRef:
        if len(plain) > tc.MAX_META_BLOB:
            raise ManifestError(f"metadata of {what[:200]!r} is {len(plain)} bytes, more than "
                                f"a reader accepts ({tc.MAX_META_BLOB}); not committing the run")
        ref = blob_ref(self.meta.add_blob(plain, kind))
        self.packs.add(ref.pack)
        self.nodes_written += 1
        return ref

    def content_refs(self, chunks: list[ChunkId], what: bytes
                     ) -> tuple[list[tc.BlobRef] | None, list[tc.BlobRef] | None]:
        """(inline chunks, None) or (None, chunk lists) of a file or stream."""
        refs = []
        for chunk in chunks:
            ref = blob_ref(self.locate(chunk))
            self.packs.add(ref.pack)
            refs.append(ref)
        if len(refs) <= tc.INLINE_CHUNKS:
            return refs, None
        lists: list[tc.BlobRef] = []
        current: list[tc.BlobRef] = []
        for ref in refs:
            current.append(ref)
            if len(current) >= tc.LIST_MAX or tc.list_cut_after(ref.id, len(current)):
                lists.append(self.store_blob(tc.encode_chunk_list(current), pack2.KIND_CHUNK_LIST,
                                         what))
                current = []
        if current:
            lists.append(self.store_blob(tc.encode_chunk_list(current), pack2.KIND_CHUNK_LIST, what))
        if len(lists) > tc.MAX_LISTS:
            raise ManifestError(f"{what[:200]!r} has more chunks than format 2 holds")
        return None, lists

    # ------------------------------------------------------------ the walk
    def build(self, spool: IO[bytes]) -> TreeResult:
        spool.seek(0)
        stack: list[_Dir] = []
        root: _Dir | None = None
        for raw in self._lines(spool):
            line, tab, listed = raw.rstrip(b"\n").partition(b"\t")
            obj = json.loads(line)
            path = _path_of(obj)
            self.entries += 1
            if path == b"/":
                root = _Dir(b"/", obj)
                stack = [root]
                continue
            parent = path.rsplit(b"/", 1)[0] or b"/"
            while stack and not _is_within(parent, stack[-1].path):
                self._close(stack)
            if not stack:
                root = _Dir(b"/", _synthetic_dir(), synthetic=True)
                stack = [root]
            while stack[-1].path != parent:  # an ancestor the walk did not record
                top = stack[-1].path
                rest = parent[len(top):].lstrip(b"/") if top != b"/" else parent[1:]
                name = rest.split(b"/", 1)[0]
                child = top + name if top == b"/" else top + b"/" + name
                log.warning("%r was not recorded: stored as a plain directory", child)
                self._append(stack[-1], name, _synthetic_dir(), None, None, True)
                stack.append(_Dir(child, _synthetic_dir(), synthetic=True))
            name = path.rsplit(b"/", 1)[1]
            chunks = lists = None
            if tab:
                pairs = [item.split(b":") for item in listed.split(b",")] if listed else []
                chunks, lists = self.content_refs(
                    [ChunkId(h.decode("ascii"), int(n)) for h, n in pairs], path)
            is_dir = obj.get("kind") == "dir"
            self._append(stack[-1], name, obj, chunks, lists, is_dir)
            if is_dir:
                stack.append(_Dir(path, obj))
        root_tree = None
        while stack:
            root_tree = self._close(stack)
        if root is None:
            return TreeResult(None, None, self.entries, self.packs)
        return TreeResult(root.obj, root_tree, self.entries, self.packs)

    def _lines(self, spool: IO[bytes]) -> Iterator[bytes]:
        """The spool's lines, a block at a time (the block's chunks prefetched)."""
        while True:
            block = list(itertools.islice(spool, SPOOL_BLOCK))
            if not block:
                return
            if self.prefetch is not None:
                self.prefetch([item[:64].decode("ascii")
                               for raw in block if b"\t" in raw
                               for item in raw.rstrip(b"\n").partition(b"\t")[2].split(b",")
                               if item])
            yield from block

    def _append(self, parent: _Dir, name: bytes, obj: dict[str, Any],
                chunks: list[tc.BlobRef] | None, lists: list[tc.BlobRef] | None,
                is_dir: bool) -> None:
        if parent.leaf and (len(parent.leaf) >= tc.LEAF_MAX
                            or tc.cut_after(parent.last_name, len(parent.leaf))):
            self._flush_leaf(parent)
        node_obj = tc.entry_object(obj, name)
        size = len(line_dumps(node_obj)) + 80 * len(chunks or lists or ()) + (80 if is_dir else 0)
        if parent.leaf and parent.leaf_bytes + size > tc.NODE_TARGET_BYTES:
            self._flush_leaf(parent)
        parent.leaf.append((node_obj, chunks, lists, None))
        parent.leaf_bytes += size
        parent.last_name = name

    def _flush_leaf(self, directory: _Dir) -> None:
        first = _entry_name(directory.leaf[0][0])
        ref = self.store_blob(tc.encode_leaf(directory.leaf), pack2.KIND_TREE, directory.path)
        directory.leaves.append((first, len(directory.leaf), ref))
        directory.leaf = []
        directory.leaf_bytes = 0

    def _close(self, stack: list[_Dir]) -> tc.BlobRef:
        directory = stack.pop()
        if directory.leaf or not directory.leaves:
            if directory.leaves:
                self._flush_leaf(directory)
            else:  # one leaf (perhaps empty) is the whole directory
                tree = self.store_blob(tc.encode_leaf(directory.leaf), pack2.KIND_TREE,
                                   directory.path)
                self._set_tree(stack, directory, tree)
                return tree
        level = directory.leaves
        height = 0
        while len(level) > 1:
            height += 1
            if height > tc.MAX_HEIGHT:
                raise ManifestError(f"{directory.path[:200]!r} has too many entries for "
                                    "format 2")
            upper: list[tuple[bytes, int, tc.BlobRef]] = []
            group: list[tuple[bytes, int, tc.BlobRef]] = []
            for child in level:
                group.append(child)
                if len(group) >= tc.LEAF_MAX or tc.cut_after(child[0], len(group)):
                    upper.append(self._inner(height, group, directory.path))
                    group = []
            if group:
                upper.append(self._inner(height, group, directory.path))
            level = upper
        tree = level[0][2]
        self._set_tree(stack, directory, tree)
        return tree

    def _inner(self, height: int, group: list[tuple[bytes, int, tc.BlobRef]],
               path: bytes) -> tuple[bytes, int, tc.BlobRef]:
        ref = self.store_blob(tc.encode_inner(height, group), pack2.KIND_TREE, path)
        return group[0][0], sum(count for _, count, _ in group), ref

    @staticmethod
    def _set_tree(stack: list[_Dir], directory: _Dir, tree: tc.BlobRef) -> None:
        if not stack:
            return
        parent = stack[-1]
        obj, chunks, lists, _ = parent.leaf[-1]
        assert _entry_name(obj) == directory.path.rsplit(b"/", 1)[1], "walk order broken"
        parent.leaf[-1] = (obj, chunks, lists, tree)


def record_snapshot(builder: TreeBuilder, obj: dict[str, Any], chunks: list[ChunkId]
                    ) -> tuple[dict[str, Any], list[tc.BlobRef] | None,
                               list[tc.BlobRef] | None]:
    inline, lists = builder.content_refs(chunks, obj["name"].encode("utf-8", "replace"))
    return obj, inline, lists


def _path_of(obj: dict[str, Any]) -> bytes:
    if "path" in obj:
        return obj["path"].encode("utf-8")
    return base64.b64decode(obj["path_b64"])


def _entry_name(obj: dict[str, Any]) -> bytes:
    if "name" in obj:
        return obj["name"].encode("utf-8")
    return base64.b64decode(obj["name_b64"])


def _synthetic_dir() -> dict[str, Any]:
    return {"kind": "dir", "mode": "0755", "uid": 0, "gid": 0, "mtime_ns": 0}


def _is_within(path: bytes, directory: bytes) -> bool:
    return directory == b"/" or path == directory or path.startswith(directory + b"/")

