"""The tree builder encodes each entry once, and its nodes are byte for byte the
codec's (format/tree_codec.py ``encode_leaf``, as the builder wrote them before:
``entry_object``, sized by its line, cut, then encoded whole)."""

from __future__ import annotations

import hashlib
import io
import random
from typing import Any

import pytest

from s3archive.archive import tree_builder
from s3archive.archive.packer import ChunkLocation
from s3archive.format import manifest_codec
from s3archive.format import tree_codec as tc


class _Meta:
    """The metadata writer, reduced to what the builder asks of it: every blob kept."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []

    def add_blob(self, plain: bytes, kind: bytes) -> ChunkLocation:
        self.blobs.append(plain)
        return ChunkLocation(hashlib.sha256(plain).hexdigest(), "meta/m1", 0, len(plain),
                             len(plain), "zstd")


def _ref(rng: random.Random, pack: str) -> tc.BlobRef:
    return tc.BlobRef(rng.randbytes(32).hex(), rng.randrange(1, 1 << 22), pack,
                      rng.randrange(1 << 30), rng.randrange(1, 1 << 22),
                      rng.choice(["zstd", "raw"]))


NAMES = [b"plain.txt", "caf\u00e9 \u2603.txt".encode(), b"caf\xe9-latin1", b'quo"te\\back',
         b"tab\there", b"\x01control", "\U0001f600".encode()]


def _entries(seed: int, count: int) -> list[tuple[bytes, dict[str, Any], list[tc.BlobRef] | None,
                                                 list[tc.BlobRef] | None, tc.BlobRef | None]]:
    """Entries of one directory, in name order, as the builder gets them (spool objects)."""
    rng = random.Random(seed)
    names = sorted({rng.choice(NAMES) + b"-%05d" % i for i in range(count)})
    packs = [f"data/{rng.randbytes(16).hex()}" for _ in range(5)]
    out = []
    for name in names:
        kind = rng.choice(["file", "file", "dir", "symlink"])
        obj: dict[str, Any] = {"type": "entry", "path": "/x/" + name.decode("utf-8", "replace"),
                               "kind": kind, "mode": "0644", "uid": 0, "gid": rng.randrange(3),
                               "mtime_ns": rng.randrange(1 << 62), "ino": rng.randrange(1 << 40),
                               "ctime_ns": rng.randrange(1 << 62)}
        if rng.random() < 0.3:
            obj["xattrs"] = {"user.k": rng.randbytes(rng.randrange(200)).hex()}
        if rng.random() < 0.1:  # keys a reader does not know, one of them a reference's
            obj[rng.choice(["tree", "chunk_lists", "zz-future"])] = [rng.randrange(9)]
        chunks = lists = tree = None
        if kind == "dir":
            tree = _ref(rng, "meta/" + packs[0][5:])
        elif kind == "file":
            obj["size"] = rng.randrange(1 << 40)
            refs = [_ref(rng, rng.choice(packs)) for _ in range(rng.choice([0, 1, 3, 40]))]
            if rng.random() < 0.2:
                lists = refs
            else:
                chunks = refs
        else:
            obj["target"] = "somewhere/" + name.decode("utf-8", "replace")
        out.append((name, obj, chunks, lists, tree))
    return out


def _main_nodes(entries: list[Any]) -> list[bytes]:
    """The nodes main's builder wrote for these entries: each entry object sized by its
    spooled line, cut, and its leaf encoded whole by ``tc.encode_leaf``."""
    nodes: list[bytes] = []
    leaves: list[tuple[bytes, int, tc.BlobRef]] = []
    leaf: list[Any] = []
    used, last, first = 0, b"", b""

    def store(plain: bytes) -> tc.BlobRef:
        nodes.append(plain)
        return tc.BlobRef(hashlib.sha256(plain).hexdigest(), len(plain), "meta/m1", 0,
                          len(plain), "zstd")

    def flush() -> None:
        nonlocal leaf, used
        leaves.append((first, len(leaf), store(tc.encode_leaf(leaf))))
        leaf, used = [], 0

    for name, obj, chunks, lists, tree in entries:
        if leaf and (len(leaf) >= tc.LEAF_MAX or tc.cut_after(last, len(leaf))):
            flush()
        node_obj = tc.entry_object(obj, name)
        size = (len(manifest_codec.dumps(node_obj)) + 80 * len(chunks or lists or ())
                + (80 if tree is not None else 0))
        if leaf and used + size > tc.NODE_TARGET_BYTES:
            flush()
        if not leaf:
            first = name
        leaf.append((node_obj, chunks, lists, tree))
        used += size
        last = name
    if not leaves:
        store(tc.encode_leaf(leaf))
        return nodes
    if leaf:
        flush()
    level, height = leaves, 0
    while len(level) > 1:
        height += 1
        upper, group = [], []
        for child in level:
            group.append(child)
            if len(group) >= tc.LEAF_MAX or tc.cut_after(child[0], len(group)):
                upper.append((group[0][0], sum(c for _, c, _ in group),
                              store(tc.encode_inner(height, group))))
                group = []
        if group:
            upper.append((group[0][0], sum(c for _, c, _ in group),
                          store(tc.encode_inner(height, group))))
        level = upper
    return nodes


def _built_nodes(entries: list[Any]) -> list[bytes]:
    meta = _Meta()
    builder = tree_builder.TreeBuilder(meta, locate=None)  # type: ignore[arg-type]
    encoding = tree_builder._Encoding(b"/x")
    for name, obj, chunks, lists, tree in entries:
        builder._append(encoding, name, obj, chunks, lists, tree)
    directory = tree_builder._Dir(b"/x", hashlib.sha256())
    builder._close_encoding(directory, encoding)
    return meta.blobs


@pytest.mark.parametrize("seed,count", [(1, 0), (2, 1), (3, 70), (4, 600)])
def test_nodes_are_the_codecs_bytes(seed: int, count: int) -> None:
    entries = _entries(seed, count)
    assert _built_nodes(entries) == _main_nodes(entries)


def test_nodes_cut_by_size_are_the_codecs_bytes(monkeypatch) -> None:
    """Leaves cut where their entries' lines pass the node target (small ones here, so
    that one byte more or less an entry would move some cut)."""
    entries = _entries(5, 300)
    for target in range(1500, 4000, 50):
        monkeypatch.setattr(tc, "NODE_TARGET_BYTES", target)
        nodes = _built_nodes(entries)
        assert nodes == _main_nodes(entries), target
        assert len(nodes) > 8  # many leaves, and inner nodes over them


def test_a_reference_key_of_an_unknown_entry_field_is_replaced_in_place() -> None:
    rng = random.Random(6)
    tree = _ref(rng, "meta/p")
    obj = {"type": "entry", "path": "/x/d", "kind": "dir", "mode": "0755", "uid": 0,
           "gid": 0, "mtime_ns": 1, "tree": "planted", "zz": 1}
    entries = [(b"d", obj, None, None, tree)]
    assert _built_nodes(entries) == _main_nodes(entries)


def _spooled(seed: int, count: int) -> tuple[list[bytes], dict[str, tc.BlobRef], list[Any]]:
    """A directory's spooled lines as the walk, a content worker and the file cache
    write them (manifest_codec's key order, or join_line's), the references its files'
    chunk ids locate to, and the same entries as the builder took them decoded."""
    from s3archive.archive.file_stage import spool_file_line
    from s3archive.archive.local_cache import FileKey, join_line, split_line
    from s3archive.format.model import Entry

    rng = random.Random(seed)
    names = sorted({rng.choice(NAMES) + b"-%05d" % i for i in range(count)})
    packs = [f"data/{rng.randbytes(16).hex()}" for _ in range(3)]
    located: dict[str, tc.BlobRef] = {}
    lines, entries = [], []
    for name in names:
        kind = rng.choice(["file", "file", "dir", "symlink", "chardev"])
        entry = Entry(b"/x/" + name, kind, rng.choice([0o644, 0o4755]), rng.randrange(70000),
                      rng.randrange(3), rng.randrange(-(1 << 40), 1 << 62),
                      user=rng.choice([None, "root", "j\u00f6rg", 'we"ird']),
                      group=rng.choice([None, "staff", "caf\u00e9"]))
        if rng.random() < 0.2:
            entry.xattrs = {"user.k": rng.randbytes(rng.randrange(1, 50))}
        if rng.random() < 0.1:
            entry.acl_access = "user::rw-,group::r--,other::r--"
        chunks = lists = tree = None
        if kind == "dir":
            tree = _ref(rng, "meta/" + packs[0][5:])
        elif kind == "symlink":
            entry.target = rng.choice([b"../t", "t\u00e9".encode(), b"b\\s", b"\xff"])
        elif kind == "chardev":
            entry.rdev = (rng.randrange(9), rng.randrange(9))
        else:
            entry.size, entry.ino, entry.ctime_ns = (rng.randrange(1 << 40),
                                                     rng.randrange(1 << 40),
                                                     rng.randrange(1 << 62))
            if rng.random() < 0.1:
                entry.extents = [(0, 10)]
            chunks = [_ref(rng, rng.choice(packs)) for _ in range(rng.choice([0, 1, 3]))]
        line = manifest_codec.dumps(manifest_codec.encode_entry(entry, with_chunks=False))[:-1]
        if kind == "file" and rng.random() < 0.5:  # a file-cache hit's line
            key = FileKey(1, entry.ino, entry.size, entry.mtime_ns, entry.ctime_ns)
            line = join_line(entry.path, key, split_line(entry.path, key, line))
        if chunks is not None:
            located.update((ref.id, ref) for ref in chunks)
            lines.append(spool_file_line(line, [(ref.id, ref.size) for ref in chunks]))
        else:
            lines.append(line + b"\n")
        entries.append((name, manifest_codec.json.loads(line), chunks, lists, tree))
    return lines, located, entries


@pytest.mark.parametrize("seed,count", [(7, 1), (8, 80), (9, 700)])
def test_nodes_of_spooled_lines_read_undecoded_are_the_codecs_bytes(seed: int,
                                                                    count: int) -> None:
    """The usual line's node object is cut out of its bytes (tree_builder._USUAL_LINE);
    every other line is decoded: both give the codec's bytes."""
    lines, located, entries = _spooled(seed, count)
    usual = sum(1 for line in lines
                if tree_builder._USUAL_LINE.fullmatch(line.rstrip(b"\n").partition(b"\t")[0]))
    assert 0 < usual < len(lines) or count < 10  # both ways are taken

    def locate(chunk: Any) -> ChunkLocation:
        ref = located[chunk.hash]
        assert chunk.size == ref.size
        return ChunkLocation(ref.id, ref.pack, ref.offset, ref.stored, ref.size, ref.encoding)

    meta = _Meta()
    builder = tree_builder.TreeBuilder(meta, locate=locate)  # type: ignore[arg-type]
    directory = tree_builder._Dir(b"/x", hashlib.sha256())
    encoding = tree_builder._Encoding(b"/x")
    for index, (_, _, _, _, tree) in enumerate(entries):
        directory.add(0, b"")
        if tree is not None:
            directory.set_tree(tree)
    builder._encode_block(directory, encoding, list(enumerate(lines)))
    builder._close_encoding(directory, encoding)
    assert meta.blobs == _main_nodes(entries)


