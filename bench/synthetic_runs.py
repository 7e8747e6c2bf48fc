"""A daily series of format-2 runs of a large synthetic host, built without
archiving (bench/bench_find.py; archiving a 1M-file tree 30 times would take
hours here, and even the archiver's ``TreeBuilder`` costs ~20 us an entry):
nodes are encoded by format/tree_codec.py, cut by the format's rules, only
for the directories a run changed, stored by the archiver's metadata
``ChunkWriter`` into any store, and each run committed as a root object.

The host (``Shape``): ``/bench`` holds two large directories (``mail``, 2 %
of the files each, growing by 0.1 % per run; ``cache``), and ``t*/m*/d*``
leaf directories of 1 to 47 files (24 on average, as on a real system);
every 500th file is a ``.conf``.  Each run after the first rewrites ~1 % of
the files the way a day does: whole leaf directories (a package upgrade, a
project's build) drawn at random, new mail, and ``/bench/cache/hot.txt``.

Only metadata is stored: files reference chunks in data packs that the
run's pack table pins but that are never uploaded (find, history and diff
read no data; restore or verify of these runs would fail).
"""

from __future__ import annotations

import hashlib
import random
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from s3archive.archive.chunk_writer import ChunkWriter, NewPack
from s3archive.archive.packer import ChunkLocation
from s3archive.format import pack2
from s3archive.format import tree_codec as tc
from s3archive.format.chunk_codec import ChunkCodec
from s3archive.format.model import ChunkRef, Header, PackRef, Trailer, run_key
from s3archive.format.run_root import RunRoot, encode_root
from s3archive.store.base import StoreWriter

PER_DIR = 24  # files of a leaf directory, on average
LEAVES_PER_MID = 25
MIDS_PER_TOP = 40
BIG = 0.02  # mail/ and cache/: this share of the files each
CONF_EVERY = 500
DATA_PACKS = 64
DATA_PACK_SIZE = 1 << 30
START = datetime(2026, 10, 1, 3, 0, tzinfo=UTC)
START_S = int(START.timestamp())


@dataclass
class Shape:
    """The host's files, deterministic in ``files`` and ``seed``."""

    files: int
    seed: int = 1
    sizes: list[int] = field(default_factory=list)  # files per leaf directory
    first: list[int] = field(default_factory=list)  # number of each one's first file
    big: int = 0

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.big = int(self.files * BIG)
        left = self.files - 2 * self.big
        number = 2 * self.big
        while left > 0:
            size = min(left, rng.randint(1, 2 * PER_DIR - 1))
            self.sizes.append(size)
            self.first.append(number)
            number += size
            left -= size

    def leaf_path(self, leaf: int) -> str:
        mid, d = divmod(leaf, LEAVES_PER_MID)
        top, m = divmod(mid, MIDS_PER_TOP)
        return f"/bench/t{top:03d}/m{m:03d}/d{d:03d}"

    def file_name(self, number: int) -> str:
        return f"f{number:07d}.{'conf' if number % CONF_EVERY == 0 else 'txt'}"

    def middle(self) -> tuple[str, str]:
        """A file in the middle of the tree, unchanged by most runs: (name, path)."""
        leaf = len(self.sizes) // 2
        name = self.file_name(self.first[leaf])
        return name, f"{self.leaf_path(leaf)}/{name}"


