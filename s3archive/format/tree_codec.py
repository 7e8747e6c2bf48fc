"""Format 2 metadata blobs: tree nodes, chunk lists and the run record (no I/O).

docs/FORMAT.md, part 2, section 6.  A directory is a leaf node (its entries,
by name) or, when large, inner nodes over leaves; cuts depend only on the
names, so one changed file rewrites one leaf and the nodes above it.  Every
reference in a node indexes the node's own ``packs`` list; decoding maps it
to the run's pack table (which pins each pack's version) and refuses a node
naming a pack the run does not pin.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from s3archive.errors import ManifestError
from s3archive.format import pack2
from s3archive.format.limits import LIMITS, MAX_CHUNK_SIZE, ManifestLimits
from s3archive.format.manifest_codec import (_HASH, ENCODINGS, _is_nat, _Line, check_path,
                                             decode_entry, decode_snapshot, decode_trailer)
from s3archive.format.model import KINDS, ChunkRef, Entry, PackRef, Snapshot, Warning_

# Cuts (section 6.3, 6.4)
LEAF_MIN = 64
LEAF_MAX = 4096
LEAF_CUT = (1 << 32) // 512
NODE_TARGET_BYTES = 1 << 20  # a leaf is cut before its JSON passes this
MAX_HEIGHT = 3
INLINE_CHUNKS = 1024  # more chunks than this go to chunk lists
LIST_MIN = 256
LIST_MAX = 4096
LIST_CUT = (1 << 32) // 1024
MAX_LISTS = 4096
MAX_META_BLOB = MAX_CHUNK_SIZE  # plain bytes of a T, L or R blob

_sha256 = hashlib.sha256

_DROP = ("type", "path", "path_b64")
_ORDER = ("kind", "mode", "uid", "gid", "user", "group", "mtime_ns", "size", "target",
          "target_b64", "rdev", "acl_access", "acl_default", "xattrs", "extents", "ino",
          "ctime_ns")
_KNOWN = frozenset(_ORDER + _DROP + ("chunks",))


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def name_of(path: bytes) -> bytes:
    return path.rsplit(b"/", 1)[1] if path != b"/" else b"/"


def cut_after(name: bytes, count: int) -> bool:
    """The content-defined cut rule of leaves and inner nodes: the name's SHA-256,
    its first 4 bytes as a big-endian number, below ``LEAF_CUT``."""
    if count < LEAF_MIN:
        return False
    # (compared as bytes: the digest is below LEAF_CUT's 4 bytes exactly when its
    # first 4 are, as numbers; equal first 4 bytes make the longer digest greater)
    return _sha256(name).digest() < LEAF_CUT.to_bytes(4, "big")


def list_cut_after(chunk_id: str, count: int) -> bool:
    return count >= LIST_MIN and int(chunk_id[:8], 16) < LIST_CUT


def put_name(obj: dict[str, Any], name: bytes) -> None:
    try:
        obj["name"] = name.decode("utf-8")
    except UnicodeDecodeError:
        obj["name_b64"] = base64.b64encode(name).decode("ascii")


class PackList:
    """A node's ``packs`` list, built in order of first use."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}

    def ref(self, ref: "BlobRef") -> list[Any]:
        index = self.keys.setdefault(ref.pack, len(self.keys))
        return [ref.id, ref.size, index, ref.offset, ref.stored, ref.encoding]


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A writer's reference: the pack by key (the node's list gives its index)."""

    id: str
    size: int
    pack: str
    offset: int
    stored: int
    encoding: str


# ------------------------------------------------------------------ encoding
def entry_object(spool_obj: dict[str, Any], name: bytes) -> dict[str, Any]:
    """A format-1 entry line (as spooled) as a node entry: ``name`` for ``path``,
    no ``type``, ``ino`` or ``ctime_ns``."""
    obj: dict[str, Any] = {}
    put_name(obj, name)
    # one key order whatever produced the line (the walk, or a cache row), so an
    # unchanged entry always encodes to the same bytes
    for key in _ORDER:
        if key in spool_obj:
            obj[key] = spool_obj[key]
    for key in sorted(spool_obj.keys() - _KNOWN):
        obj[key] = spool_obj[key]
    return obj


def encode_leaf(entries: Sequence[tuple[dict[str, Any], list[BlobRef] | None,
                                        list[BlobRef] | None, BlobRef | None]]) -> bytes:
    """``entries``: (node entry object, chunks, chunk lists, tree) each."""
    packs = PackList()
    out = [leaf_item(obj, chunks, lists, tree, packs) for obj, chunks, lists, tree in entries]
    return dumps({"node": "leaf", "packs": list(packs.keys), "entries": out})


def leaf_item(obj: dict[str, Any], chunks: list[BlobRef] | None, lists: list[BlobRef] | None,
              tree: BlobRef | None, packs: PackList) -> dict[str, Any]:
    """One entry of a leaf: its object and its references (indexing ``packs``)."""
    item = dict(obj)
    if tree is not None:
        item["tree"] = packs.ref(tree)
    if lists is not None:
        item["chunk_lists"] = [packs.ref(r) for r in lists]
    elif chunks is not None:
        item["chunks"] = [packs.ref(r) for r in chunks]
    return item


def encode_inner(height: int, children: Sequence[tuple[bytes, int, BlobRef]]) -> bytes:
    packs = PackList()
    out = []
    for first, count, ref in children:
        child: dict[str, Any] = {}
        try:
            child["first"] = first.decode("utf-8")
        except UnicodeDecodeError:
            child["first_b64"] = base64.b64encode(first).decode("ascii")
        child["entries"] = count
        child["ref"] = packs.ref(ref)
        out.append(child)
    return dumps({"node": "inner", "height": height, "packs": list(packs.keys),
                  "children": out})


def encode_chunk_list(chunks: Sequence[BlobRef]) -> bytes:
    packs = PackList()
    refs = [packs.ref(r) for r in chunks]
    return dumps({"packs": list(packs.keys), "chunks": refs})


def encode_record(root: dict[str, Any] | None, root_tree: BlobRef | None,
                  snapshots: Sequence[tuple[dict[str, Any], list[BlobRef] | None,
                                            list[BlobRef] | None]],
                  warnings: Iterable[dict[str, Any]]) -> bytes:
    packs = PackList()
    root_obj = None
    if root is not None:
        assert root_tree is not None
        root_obj = dict(root)
        root_obj["tree"] = packs.ref(root_tree)
    snaps = []
    for obj, chunks, lists in snapshots:
        item = dict(obj)
        item.pop("type", None)
        item.pop("chunks", None)
        if lists is not None:
            item["chunk_lists"] = [packs.ref(r) for r in lists]
        else:
            item["chunks"] = [packs.ref(r) for r in chunks or []]
        snaps.append(item)
    return dumps({"packs": list(packs.keys), "root": root_obj, "snapshots": snaps,
                  "warnings": list(warnings)})


# ------------------------------------------------------------------ decoding
@dataclass(frozen=True, slots=True)
class Child:
    first: bytes
    entries: int
    ref: ChunkRef


@dataclass(slots=True)
class Node:
    """A decoded tree node: a leaf (``entries``) or an inner node (``children``)."""

    height: int
    entries: list[Entry]
    children: list[Child]
    # per entry of a leaf: the directory's tree, or the file's chunk lists
    trees: dict[bytes, ChunkRef]
    lists: dict[bytes, list[ChunkRef]]
    names: list[bytes] = field(default_factory=list)  # a leaf's, per entry


@dataclass(slots=True)
class RunRecord:
    root: Entry | None
    root_tree: ChunkRef | None
    snapshots: list[Snapshot]
    snapshot_lists: dict[str, list[ChunkRef]]
    warnings: list[Warning_]


def _object(plain: bytes, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(plain)
    except (ValueError, RecursionError) as err:
        raise ManifestError(f"{where}: not acceptable JSON: {str(err)[:100]}") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: not a JSON object")
    return obj


@dataclass(frozen=True)
class PackTable:
    """A run's pack table: by id (``packs[i].id == i``) and by key."""

    packs: list[PackRef]
    by_key: dict[str, PackRef]
    overhead: int = 0  # bytes a stored blob has beyond its encoding: 16 (the tag) if sealed

    @classmethod
    def of(cls, packs: list[PackRef], overhead: int = 0) -> "PackTable":
        return cls(packs, {p.key: p for p in packs}, overhead)


