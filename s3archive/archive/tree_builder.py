"""Format 2: turn the run's spooled entries into tree nodes, bottom-up, streaming.

Entries arrive in path (component-wise) order, so a directory's contents
follow it directly and a directory is complete when the walk leaves it.
While the spool is read, each open directory keeps only where its entries'
lines are (16 bytes an entry), a digest of those lines and its
subdirectories' trees: memory is bounded by the largest directory, whatever
the size of the run.  When a directory is complete, its digest is looked up
in the directory cache (archive/dir_cache.py): an unchanged directory reuses
the nodes an earlier run stored and costs nothing more.  Otherwise its lines
are read again and encoded, one leaf at a time.  Nodes go to the metadata
writer (content-addressed: a directory that encodes to the same bytes has the
same id, and is not stored again).  Every pack a node references is collected
for the run's pack table.

The lines are taken from the spool as it grows (:meth:`TreeBuilder.feed`: a run
that can reference only its own packs builds its trees during the walk,
archiver._EarlyTrees) or all at once (:meth:`TreeBuilder.build`): the same nodes,
byte for byte, stored in the same order.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import logging
import os
import re
from array import array
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator, Mapping

from s3archive.archive.chunk_writer import ChunkWriter
from s3archive.archive.dir_cache import DirCache, DirRow, new_digest, ref_line
from s3archive.archive.packer import ChunkId, ChunkLocation
from s3archive.errors import ManifestError
from s3archive.format import pack2
from s3archive.format import tree_codec as tc

log = logging.getLogger(__name__)


# an entry object holding one of these keys (an unknown key of a spooled line) is
# encoded as tc.encode_leaf does it: the reference replaces the key's value in place
_REF_KEYS = ("tree", "chunk_lists", "chunks")
# tc.dumps and json.loads without making an encoder or detecting an encoding each time
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_decode = json.JSONDecoder().decode

READ_BYTES = 1 << 20  # a changed directory's lines are read again in runs of up to this
FEED_BYTES = 1 << 16  # the spool is read in runs of this many bytes (or a whole line)
SPOOL_BLOCK = 1024  # entries of a changed directory encoded at once: their chunks located at once
_SYNTHETIC = -1  # the offset of an entry the walk did not record (an ancestor)
# how file_stage spools an entry (manifest_codec.encode_entry): a path that needs
# no escaping is read off the line without decoding it
_PATH_AT = b'{"type":"entry","path":"'
_KIND_AT = b'","kind":"'
_DIR_KIND_AT = b'","kind":"dir"'
# the usual spooled line: its keys (no other) in the order tc.entry_object puts them
# (manifest_codec.encode_entry's, and local_cache.join_line's for most files), its
# path and strings without escapes (JSON writes them as their UTF-8 bytes).  Its node
# object's JSON is then the line with ``"name":NAME`` for its type and path: the bytes
# tc.entry_object and json.dumps would make of it, without decoding it
_USUAL_LINE = re.compile(
    rb'\{"type":"entry","path":"(?P<path>/[^"\\]*)","kind":"(?P<kind>[a-z]+)",'
    rb'"mode":"[0-7]{3,4}","uid":(?:0|[1-9][0-9]*),"gid":(?:0|[1-9][0-9]*)'
    rb'(?:,"user":"[^"\\]*")?(?:,"group":"[^"\\]*")?,"mtime_ns":-?(?:0|[1-9][0-9]*)'
    rb'(?:,"size":(?:0|[1-9][0-9]*))?(?:,"target":"[^"\\]*")?'
    rb'(?:,"ino":(?:0|[1-9][0-9]*))?(?:,"ctime_ns":-?(?:0|[1-9][0-9]*))?\}')


def blob_ref(location: ChunkLocation) -> tc.BlobRef:
    return tc.BlobRef(location.hash, location.size, location.pack, location.offset,
                      location.stored, location.encoding)


@dataclass
class _Dir:
    """A directory whose entries are being read: where their lines are, and a digest."""

    path: bytes
    digest: hashlib._Hash
    obj: dict[str, Any] | None = None  # the root's own entry (spool form)
    offsets: array[int] = field(default_factory=lambda: array("q"))  # of the lines in the spool
    lengths: array[int] = field(default_factory=lambda: array("q"))
    synthetic: dict[int, bytes] = field(default_factory=dict)  # index -> name, not recorded
    trees: dict[int, tc.BlobRef] = field(default_factory=dict)  # index -> a subdirectory's

    def add(self, offset: int, raw: bytes) -> None:
        self.offsets.append(offset)
        self.lengths.append(len(raw))
        self.digest.update(raw)

    def add_synthetic(self, name: bytes) -> None:
        self.synthetic[len(self.offsets)] = name
        self.offsets.append(_SYNTHETIC)
        self.lengths.append(0)
        self.digest.update(b"synthetic %d " % len(name) + name + b"\n")

    def set_tree(self, tree: tc.BlobRef) -> None:
        """The tree of the subdirectory that is this directory's last entry."""
        self.trees[len(self.offsets) - 1] = tree
        self.digest.update(ref_line(tree))