@dataclass
class Series:
    """Which version each leaf directory and the mail directory are at."""

    shape: Shape
    run: int = 0
    versions: dict[int, int] = field(default_factory=dict)  # leaf -> run that last changed it
    mail: int = 0  # files in mail/

    def __post_init__(self) -> None:
        self.mail = self.shape.big

    def advance(self) -> int:
        """The next run's changes (~1 % of the files); returns the files changed."""
        self.run += 1
        rng = random.Random(self.shape.seed * 1000 + self.run)
        target = max(1, self.shape.files // 100)
        changed = 0
        new_mail = max(1, self.shape.files // 1000)
        self.mail += new_mail
        changed += new_mail + 1
        while changed < target:
            leaf = rng.randrange(len(self.shape.sizes))
            self.versions[leaf] = self.run
            changed += self.shape.sizes[leaf]
        return changed

    def leaf_entries(self, leaf: int) -> list[tuple[dict[str, Any], list[tc.BlobRef] | None]]:
        shape = self.shape
        version = self.versions.get(leaf, 0)
        return [_file(shape.file_name(n), n, version)
                for n in range(shape.first[leaf], shape.first[leaf] + shape.sizes[leaf])]


def _dir(name: str, version: int) -> dict[str, Any]:
    return {"name": name, "kind": "dir", "mode": "0755", "uid": 0, "gid": 0, "user": "root",
            "group": "root", "mtime_ns": _mtime(version)}


def _file(name: str, number: int, version: int
          ) -> tuple[dict[str, Any], list[tc.BlobRef] | None]:
    size = 100 + (number * 7919 + version * 104729) % 20000
    digest = hashlib.sha256(b"%d:%d" % (number, version)).hexdigest()
    mtime = _mtime(version) + number
    slot = int(digest[:12], 16)
    chunk = tc.BlobRef(digest, size, DATA_PACKS_KEYS[slot % DATA_PACKS],
                       pack2.PREAMBLE_FIXED + slot % (DATA_PACK_SIZE // 2), size, "raw")
    return ({"name": name, "kind": "file", "mode": "0644", "uid": 1000, "gid": 1000,
             "user": "user", "group": "user", "mtime_ns": mtime, "size": size,
             "ino": number + 2, "ctime_ns": mtime}, [chunk])


def _mtime(version: int) -> int:
    return (START_S + version * 86400) * 10**9


def _data_pack(number: int) -> str:
    return pack2.pack_key(pack2.DATA_PREFIX, hashlib.sha256(b"data %d" % number).digest()[:16])


DATA_PACKS_KEYS = [_data_pack(n) for n in range(DATA_PACKS)]
Item = tuple[dict[str, Any], list[tc.BlobRef] | None, None, tc.BlobRef | None]


class RunWriter:
    """Commits the runs of one host.  Nodes are encoded with format/tree_codec.py
    and cut by the rules of docs/FORMAT.md 6.3 and 6.4 (as archive/tree_builder.py
    does); a leaf directory's node is encoded once per version and shared by
    the runs holding that version, as the archiver's local cache shares it."""

    def __init__(self, store: StoreWriter, host: str, pack_size: int = 8 << 20):
        self.store = store
        self.host = host
        self.pack_size = pack_size
        self.codec = ChunkCodec()
        self.packs: dict[str, NewPack] = {}
        self.leaves: dict[tuple[int, int], tuple[tc.BlobRef, frozenset[str]]] = {}
        self.known: dict[str, ChunkLocation] = {}  # metadata blobs stored by earlier runs
        self.meta: ChunkWriter | None = None
        self.used: set[str] = set()  # the metadata packs this run's nodes are in

    def commit(self, series: Series) -> tuple[str, int]:
        """Run ``series.run``: builds and stores it; returns (run id, new nodes)."""
        self.meta = meta = ChunkWriter(self.store, self.known.get, self.known.__contains__,
                                       lambda pack, chunks: None, self.codec, self.pack_size,
                                       None, prefix=pack2.META_PREFIX)
        self.used = set()
        try:
            entries, root_tree = self._tree(series)
            root = _dir("/", 0)
            record = self._blob(tc.encode_record(root, root_tree, [], []), pack2.KIND_RECORD)
            meta.drain()
            self.known.update(meta.locations.items())
        finally:
            meta.close()
        self.packs.update(meta.new_packs)
        table = []
        for number, key in enumerate(sorted(self.used | set(DATA_PACKS_KEYS))):
            if key.startswith(pack2.META_PREFIX + "/"):
                table.append(PackRef(number, key, self.packs[key].version_id,
                                     self.packs[key].size))
            else:
                table.append(PackRef(number, key, "never-stored", DATA_PACK_SIZE))
        ids = {ref.key: ref.id for ref in table}
        started = START + timedelta(days=series.run)
        run_id = started.strftime("%Y%m%dT%H%M%SZ")
        header = Header(host=self.host, run_id=run_id, started=started, lock_mode=None,
                        retain_until=started + timedelta(days=90), tier="STANDARD",
                        tool="s3archive bench/synthetic_runs.py", format=2)
        root_ref = RunRoot(header, table,
                           ChunkRef(record.id, record.size, ids[record.pack], record.offset,
                                    record.stored, record.encoding),
                           entries, Trailer(finished=started + timedelta(minutes=5)))
        with tempfile.TemporaryFile(prefix="s3archive-bench-root-") as out:
            encode_root(root_ref, out)
            out.seek(0)
            self.store.put(run_key(self.host, run_id), out.read(), None)
        return run_id, meta.stats.chunks_new

    def _tree(self, series: Series) -> tuple[int, tc.BlobRef]:
        """The run's nodes; returns (entries, the root's tree)."""
        shape, run = series.shape, series.run
        entries = 1
        cache = [_file(shape.file_name(n), n, 0) for n in range(shape.big)]
        cache.append(_file("hot.txt", 1 << 30, run))
        mail = [_file(shape.file_name(shape.big + n), shape.big + n, 0)
                for n in range(series.mail)]
        bench: list[Item] = [(_dir("cache", run), None, None, self._directory(cache)),
                             (_dir("mail", run), None, None, self._directory(mail))]
        entries += 3 + len(cache) + len(mail)
        tops: list[Item] = []
        mids: list[Item] = []
        leaves_per_top = LEAVES_PER_MID * MIDS_PER_TOP
        for top in range(-(-len(shape.sizes) // leaves_per_top)):
            for m in range(MIDS_PER_TOP):
                first = top * leaves_per_top + m * LEAVES_PER_MID
                if first >= len(shape.sizes):
                    break
                leaves: list[Item] = []
                for leaf in range(first, min(first + LEAVES_PER_MID, len(shape.sizes))):
                    version = series.versions.get(leaf, 0)
                    known = self.leaves.get((leaf, version))
                    if known is None:
                        ref = self._directory(series.leaf_entries(leaf))
                        known = self.leaves[(leaf, version)] = (ref, frozenset([ref.pack]))
                    else:
                        self.used |= known[1]
                    leaves.append((_dir(f"d{leaf % LEAVES_PER_MID:03d}", version), None, None,
                                   known[0]))
                    entries += 1 + shape.sizes[leaf]
                mids.append((_dir(f"m{m:03d}", 0), None, None, self._directory(leaves)))
                entries += 1
            tops.append((_dir(f"t{top:03d}", 0), None, None, self._directory(mids)))
            mids = []
            entries += 1
        bench += tops
        root_tree = self._directory([(_dir("bench", run), None, None, self._directory(bench))])
        return entries + 1, root_tree

    def _blob(self, plain: bytes, kind: bytes) -> tc.BlobRef:
        assert self.meta is not None
        location = self.meta.add_blob(plain, kind)
        self.used.add(location.pack)
        return tc.BlobRef(location.hash, location.size, location.pack, location.offset,
                          location.stored, location.encoding)

    def _directory(self, items: list[Item] | list[tuple[dict[str, Any], list[tc.BlobRef] | None]]
                   ) -> tc.BlobRef:
        """One directory's nodes (its entries in name order): leaves cut by name, then
        inner nodes over them; returns its top node."""
        full: list[Item] = [item if len(item) == 4 else (item[0], item[1], None, None)
                            for item in items]  # type: ignore[misc]
        level: list[tuple[bytes, int, tc.BlobRef]] = []
        leaf: list[Item] = []
        for item in full:
            if leaf and (len(leaf) >= tc.LEAF_MAX
                         or tc.cut_after(leaf[-1][0]["name"].encode(), len(leaf))):
                level.append(self._leaf(leaf))
                leaf = []
            leaf.append(item)
        if leaf or not level:
            level.append(self._leaf(leaf))
        height = 0
        while len(level) > 1:
            height += 1
            upper, group = [], []
            for child in level:
                group.append(child)
                if len(group) >= tc.LEAF_MAX or tc.cut_after(child[0], len(group)):
                    upper.append(self._inner(height, group))
                    group = []
            if group:
                upper.append(self._inner(height, group))
            level = upper
        return level[0][2]

    def _leaf(self, leaf: list[Item]) -> tuple[bytes, int, tc.BlobRef]:
        first = leaf[0][0]["name"].encode() if leaf else b""
        return first, len(leaf), self._blob(tc.encode_leaf(leaf), pack2.KIND_TREE)

    def _inner(self, height: int, group: list[tuple[bytes, int, tc.BlobRef]]
               ) -> tuple[bytes, int, tc.BlobRef]:
        ref = self._blob(tc.encode_inner(height, group), pack2.KIND_TREE)
        return group[0][0], sum(count for _, count, _ in group), ref