def _node_packs(obj: dict[str, Any], table: PackTable, where: str) -> list[PackRef]:
    raw = obj.get("packs")
    if not isinstance(raw, list) or len(raw) > 65536:
        raise ManifestError(f"{where}: 'packs' must be a list")
    packs = []
    for key in raw:
        if not isinstance(key, str) or key not in table.by_key:
            raise ManifestError(f"{where}: names pack {str(key)[:100]!r}, which the run "
                                "does not pin")
        packs.append(table.by_key[key])
    if len({p.key for p in packs}) != len(packs):
        raise ManifestError(f"{where}: a pack is listed twice")
    return packs


def _ref(raw: Any, packs: list[PackRef], where: str, meta: bool, overhead: int = 0
         ) -> ChunkRef:
    """One reference, its pack index mapped to the run's pack table."""
    if (not isinstance(raw, list) or len(raw) != 6 or not isinstance(raw[0], str)
            or not _HASH.fullmatch(raw[0]) or not all(_is_nat(v) for v in raw[1:5])
            or raw[5] not in ENCODINGS):
        raise ManifestError(f"{where}: malformed reference {str(raw)[:80]}")
    if raw[2] >= len(packs):
        raise ManifestError(f"{where}: reference to pack {raw[2]}, not in the node's packs")
    pack = packs[raw[2]]
    prefix = pack.key.split("/", 1)[0]
    if meta and prefix != pack2.META_PREFIX:
        raise ManifestError(f"{where}: a metadata reference into {pack.key}")
    if not meta and prefix == pack2.META_PREFIX:
        raise ManifestError(f"{where}: a data reference into the metadata pack {pack.key}")
    if raw[1] > MAX_CHUNK_SIZE or raw[4] > MAX_CHUNK_SIZE + overhead or raw[4] <= overhead \
            or (raw[5] == "raw" and raw[4] != raw[1] + overhead):
        raise ManifestError(f"{where}: reference sizes are inconsistent")
    layout2 = pack2.is_pack2_key(pack.key)
    start = pack2.PREAMBLE_FIXED if layout2 else 0
    end = pack.size - (pack2.FOOTER_SIZE if layout2 else 0)
    if raw[3] < start or raw[3] + raw[4] > end:
        raise ManifestError(f"{where}: reference lies outside the blobs of {pack.key}")
    return ChunkRef(raw[0], raw[1], pack.id, raw[3], raw[4], raw[5])