@dataclass
class _Encoding:
    """A directory being encoded: its current leaf and the leaves already written."""

    path: bytes
    # the current leaf: its entries' JSON, each made as it joins the leaf (its
    # references index the leaf's packs, in order of first use: tc.PackList's)
    leaf: list[bytes] = field(default_factory=list)
    packs: dict[str, int] = field(default_factory=dict)
    leaf_bytes: int = 0  # (the size that cuts it: each entry's object and references)
    first_name: bytes = b""
    last_name: bytes = b""
    leaves: list[tuple[bytes, int, tc.BlobRef]] = field(default_factory=list)


@dataclass
class TreeResult:
    root: dict[str, Any] | None  # the entry of "/" (spool form), None for a run without files
    root_tree: tc.BlobRef | None
    entries: int
    packs: set[str]  # every pack a node references (data and metadata)


class TreeBuilder:
    """Builds a run's trees.  With ``dirs`` (the directory cache) an unchanged
    directory is reused when its data packs are ones ``may_reference`` allows
    (packs the run uploaded or leased: the root's pack table lists exactly those)."""

    def __init__(self, meta: ChunkWriter, locate: Callable[[ChunkId], ChunkLocation],
                 prefetch: Callable[[list[str]], Mapping[str, ChunkLocation]] | None = None,
                 dirs: DirCache | None = None,
                 may_reference: Callable[[str], bool] | None = None):
        self.meta = meta
        self.locate = locate
        # told the chunks of the next block of entries: returns where those it knows are
        self.prefetch = prefetch
        self.dirs = dirs
        self.may_reference = may_reference
        self.packs: set[str] = set()
        self.entries = 0
        self.nodes_written = 0
        self.dirs_encoded = 0
        self.dirs_reused = 0
        self._fd = -1
        # what the directory being encoded stores and references (its row)
        self._blobs: list[ChunkLocation] | None = None
        self._data: set[str] | None = None

    # ------------------------------------------------------------ blobs
    def store_blob(self, plain: bytes, kind: bytes, what: bytes) -> tc.BlobRef:
        if len(plain) > tc.MAX_META_BLOB:
            raise ManifestError(f"metadata of {what[:200]!r} is {len(plain)} bytes, more than "
                                f"a reader accepts ({tc.MAX_META_BLOB}); not committing the run")
        location = self.meta.add_blob(plain, kind)
        if self._blobs is not None:
            self._blobs.append(location)
        ref = blob_ref(location)
        self.packs.add(ref.pack)
        self.nodes_written += 1
        return ref

    def content_refs(self, chunks: list[ChunkId], what: bytes
                     ) -> tuple[list[tc.BlobRef] | None, list[tc.BlobRef] | None]:
        """(inline chunks, None) or (None, chunk lists) of a file or stream."""
        locate = self.locate
        refs = [blob_ref(locate(chunk)) for chunk in chunks]
        if len(refs) == 1:  # (most files: one chunk)
            pack = refs[0].pack
            self.packs.add(pack)
            if self._data is not None:
                self._data.add(pack)
        else:
            used = {ref.pack for ref in refs}
            self.packs |= used
            if self._data is not None:
                self._data |= used
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
        """The trees of every line in ``spool``, at once (:meth:`start`, :meth:`feed`
        of all of it, :meth:`finish`)."""
        spool.seek(0)  # (flushes what was written: the lines are read with pread)
        self.start(spool)
        self.feed(os.fstat(self._fd).st_size)
        return self.finish()

    def start(self, spool: IO[bytes]) -> None:
        """Begin a build over ``spool``, whose lines are then taken by :meth:`feed`
        as they are written (flushed), and the rest by :meth:`finish`."""
        self._spool = spool
        self._fd = spool.fileno()
        if self.dirs is not None:
            self.dirs.begin_pass()
        self._seed = new_digest()
        self._stack: list[_Dir] = []
        self._root: _Dir | None = None
        self._taken = 0  # the spool's bytes taken so far (whole lines)

    def feed(self, end: int) -> None:
        """Take the spooled lines up to ``end`` (written and flushed), closing the
        directories the walk has left."""
        fd = self._fd
        while self._taken < end:
            size = FEED_BYTES
            while True:  # a read that holds a whole line (a longer one: read again)
                want = min(size, end - self._taken)
                block = os.pread(fd, want, self._taken)
                if len(block) != want:
                    raise ManifestError("the run's entry spool was cut short")
                if want == end - self._taken or b"\n" in block:
                    break
                size *= 2
            start = self._taken
            top, prefix = self._top()
            skip = len(prefix)
            for raw in io.BytesIO(block):
                if raw[-1] != 10 and start + len(raw) < end:
                    break  # cut by the read (read again); the spool's last line may have
                # (no newline) most lines: an entry, not a directory, of the directory
                # taken last, its path unescaped: _take's first case, inlined
                if top is not None and raw.startswith(prefix):
                    quote = raw.find(b'"', skip)
                    name = raw[skip:quote]
                    if quote > skip and b"/" not in name and b"\\" not in name \
                            and raw.startswith(_KIND_AT, quote) \
                            and not raw.startswith(_DIR_KIND_AT, quote):
                        self.entries += 1
                        top.add(start, raw)
                        start += len(raw)
                        continue
                self._taken = start
                self._take(start, raw)
                top, prefix = self._top()
                skip = len(prefix)
                start += len(raw)
            self._taken = start

    def _top(self) -> tuple[_Dir | None, bytes]:
        """The directory taken last, and how its entries' lines begin (_PATH_AT and
        the directory's path and a slash)."""
        if not self._stack:
            return None, b"\n"  # (no line begins so)
        top = self._stack[-1]
        return top, _PATH_AT + (b"" if top.path == b"/" else top.path) + b"/"

    def finish(self) -> TreeResult:
        """Take the lines not taken yet, close every directory still open."""
        self._spool.flush()
        self.feed(os.fstat(self._fd).st_size)
        stack, root = self._stack, self._root
        root_tree = None
        while stack:
            root_tree = self._close(stack)
        if self.dirs is not None:
            self.dirs.flush()
        log.info("trees: %d directories unchanged (reused), %d encoded", self.dirs_reused,
                 self.dirs_encoded)
        if root is None:
            return TreeResult(None, None, self.entries, self.packs)
        return TreeResult(root.obj, root_tree, self.entries, self.packs)

    def _take(self, start: int, raw: bytes) -> None:
        """Take one spooled line at ``start``."""
        stack, seed = self._stack, self._seed
        path, is_dir = _spooled_path(raw)
        if path == b"/":
            self.entries += 1
            self._root = _Dir(b"/", seed.copy(), json.loads(raw.partition(b"\t")[0]))
            self._stack = [self._root]
            return
        parent = path.rsplit(b"/", 1)[0] or b"/"
        if stack and stack[-1].path == parent:  # (most entries: the directory's own)
            self.entries += 1
            stack[-1].add(start, raw)
            if is_dir:
                stack.append(_Dir(path, seed.copy()))
            return
        while stack and not _is_within(parent, stack[-1].path):
            self._close(stack)
        self.entries += 1
        if not stack:
            self._root = _Dir(b"/", seed.copy(), _synthetic_dir())
            stack.append(self._root)
        while stack[-1].path != parent:  # an ancestor the walk did not record
            top = stack[-1].path
            rest = parent[len(top):].lstrip(b"/") if top != b"/" else parent[1:]
            name = rest.split(b"/", 1)[0]
            child = top + name if top == b"/" else top + b"/" + name
            log.warning("%r was not recorded: stored as a plain directory", child)
            stack[-1].add_synthetic(name)
            stack.append(_Dir(child, seed.copy()))
        stack[-1].add(start, raw)
        if is_dir:
            stack.append(_Dir(path, seed.copy()))

    def _close(self, stack: list[_Dir]) -> tc.BlobRef:
        directory = stack.pop()
        digest = directory.digest.digest()
        row = self.dirs.lookup(directory.path, digest) if self.dirs is not None else None
        if row is not None and self._reuse(row):
            self.dirs_reused += 1
            tree = blob_ref(row.tree)
            assert self.dirs is not None
            self.dirs.keep(directory.path)
        else:
            self.dirs_encoded += 1
            self._blobs, self._data = [], set()
            try:
                tree = self._encode(directory)
                blobs = tuple(dict.fromkeys(self._blobs))
                made = DirRow(next(b for b in blobs if b.hash == tree.id), blobs,
                              frozenset(self._data))
            finally:
                self._blobs = self._data = None
            if self.dirs is not None:
                self.dirs.remember(directory.path, digest, made)
        if stack:
            stack[-1].set_tree(tree)
        return tree

    def _reuse(self, row: DirRow) -> bool:
        """Take an unchanged directory's nodes as they are, if that is safe (dir_cache)."""
        if self.may_reference is None or not all(map(self.may_reference, row.data_packs)):
            return False
        if not self.meta.adopt_blobs(row.blobs):
            return False
        self.packs.update(row.data_packs)
        self.packs.update(blob.pack for blob in row.blobs)
        return True

    # ------------------------------------------------------------ encoding
    def _encode(self, directory: _Dir) -> tc.BlobRef:
        encoding = _Encoding(directory.path)
        lines = self._lines(directory)
        while block := list(itertools.islice(lines, SPOOL_BLOCK)):
            self._encode_block(directory, encoding, block)
        return self._close_encoding(directory, encoding)

    def _encode_block(self, directory: _Dir, encoding: _Encoding,
                      block: list[tuple[int, bytes | None]]) -> None:
        trees_get, usual_line = directory.trees.get, _USUAL_LINE.fullmatch
        content_refs, append_encoded = self.content_refs, self._append_encoded
        locate, packs_add = self.locate, self.packs.add
        # the data packs of the directory being encoded (its row), if it collects them
        data_add = (self._data if self._data is not None else set()).add
        # each line split once: (line, tab, chunks), None for an entry not recorded
        parts = [raw.rstrip(b"\n").partition(b"\t") if raw is not None else None
                 for _, raw in block]
        located: Mapping[str, ChunkLocation] = {}
        if self.prefetch is not None:  # told the block's chunks at once
            located = self.prefetch([item[:64].decode("ascii") for split in parts
                                     if split is not None and split[2]
                                     for item in split[2].split(b",") if item])
        located_get = located.get
        for (index, _), split in zip(block, parts):
            chunks = lists = None
            tree = trees_get(index)
            if split is None:
                name = directory.synthetic[index]
                self._append(encoding, name, _synthetic_dir(), None, None, tree)
                continue
            line, tab, listed = split
            usual = usual_line(line)
            if usual is not None:  # its node object is the line, renamed (_USUAL_LINE)
                path = usual["path"]
                kind = usual["kind"]
                name = path.rpartition(b"/")[2]
            else:
                obj = _decode(line.decode("utf-8", "surrogatepass"))  # (json.loads of a line)
                path = _path_of(obj)
                kind = obj.get("kind")
                name = path.rsplit(b"/", 1)[1]
            if tab and listed and b"," not in listed:  # (most files: one chunk)
                digest, size = listed.split(b":")
                hex_id = digest.decode("ascii")
                location = located_get(hex_id)
                if location is None:
                    location = locate(ChunkId(hex_id, int(size)))
                packs_add(location.pack)
                data_add(location.pack)
                if usual is not None:  # (referenced by its location: encode_leaf)
                    chunks = [location]
                else:
                    chunks = [blob_ref(location)]
            elif tab:
                chunks, lists = content_refs([_chunk_id(item) for item in listed.split(b",")]
                                             if listed else [], path)
            assert (tree is not None) == (kind in ("dir", b"dir")), "walk order broken"
            if usual is not None:
                append_encoded(encoding, name, b'{"name":"' + name + b'",'
                               + line[usual.end("path") + 2:], None, chunks, lists, tree)
            else:
                self._append(encoding, name, obj, chunks, lists, tree)

    def _close_encoding(self, directory: _Dir, encoding: _Encoding) -> tc.BlobRef:
        if encoding.leaf or not encoding.leaves:
            if not encoding.leaves:  # one leaf (perhaps empty) is the whole directory
                return self.store_blob(encode_leaf(encoding.leaf, encoding.packs),
                                       pack2.KIND_TREE, directory.path)
            self._flush_leaf(encoding)
        level = encoding.leaves
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
        return level[0][2]

    def _lines(self, directory: _Dir) -> Iterator[tuple[int, bytes | None]]:
        """The directory's entries' lines (None for an entry not recorded), read again
        from the spool: adjacent lines with one read."""
        offsets, lengths = directory.offsets, directory.lengths
        count, index = len(offsets), 0
        while index < count:
            start = offsets[index]
            if start == _SYNTHETIC:
                yield index, None
                index += 1
                continue
            stop, end = index, start
            while stop < count and offsets[stop] == end and end - start < READ_BYTES:
                end += lengths[stop]
                stop += 1
            block = os.pread(self._fd, end - start, start)
            if len(block) != end - start:
                raise ManifestError("the run's entry spool was cut short")
            at = 0
            for number in range(index, stop):
                yield number, block[at:at + lengths[number]]
                at += lengths[number]
            index = stop

    def _append(self, encoding: _Encoding, name: bytes, obj: dict[str, Any],
                chunks: list[tc.BlobRef] | None, lists: list[tc.BlobRef] | None,
                tree: tc.BlobRef | None) -> None:
        node_obj = tc.entry_object(obj, name)
        odd = node_obj if any(key in node_obj for key in _REF_KEYS) else None
        self._append_encoded(encoding, name, _dumps(node_obj).encode("utf-8"), odd, chunks,
                             lists, tree)

    def _append_encoded(self, encoding: _Encoding, name: bytes, encoded: bytes,
                        odd: dict[str, Any] | None,
                        chunks: list[tc.BlobRef] | list[ChunkLocation] | None,
                        lists: list[tc.BlobRef] | None, tree: tc.BlobRef | None) -> None:
        """Add an entry whose node object is ``encoded`` (``odd``: the object, when it
        has a reference's key) and whose data is ``chunks`` (references, or the chunk
        writer's locations, which make the same references) or ``lists``.

        The entry goes into the leaf as ``tc.encode_leaf`` writes it, byte for byte:
        its references spliced in before the object's closing brace, where
        ``json.dumps`` writes keys added last (an entry object is never empty: it has
        a name)."""
        count = len(encoding.leaf)
        if count and (count >= tc.LEAF_MAX or tc.cut_after(encoding.last_name, count)):
            self._flush_leaf(encoding)
        # sized by the entry's line (+1: its newline) and its references
        size = (len(encoded) + 1 + 80 * len(chunks or lists or ())
                + (80 if tree is not None else 0))
        if encoding.leaf and encoding.leaf_bytes + size > tc.NODE_TARGET_BYTES:
            self._flush_leaf(encoding)
        leaf, packs = encoding.leaf, encoding.packs
        if not leaf:
            encoding.first_name = name
        encoding.leaf_bytes += size
        encoding.last_name = name
        if odd is not None:
            listed = tc.PackList()
            listed.keys = packs
            # (an odd entry's chunks are references: only a usual line's are locations)
            leaf.append(tc.dumps(tc.leaf_item(odd, chunks, lists, tree,  # type: ignore[arg-type]
                                              listed)))
            return
        if tree is None and chunks is None and lists is None:
            leaf.append(encoded)
            return
        refs = []
        if tree is not None:
            refs.append('"tree":' + _ref_json(tree, packs))
        if lists is not None:
            refs.append('"chunk_lists":[' + ",".join([_ref_json(r, packs) for r in lists])
                        + "]")
        elif chunks is not None:
            refs.append('"chunks":[' + ",".join([
                _location_json(r, packs) if type(r) is ChunkLocation else _ref_json(r, packs)
                for r in chunks]) + "]")
        leaf.append(encoded[:-1] + b"," + ",".join(refs).encode("utf-8") + b"}")

    def _flush_leaf(self, encoding: _Encoding) -> None:
        ref = self.store_blob(encode_leaf(encoding.leaf, encoding.packs), pack2.KIND_TREE,
                              encoding.path)
        encoding.leaves.append((encoding.first_name, len(encoding.leaf), ref))
        encoding.leaf = []
        encoding.packs = {}
        encoding.leaf_bytes = 0

    def _inner(self, height: int, group: list[tuple[bytes, int, tc.BlobRef]],
               path: bytes) -> tuple[bytes, int, tc.BlobRef]:
        ref = self.store_blob(tc.encode_inner(height, group), pack2.KIND_TREE, path)
        return group[0][0], sum(count for _, count, _ in group), ref