def _tree_spool(seed: int) -> tuple[bytes, dict[str, ChunkLocation]]:
    """A run's spool (walk order) of nested directories, one of them not recorded
    (an ancestor the builder makes up), files of 0, 1 and many chunks, and where
    their chunks are."""
    from s3archive.archive.file_stage import spool_file_line
    from s3archive.format.model import Entry

    rng = random.Random(seed)
    located: dict[str, ChunkLocation] = {}
    out = [manifest_codec.dumps(manifest_codec.encode_entry(
        Entry(b"/", "dir", 0o755, 0, 0, 1), with_chunks=False))]

    def walk(path: bytes, depth: int) -> None:
        count = 30 if depth == 0 else rng.randrange(0, 40)
        names = sorted({rng.choice(NAMES) + b"-%03d" % i for i in range(count)})
        for name in names:
            child = path.rstrip(b"/") + b"/" + name
            is_dir = depth < 3 and rng.random() < 0.2
            entry = Entry(child, "dir" if is_dir else "file", 0o644, rng.randrange(9), 0,
                          rng.randrange(1 << 50))
            if is_dir:
                if rng.random() > 0.1:  # (else: not recorded, its entries are)
                    out.append(manifest_codec.dumps(
                        manifest_codec.encode_entry(entry, with_chunks=False)))
                walk(child, depth + 1)
                continue
            entry.size = rng.randrange(1 << 30)
            line = manifest_codec.dumps(manifest_codec.encode_entry(entry, with_chunks=False))
            chunks = []
            for _ in range(rng.choice([0, 1, 1, 1, 2, 9])):
                location = ChunkLocation(rng.randbytes(32).hex(), f"data/{rng.randrange(3)}",
                                         rng.randrange(1 << 30), rng.randrange(1, 1 << 20),
                                         rng.randrange(1, 1 << 20), "zstd")
                located[location.hash] = location
                chunks.append((location.hash, location.size))
            out.append(spool_file_line(line[:-1], chunks))

    walk(b"/", 0)
    return b"".join(out), located