def _refs(raw: Any, packs: list[PackRef], where: str, meta: bool, limit: int,
          overhead: int = 0) -> list[ChunkRef]:
    if not isinstance(raw, list) or len(raw) > limit:
        raise ManifestError(f"{where}: a list of at most {limit} references expected")
    return [_ref(item, packs, where, meta, overhead) for item in raw]


def _name(obj: dict[str, Any], key: str, where: str, limits: ManifestLimits) -> bytes:
    if key in obj:
        text = obj[key]
        if not isinstance(text, str) or len(text) > limits.name_bytes:
            raise ManifestError(f"{where}: bad {key!r}")
        try:
            name = text.encode("utf-8")
        except UnicodeEncodeError:
            raise ManifestError(f"{where}: {key!r} is not valid UTF-8") from None
    elif f"{key}_b64" in obj:
        text = obj[f"{key}_b64"]
        if not isinstance(text, str) or len(text) > 4 * limits.name_bytes:
            raise ManifestError(f"{where}: bad {key}_b64")
        try:
            name = base64.b64decode(text, validate=True)
        except ValueError:
            raise ManifestError(f"{where}: {key}_b64 is not base64") from None
    else:
        raise ManifestError(f"{where}: an entry without {key!r}")
    if (not name or len(name) > limits.name_bytes or b"/" in name or b"\0" in name
            or name in (b".", b"..")):
        raise ManifestError(f"{where}: bad name {name[:100]!r}")
    return name