def encode_leaf(entries: list[bytes], packs: dict[str, int]) -> bytes:
    """``tc.encode_leaf``'s bytes of a leaf whose entries are encoded already (their
    references indexing ``packs``)."""
    return (b'{"node":"leaf","packs":' + tc.dumps(list(packs)) + b',"entries":['
            + b",".join(entries) + b"]}")


def _ref_json(ref: tc.BlobRef, packs: dict[str, int]) -> str:
    """``json.dumps`` of ``tc.PackList.ref(ref)`` (compact), written directly when its
    strings need no escaping (a hex id, an encoding's name: always) and its numbers
    are ints."""
    index = packs.setdefault(ref.pack, len(packs))
    if ref.id.isalnum() and ref.encoding.isalnum() and type(ref.size) is int \
            and type(ref.offset) is int and type(ref.stored) is int:
        return f'["{ref.id}",{ref.size},{index},{ref.offset},{ref.stored},"{ref.encoding}"]'
    return _dumps([ref.id, ref.size, index, ref.offset, ref.stored, ref.encoding])


def _location_json(location: ChunkLocation, packs: dict[str, int]) -> str:
    """``_ref_json`` of ``blob_ref(location)``, without making the reference."""
    index = packs.setdefault(location.pack, len(packs))
    if location.hash.isalnum() and location.encoding.isalnum() \
            and type(location.size) is int and type(location.offset) is int \
            and type(location.stored) is int:
        return (f'["{location.hash}",{location.size},{index},{location.offset},'
                f'{location.stored},"{location.encoding}"]')
    return _dumps([location.hash, location.size, index, location.offset, location.stored,
                   location.encoding])