def _builder(located: dict[str, ChunkLocation]) -> tuple[_Meta, tree_builder.TreeBuilder]:
    """A builder whose chunks are in ``located``, and the metadata writer it stores to."""
    meta = _Meta()
    return meta, tree_builder.TreeBuilder(
        meta, locate=lambda chunk: located[chunk.hash])  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [3, 4])
def test_trees_built_while_spooling_are_the_trees_built_at_once(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Lines taken as they are spooled, in reads of any size, give the same blobs in
    the same order as one build over the whole spool (archiver._EarlyTrees)."""
    monkeypatch.setattr(tree_builder, "FEED_BYTES", 97)  # lines longer than a read too
    monkeypatch.setattr(tree_builder, "READ_BYTES", 97)
    spooled, located = _tree_spool(seed)
    ends = [at + 1 for at, byte in enumerate(spooled) if byte == 10]
    assert len(ends) > 200
    with open(tmp_path / "spool", "w+b") as spool:
        spool.write(spooled)
        meta, at_once = _builder(located)
        expected = at_once.build(spool)
        assert at_once.dirs_encoded > 20
        rng = random.Random(seed)
        spool.seek(0)
        spool.truncate()
        fed, builder = _builder(located)
        builder.start(spool)
        written = 0
        for end in sorted(rng.sample(ends, 60)) + [ends[-1]]:
            spool.write(spooled[written:end])
            spool.flush()
            written = end
            builder.feed(end)
        encoded_early = builder.dirs_encoded
        assert builder.finish() == expected
        assert fed.blobs == meta.blobs
        assert builder.entries == at_once.entries == len(ends)
        assert encoded_early > 10


def _plain_spool() -> tuple[bytes, dict[str, ChunkLocation]]:
    """A spool whose names need no escaping: a directory not recorded whose first
    entry is a file, a file whose name extends a directory's, a symlink."""
    from s3archive.archive.file_stage import spool_file_line
    from s3archive.format.model import Entry

    located: dict[str, ChunkLocation] = {}
    out = []
    for number, (path, kind) in enumerate([
            (b"/", "dir"), (b"/a", "dir"), (b"/a/f", "file"), (b"/a/u/g", "file"),
            (b"/a/u/h", "symlink"), (b"/a/z", "file"), (b"/b", "dir"), (b"/b/x", "file"),
            (b"/b-c", "file"), (b"/c/d/e", "file"), (b"/c/d/f", "file")]):
        entry = Entry(path, kind, 0o644, 0, 0, number)
        if kind == "symlink":
            entry.target = b"g"
        line = manifest_codec.dumps(manifest_codec.encode_entry(entry, with_chunks=False))
        if kind != "file":
            out.append(line)
            continue
        location = ChunkLocation(hashlib.sha256(path).hexdigest(), "data/0", number, 10, 20,
                                 "zstd")
        located[location.hash] = location
        out.append(spool_file_line(line[:-1], [(location.hash, location.size)]))
    return b"".join(out), located


@pytest.mark.parametrize("seed", [None, 5, 6])
def test_lines_taken_inline_are_taken_as_take_takes_them(tmp_path: Any,
                                                         seed: int | None) -> None:
    """``feed`` takes most lines itself (an entry of the directory taken last, its
    path unescaped): the same directories, digests and blobs as ``_take`` of every
    line, over spools of nested directories, escaped and non-UTF-8 names, and
    directories not recorded."""
    spooled, located = _plain_spool() if seed is None else _tree_spool(seed)
    with open(tmp_path / "spool", "w+b") as spool:
        spool.write(spooled)
        meta, fed = _builder(located)
        expected = fed.build(spool)
        one_by_one, taken = _builder(located)
        spool.seek(0)
        taken.start(spool)
        start = 0
        for raw in io.BytesIO(spooled):
            taken._take(start, raw)
            start += len(raw)
        taken._taken = start
        assert taken.finish() == expected
        assert one_by_one.blobs == meta.blobs
        assert taken.entries == fed.entries == spooled.count(b"\n")
        assert taken.dirs_encoded == fed.dirs_encoded > (5 if seed is None else 20)