def _inner(obj: dict[str, Any], packs: list[PackRef], table: PackTable, where: str,
           limits: ManifestLimits) -> Node:
    height = obj.get("height")
    children_raw = obj.get("children")
    if not _is_nat(height) or not 1 <= height <= MAX_HEIGHT:
        raise ManifestError(f"{where}: bad height {str(height)[:20]}")
    if not isinstance(children_raw, list) or not 1 <= len(children_raw) <= LEAF_MAX:
        raise ManifestError(f"{where}: an inner node has 1 to {LEAF_MAX} children")
    children = []
    for item in children_raw:
        if not isinstance(item, dict):
            raise ManifestError(f"{where}: malformed child")
        first = _name(item, "first", where, limits)
        count = item.get("entries")
        if not _is_nat(count) or count == 0:
            raise ManifestError(f"{where}: bad entry count of a child")
        if children and first <= children[-1].first:
            raise ManifestError(f"{where}: children are not in strictly increasing order")
        children.append(Child(first, count, _ref(item.get("ref"), packs, where, True,
                                                 table.overhead)))
    return Node(height, [], children, {}, {})


def _leaf_name(item: object, number: int, last: bytes, longest: int, where: str,
               limits: ManifestLimits) -> tuple[bytes, str]:
    """A leaf's entry ``number``: its name (bytes, and as text), which must sort after
    ``last``, the name before it."""
    if type(item) is not dict:
        raise ManifestError(f"{where}: entry {number} is not an object")
    text = item.get("name")
    # the common name, checked at once (else, and for name_b64, by _name)
    if (type(text) is str and text.isascii() and 0 < len(text) <= longest
            and "/" not in text and "\0" not in text and text != "." and text != ".."):
        name = text.encode("ascii")
    else:
        name = _name(item, "name", where, limits)
        text = os.fsdecode(name)
    if name <= last:
        raise ManifestError(f"{where}: names are not in strictly increasing order "
                            f"({name[:100]!r})")
    return name, text


def decode_node(plain: bytes, parent: bytes, table: PackTable, where: str,
                limits: ManifestLimits = LIMITS) -> Node:
    """A tree node of directory ``parent``; every field checked, references mapped."""
    obj = _object(plain, where)
    packs = _node_packs(obj, table, where)
    kind = obj.get("node")
    if kind == "inner":
        return _inner(obj, packs, table, where, limits)
    if kind != "leaf":
        raise ManifestError(f"{where}: unknown node kind {str(kind)[:20]!r}")
    raw_entries = obj.get("entries")
    if not isinstance(raw_entries, list) or len(raw_entries) > LEAF_MAX:
        raise ManifestError(f"{where}: a leaf has at most {LEAF_MAX} entries")
    node = Node(0, [], [], {}, {})
    last = b""
    longest = limits.name_bytes
    slots = _slots(packs, table)
    parent_ok = check_path(parent, limits) is None
    for number, item in enumerate(raw_entries, 1):
        name, _ = _leaf_name(item, number, last, longest, where, limits)
        last = name
        entry, lists, tree = _leaf_entry(item, number, name, parent, packs, table, where, limits,
                                         slots, parent_ok)
        if lists is not None:
            node.lists[name] = lists
        if tree is not None:
            node.trees[name] = tree
        node.entries.append(entry)
        node.names.append(name)
    return node