def record_snapshot(builder: TreeBuilder, obj: dict[str, Any], chunks: list[ChunkId]
                    ) -> tuple[dict[str, Any], list[tc.BlobRef] | None,
                               list[tc.BlobRef] | None]:
    inline, lists = builder.content_refs(chunks, obj["name"].encode("utf-8", "replace"))
    return obj, inline, lists


def _chunk_id(item: bytes) -> ChunkId:
    """A chunk as the spool lists it (``hash:size``)."""
    digest, size = item.split(b":")
    return ChunkId(digest.decode("ascii"), int(size))


def _spooled_path(raw: bytes) -> tuple[bytes, bool]:
    """A spooled entry's path, and whether it is a directory.

    A path that needs no escaping is read off the line as it is (the entry's
    JSON writes it as its UTF-8 bytes, and its kind right after); any other
    line is decoded."""
    if raw.startswith(_PATH_AT):
        end = raw.find(b'"', len(_PATH_AT))
        path = raw[len(_PATH_AT):end]
        if end > 0 and b"\\" not in path:
            if raw.startswith(_DIR_KIND_AT, end):
                return path, True
            if raw.startswith(_KIND_AT, end):
                return path, False
    obj = json.loads(raw.partition(b"\t")[0])
    return _path_of(obj), obj.get("kind") == "dir"


def _path_of(obj: dict[str, Any]) -> bytes:
    if "path" in obj:
        return obj["path"].encode("utf-8")
    return base64.b64decode(obj["path_b64"])


def _synthetic_dir() -> dict[str, Any]:
    return {"kind": "dir", "mode": "0755", "uid": 0, "gid": 0, "mtime_ns": 0}


def _is_within(path: bytes, directory: bytes) -> bool:
    return directory == b"/" or path == directory or path.startswith(directory + b"/")