def _leaf_entry(item: dict[str, Any], number: int, name: bytes, parent: bytes,
                packs: list[PackRef], table: PackTable, where: str, limits: ManifestLimits,
                slots: list[_Slot] | None = None, parent_ok: bool | None = None
                ) -> tuple[Entry, list[ChunkRef] | None, ChunkRef | None]:
    """One entry of a leaf, every field checked: (entry, its chunk lists, its tree).

    The common entry (see :func:`_plain_entry`) is decoded directly; any other,
    and every entry :func:`_plain_entry` does not accept, by :func:`_full_entry`,
    which accepts or refuses it with its reason.  ``slots`` and ``parent_ok``
    (``check_path(parent)`` is None), if given, are the node's."""
    path = parent + name if parent == b"/" else parent + b"/" + name
    if slots is None:
        slots = _slots(packs, table)
    if parent_ok is None:
        parent_ok = check_path(parent, limits) is None
    plain = _plain_entry(item, path, parent_ok, slots, table.overhead, limits)
    if plain is not None:
        return plain
    return _full_entry(item, number, name, parent, packs, table, where, limits)


# Per index of a node's ``packs`` list, what checking a reference into that pack
# needs: (the run's pack id, a metadata pack, first and end offset of its blobs,
# the size the run's pack table gives the id, or -1).
_Slot = tuple[int, bool, int, int, int]


def _slots(packs: list[PackRef], table: PackTable) -> list[_Slot]:
    slots = []
    for pack in packs:
        layout2 = pack2.is_pack2_key(pack.key)
        start = pack2.PREAMBLE_FIXED if layout2 else 0
        end = pack.size - (pack2.FOOTER_SIZE if layout2 else 0)
        listed = table.packs[pack.id].size if 0 <= pack.id < len(table.packs) else -1
        slots.append((pack.id, pack.key.split("/", 1)[0] == pack2.META_PREFIX, start, end,
                      listed))
    return slots


def _plain_ref(raw: Any, slots: list[_Slot], meta: bool, overhead: int) -> ChunkRef | None:
    """A reference :func:`_ref` accepts, mapped as it maps it (a data reference also
    as format 1's chunk checks accept it); None for anything else."""
    if type(raw) is not list or len(raw) != 6:
        return None
    hash_, size, index, offset, stored, encoding = raw
    if (type(hash_) is not str or type(size) is not int or type(index) is not int
            or type(offset) is not int or type(stored) is not int
            or not 0 <= index < len(slots) or not 0 <= size <= MAX_CHUNK_SIZE
            or not overhead < stored <= (MAX_CHUNK_SIZE + overhead if meta else MAX_CHUNK_SIZE)
            or (encoding != "zstd" and (encoding != "raw" or stored != size + overhead))
            or not _HASH.fullmatch(hash_)):
        return None
    pack_id, is_meta, start, end, listed = slots[index]
    if is_meta != meta or offset < start or offset + stored > end \
            or (not meta and offset + stored > listed):
        return None
    return ChunkRef(hash_, size, pack_id, offset, stored, encoding)


_MODES = {text: int(text, 8) for digits in (3, 4)
          for text in (f"{m:0{digits}o}" for m in range(8 ** digits))}
_PLAIN_KEYS = frozenset(("name", "kind", "mode", "uid", "gid", "user", "group", "mtime_ns",
                         "size", "target", "ino", "ctime_ns", "chunks", "tree"))
_ID_MAX = (1 << 32) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _plain_entry(item: dict[str, Any], path: bytes, parent_ok: bool, slots: list[_Slot],
                 overhead: int, limits: ManifestLimits
                 ) -> tuple[Entry, list[ChunkRef] | None, ChunkRef | None] | None:
    """The entry as :func:`_full_entry` decodes it, if it is a common one: a file
    with its chunks inline, a directory or a symlink whose target is text, with
    no ACLs, xattrs, extents or fields of other kinds; every field of the exact
    type and within the bounds :func:`_full_entry` checks.  None for every other
    entry (it may still be acceptable, or not: :func:`_full_entry` says which).
    ``tests/format/test_tree_codec.py`` checks the two agree.

    ``path`` is the parent's and a checked name (see :func:`_name`); ``parent_ok``
    says the parent passes :func:`check_path`.  Then so does ``path``, unless it
    is too long; and if the parent does not, no path below it does."""
    if not _PLAIN_KEYS.issuperset(item):
        return None
    kind = item.get("kind")
    mode = item.get("mode")
    uid = item.get("uid")
    gid = item.get("gid")
    mtime_ns = item.get("mtime_ns")
    user = item.get("user")
    group = item.get("group")
    size = item.get("size", 0)
    if (type(mode) is not str or type(uid) is not int or type(gid) is not int
            or type(mtime_ns) is not int or type(size) is not int
            or not 0 <= uid <= _ID_MAX or not 0 <= gid <= _ID_MAX
            or not _INT64_MIN <= mtime_ns <= _INT64_MAX or not 0 <= size <= _INT64_MAX
            or (user is not None and (type(user) is not str
                                      or len(user) > limits.owner_chars))
            or (group is not None and (type(group) is not str
                                       or len(group) > limits.owner_chars))
            or not parent_ok or len(path) > limits.path_bytes):
        return None
    mode_bits = _MODES.get(mode)
    if mode_bits is None:
        return None
    entry = Entry(path, kind, mode_bits, uid, gid, mtime_ns, user, group, size)
    if kind == "file":
        raw_chunks = item.get("chunks")
        if type(raw_chunks) is not list or len(raw_chunks) > INLINE_CHUNKS or "tree" in item \
                or "target" in item:
            return None
        chunks = entry.chunks
        data = 0
        for raw in raw_chunks:
            ref = _plain_ref(raw, slots, False, overhead)
            if ref is None:
                return None
            chunks.append(ref)
            data += ref.size
        if data != size:
            return None
        ino = item.get("ino")
        ctime_ns = item.get("ctime_ns")
        if ino is not None:
            if type(ino) is not int or not 0 <= ino <= _INT64_MAX:
                return None
            entry.ino = ino
        if ctime_ns is not None:
            if type(ctime_ns) is not int or not _INT64_MIN <= ctime_ns <= _INT64_MAX:
                return None
            entry.ctime_ns = ctime_ns
        return entry, None, None
    if "chunks" in item or "ino" in item or "ctime_ns" in item:
        return None
    if kind == "dir":
        if "target" in item:
            return None
        tree = _plain_ref(item.get("tree"), slots, True, overhead)
        if tree is None:
            return None
        return entry, None, tree
    if kind == "symlink":
        text = item.get("target")
        if type(text) is not str or not text or "\0" in text or "tree" in item:
            return None
        try:
            target = text.encode("utf-8")
        except UnicodeEncodeError:
            return None
        if len(target) > limits.target_bytes:
            return None
        entry.target = target
        return entry, None, None
    return None


def _full_entry(item: dict[str, Any], number: int, name: bytes, parent: bytes,
                packs: list[PackRef], table: PackTable, where: str, limits: ManifestLimits
                ) -> tuple[Entry, list[ChunkRef] | None, ChunkRef | None]:
    """One entry of a leaf, every field checked as a format-1 line is (any entry)."""
    path = parent + name if parent == b"/" else parent + b"/" + name
    line_obj = {k: v for k, v in item.items()
                if k not in ("name", "name_b64", "tree", "chunks", "chunk_lists",
                             "path", "path_b64")}
    line_obj["path_b64"] = base64.b64encode(path).decode("ascii")
    entry_kind = item.get("kind")
    lists = None
    if entry_kind == "file":
        if ("chunks" in item) == ("chunk_lists" in item):
            raise ManifestError(f"{where}: file {name[:100]!r} needs exactly one of "
                                "chunks and chunk_lists")
        if "chunks" in item:
            line_obj["chunks"] = [_ref(r, packs, where, False, table.overhead) for r in
                                  _bounded(item["chunks"], INLINE_CHUNKS, where)]
        else:
            lists = _refs(item["chunk_lists"], packs, where, True, MAX_LISTS,
                          table.overhead)
            if not lists:
                raise ManifestError(f"{where}: empty chunk_lists")
            line_obj["chunks"] = []
    if "chunks" in line_obj:
        line_obj["chunks"] = [[c.hash, c.size, c.pack, c.offset, c.stored, c.encoding]
                              for c in line_obj["chunks"]]
    entry = decode_entry(_Line(line_obj, number, where, limits), table.packs,
                         with_chunks=lists is None, overhead=table.overhead)
    tree = None
    if entry_kind == "dir":
        tree = _ref(item.get("tree"), packs, where, True, table.overhead)
    elif "tree" in item:
        raise ManifestError(f"{where}: {name[:100]!r} is a {entry_kind}, not a directory, "
                            "but has a tree")
    return entry, lists, tree


@dataclass(slots=True)
class Listing:
    """A tree node read for a search: a leaf's names, kinds and directory trees
    (an entry's other fields are checked when :func:`listed_entry` decodes it),
    or an inner node's children."""

    height: int
    names: list[bytes]
    texts: list[str]  # the names as text (os.fsdecode), as patterns match them
    kinds: list[str]
    trees: list[ChunkRef | None]  # per entry: a directory's tree, else None
    children: list[Child]
    items: list[dict[str, Any]]  # per entry: its object, as the node holds it
    packs: list[PackRef]  # the node's ``packs`` list, mapped to the run's table
    slots: list[_Slot] | None = None  # what checking a reference into each needs


def decode_listing(plain: bytes, table: PackTable, where: str,
                   limits: ManifestLimits = LIMITS) -> Listing:
    """A tree node as :func:`decode_node` checks it, but of a leaf's entries only
    what a walk follows: each name (checked, in strictly increasing order),
    kind (one of the entry kinds) and directory tree (checked and mapped; no
    other kind may have one).  The rest of an entry is decoded, and checked, by
    :func:`listed_entry` when it is needed."""
    obj = _object(plain, where)
    packs = _node_packs(obj, table, where)
    kind = obj.get("node")
    if kind == "inner":
        inner = _inner(obj, packs, table, where, limits)
        return Listing(inner.height, [], [], [], [], inner.children, [], packs)
    if kind != "leaf":
        raise ManifestError(f"{where}: unknown node kind {str(kind)[:20]!r}")
    raw_entries = obj.get("entries")
    if not isinstance(raw_entries, list) or len(raw_entries) > LEAF_MAX:
        raise ManifestError(f"{where}: a leaf has at most {LEAF_MAX} entries")
    names: list[bytes] = []
    texts: list[str] = []
    kinds: list[str] = []
    trees: list[ChunkRef | None] = []
    last = b""
    longest = limits.name_bytes
    for number, item in enumerate(raw_entries, 1):
        name, text = _leaf_name(item, number, last, longest, where, limits)
        last = name
        entry_kind = item.get("kind")
        if entry_kind not in KINDS:
            raise ManifestError(f"{where}: line {number}: unknown kind "
                                f"{str(entry_kind)[:20]!r}")
        if entry_kind == "dir":
            trees.append(_ref(item.get("tree"), packs, where, True, table.overhead))
        elif "tree" in item:
            raise ManifestError(f"{where}: {name[:100]!r} is a {entry_kind}, not a directory, "
                                "but has a tree")
        else:
            trees.append(None)
        names.append(name)
        texts.append(text)
        kinds.append(entry_kind)
    return Listing(0, names, texts, kinds, trees, [], raw_entries, packs, _slots(packs, table))


def listed_entry(listing: Listing, index: int, parent: bytes, table: PackTable, where: str,
                 limits: ManifestLimits = LIMITS) -> tuple[Entry, list[ChunkRef] | None]:
    """Entry ``index`` of a listed leaf of directory ``parent``, every field checked
    as :func:`decode_node` checks it: (entry, its chunk lists or None)."""
    entry, lists, _ = _leaf_entry(listing.items[index], index + 1, listing.names[index],
                                  parent, listing.packs, table, where, limits, listing.slots)
    return entry, lists


def _bounded(raw: Any, limit: int, where: str) -> list[Any]:
    if not isinstance(raw, list) or len(raw) > limit:
        raise ManifestError(f"{where}: a list of at most {limit} references expected")
    return raw


def decode_chunk_list(plain: bytes, table: PackTable, where: str) -> list[ChunkRef]:
    obj = _object(plain, where)
    packs = _node_packs(obj, table, where)
    return _refs(obj.get("chunks"), packs, where, False, LIST_MAX, table.overhead)


def decode_record(plain: bytes, table: PackTable, where: str,
                  limits: ManifestLimits = LIMITS) -> RunRecord:
    obj = _object(plain, where)
    packs = _node_packs(obj, table, where)
    root = root_tree = None
    raw_root = obj.get("root")
    if raw_root is not None:
        if not isinstance(raw_root, dict) or raw_root.get("name") != "/" \
                or raw_root.get("kind") != "dir":
            raise ManifestError(f"{where}: the root entry must be the directory '/'")
        root_tree = _ref(raw_root.get("tree"), packs, where, True, table.overhead)
        line_obj = {k: v for k, v in raw_root.items() if k not in ("name", "tree")}
        line_obj["path"] = "/"
        root = decode_entry(_Line(line_obj, 0, where, limits), [])
    raw_snaps = obj.get("snapshots")
    if not isinstance(raw_snaps, list) or len(raw_snaps) > limits.snapshots:
        raise ManifestError(f"{where}: at most {limits.snapshots} snapshots")
    snapshots: list[Snapshot] = []
    snapshot_lists: dict[str, list[ChunkRef]] = {}
    for number, item in enumerate(raw_snaps, 1):
        if not isinstance(item, dict):
            raise ManifestError(f"{where}: snapshot {number} is not an object")
        item = dict(item)
        lists = None
        if "chunk_lists" in item:
            lists = _refs(item.pop("chunk_lists"), packs, where, True, MAX_LISTS,
                          table.overhead)
            item["chunks"] = []
            item["size"], size = 0, item.get("size")
        else:
            item["chunks"] = [[c.hash, c.size, c.pack, c.offset, c.stored, c.encoding] for c in
                              (_ref(r, packs, where, False, table.overhead)
                               for r in _bounded(item.get("chunks"), INLINE_CHUNKS, where))]
        snap = decode_snapshot(_Line(item, number, where, limits), table.packs,
                               table.overhead)
        if lists is not None:
            if not _is_nat(size):
                raise ManifestError(f"{where}: snapshot {snap.name!r}: bad size")
            snap.size = size
            snapshot_lists[snap.name] = lists
        if snapshots and snap.name <= snapshots[-1].name:
            raise ManifestError(f"{where}: duplicate or unsorted snapshot {snap.name!r}")
        snapshots.append(snap)
    raw_warnings = obj.get("warnings")
    if not isinstance(raw_warnings, list) or len(raw_warnings) > 10_001:
        raise ManifestError(f"{where}: at most 10,000 warnings")
    trailer = decode_trailer(_Line({"finished": "1970-01-01T00:00:00Z",
                                    "warnings": raw_warnings}, 0, where, limits))
    return RunRecord(root, root_tree, snapshots, snapshot_lists, trailer.warnings)

