"""The search of many runs (repo/run_set.py TreeSearch): a node shared by runs is
searched once, its matches credited to every run holding it; the memo is
bounded; a listing checks what the walk follows and a match is decoded whole."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import pytest
from support.memory_host import MemoryHost

from s3archive.errors import ManifestError
from s3archive.find import Search, compile_pattern, find
from s3archive.format import tree_codec as tc
from s3archive.format.model import ChunkRef, Entry, PackRef
from s3archive.format.run_root import decode_root, encode_root
from s3archive.repo.catalog import RunRef, load_manifest
from s3archive.repo.run_access import open_run
from s3archive.repo.run_set import TreeSearch, expand
from s3archive.repo.run_tree import Item, RunTree


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> MemoryHost:
    return MemoryHost(tmp_path_factory.mktemp("run-set"), "run-set")


@pytest.fixture(scope="module")
def runs(host: MemoryHost) -> list[RunRef]:
    """Three runs, newest first: ``big/`` (several leaves) has one file changed
    between the first two, ``shared/`` never changes, the third is the second."""
    t = host.tree
    (t / "big").mkdir()
    for i in range(700):  # three leaves
        (t / "big" / f"f{i:04d}.txt").write_text(f"{i}\n")
    (t / "shared" / "deep").mkdir(parents=True)
    (t / "shared" / "deep" / "target.conf").write_text("shared\n")
    (t / "shared" / "other.txt").write_text("other\n")
    first = host.archive()
    (t / "big" / "f0350.txt").write_text("changed\n")
    second = host.archive()
    third = host.archive()
    return [third, second, first]


def trees(host: MemoryHost, runs: list[RunRef]) -> list[RunTree]:
    opened = [open_run(host.store, run) for run in runs]
    assert all(isinstance(t, RunTree) for t in opened)
    return opened  # type: ignore[return-value]


def searched(searcher: TreeSearch, search: Search, tree: RunTree) -> list[bytes]:
    _, below = searcher.search(tree, search.start())
    return [path for path, _ in expand(below, b"/")] if below is not None else []


def whole(host: MemoryHost, run: RunRef, patterns: list[str]) -> list[bytes]:
    matchers = [compile_pattern(p) for p in patterns]
    return [e.path for e in load_manifest(host.store, run).entries
            if any(m(e.path) for m in matchers)]


def test_a_match_in_a_shared_subtree_is_credited_to_every_run(host: MemoryHost,
                                                              runs: list[RunRef]) -> None:
    search = Search([compile_pattern("target.conf"), compile_pattern("f03*.txt")])
    searcher = TreeSearch(search)
    newest, middle, oldest = trees(host, runs)
    assert searched(searcher, search, newest) == whole(host, runs[0], ["target.conf",
                                                                       "f03*.txt"])
    read_all = searcher.reads
    # the second run holds the same tree: only the directories above it changed
    # (the host's cache beside it), one node each
    to_tree = len(host.tree.parts)  # "/" ... the tree's parent, one node each
    assert searched(searcher, search, middle) == whole(host, runs[1], ["target.conf",
                                                                       "f03*.txt"])
    assert searcher.reads - read_all <= to_tree - 1, (read_all, searcher.reads)
    read_two = searcher.reads
    # the oldest differs in one leaf of big/: the directories from / to the tree,
    # big/'s top node and that leaf are read; shared/ and big/'s other leaves are not
    assert searched(searcher, search, oldest) == whole(host, runs[2], ["target.conf",
                                                                       "f03*.txt"])
    assert searcher.reads - read_two <= to_tree + 2, (read_two, searcher.reads)
    assert read_all >= to_tree + 2 + 2 + 2  # (what the first run read: big/ has leaves)
    hits = find(runs, lambda run, _: open_run(host.store, run), ["target.conf"],
                lambda run, why: pytest.fail(why))
    target = os.fsencode(host.tree) + b"/shared/deep/target.conf"
    assert [(h.run, h.path) for h in hits] == [(run, target) for run in runs]


def test_a_small_memo_finds_the_same(host: MemoryHost, runs: list[RunRef]) -> None:
    search = Search([compile_pattern("*.conf"), compile_pattern("f1*9.txt")])
    bounded, unbounded = TreeSearch(search, limit=2), TreeSearch(search)
    for tree in trees(host, runs):
        assert searched(bounded, search, tree) == searched(unbounded, search, tree)
    assert len(bounded.memo.current) + len(bounded.memo.previous) <= 4
    assert bounded.reads > unbounded.reads


def test_a_run_declaring_fewer_entries_is_skipped_even_when_memoised(
        host: MemoryHost, runs: list[RunRef], tmp_path: Path) -> None:
    blob = host.store.get(runs[0].key, runs[0].version_id)
    root = decode_root(blob, runs[0].key)
    run_id = "20990101T000000Z"
    root.header.run_id, root.entries = run_id, 100
    out = io.BytesIO()
    encode_root(root, out)
    key = f"runs/{runs[0].host}/{run_id}.jsonl.zst"
    put = host.store.put(key, out.getvalue(), None)
    liar = dataclasses.replace(runs[0], run_id=run_id, key=key, version_id=put.version_id,
                               size=len(out.getvalue()))
    skipped: list[tuple[str, str]] = []
    hits = find([runs[0], liar], lambda run, _: open_run(host.store, run), ["*.txt"],
                lambda run, why: skipped.append((run.run_id, why)))
    why = f"{key}@{put.version_id}: more entries than the run declares (100)"
    assert skipped == [(run_id, why)]
    assert {h.run for h in hits} == {runs[0]} and len(hits) == 701


# ------------------------------------------------------------------ listings
DATA = PackRef(0, "data/aa/" + "a" * 64, "v1", 1 << 20)
META = PackRef(1, "meta/bb/" + "b" * 64, "v1", 1 << 20)
TABLE = tc.PackTable.of([DATA, META])
HASH = "c" * 64


def leaf(*entries: dict) -> bytes:
    return json.dumps({"node": "leaf", "packs": [DATA.key, META.key],
                       "entries": list(entries)}).encode()


def file(name: str, **fields) -> dict:
    return {"name": name, "kind": "file", "mode": "0644", "uid": 0, "gid": 0,
            "mtime_ns": 5, "size": 3, "chunks": [[HASH, 3, 0, 100, 3, "raw"]], **fields}


def directory(name: str, **fields) -> dict:
    return {"name": name, "kind": "dir", "mode": "0755", "uid": 0, "gid": 0, "mtime_ns": 5,
            "tree": [HASH, 50, 1, 100, 40, "zstd"], **fields}


def test_a_listing_holds_what_a_whole_decoding_does() -> None:
    named = {k: v for k, v in file("c").items() if k != "name"}
    plain = leaf(directory("a"), file("b"), {**named, "name_b64": "Y/8="})  # b"c\xff"
    node = tc.decode_node(plain, b"/x", TABLE, "node")
    listing = tc.decode_listing(plain, TABLE, "node")
    assert listing.names == [e.path.rsplit(b"/", 1)[1] for e in node.entries]
    assert listing.kinds == [e.kind for e in node.entries]
    assert listing.trees == [node.trees.get(n) for n in listing.names]
    assert [tc.listed_entry(listing, i, b"/x", TABLE, "node")[0]
            for i in range(3)] == node.entries


@pytest.mark.parametrize("entries, why", [
    ([file("a/b")], "bad name"),
    ([file("..")], "bad name"),
    ([file("b"), file("a")], "not in strictly increasing order"),
    ([file("a"), file("a")], "not in strictly increasing order"),
    ([file("a", kind="socket")], "unknown kind 'socket'"),
    ([file("a", tree=[HASH, 50, 1, 100, 40, "zstd"])], "is a file, not a directory"),
    ([directory("a", tree=None)], "malformed reference"),
    ([directory("a", tree=[HASH, 50, 0, 100, 40, "zstd"])], "a metadata reference into data/"),
    ([directory("a", tree=[HASH, 50, 1, 1 << 21, 40, "zstd"])], "outside the blobs"),
    (["not an entry"], "entry 1 is not an object"),
])
def test_a_crafted_leaf_is_refused_by_its_listing(entries: list, why: str) -> None:
    with pytest.raises(ManifestError, match=why) as refused:
        tc.decode_listing(leaf(*entries), TABLE, "meta/bb@v1: node cccc of /x")
    assert str(refused.value).startswith("meta/bb@v1: node cccc of /x: ")
    assert "\n" not in str(refused.value)


def test_a_listing_refuses_a_pack_the_run_does_not_pin() -> None:
    plain = json.dumps({"node": "leaf", "packs": ["meta/cc/" + "c" * 64],
                        "entries": []}).encode()
    with pytest.raises(ManifestError, match="which the run does not pin"):
        tc.decode_listing(plain, TABLE, "node")


def test_a_matching_entry_is_decoded_whole_and_refused_when_bad() -> None:
    listing = tc.decode_listing(leaf(file("a", mode="rwx"), file("b")), TABLE, "node")
    assert listing.names == [b"a", b"b"]  # what a walk needs is sound
    with pytest.raises(ManifestError, match="node: line 1: mode 'rwx'"):
        tc.listed_entry(listing, 0, b"/", TABLE, "node")
    entry, lists = tc.listed_entry(listing, 1, b"/", TABLE, "node")
    assert entry.path == b"/b" and entry.size == 3 and lists is None


def test_a_search_fails_on_a_matching_entry_it_cannot_decode(
        host: MemoryHost, runs: list[RunRef], monkeypatch: pytest.MonkeyPatch) -> None:
    """Hits come only from entries decoded whole: a names-only read never reports
    an entry its full decoding refuses."""
    search = Search([compile_pattern("*.conf")])
    searcher = TreeSearch(search)
    tree = trees(host, runs[:1])[0]
    decoded: list[bytes] = []

    def refusing(listing, index, parent, table, where, limits=tc.LIMITS):
        decoded.append(listing.names[index])
        raise ManifestError(f"{where}: line {index + 1}: mode 'rwx' is not 3 or 4 octal digits")

    monkeypatch.setattr(tc, "listed_entry", refusing)
    with pytest.raises(ManifestError, match="target.conf.*|line 1: mode 'rwx'"):
        searcher.search(tree, search.start())
    assert decoded == [b"target.conf"]  # only the match was decoded whole


# ------------------------------------------------------------------ crafted trees
class CraftedTree:
    """A run's tree as listings by node id (what TreeSearch reads of a RunTree)."""

    def __init__(self, nodes: dict[str, tc.Listing], entries: int):
        self.nodes = nodes
        self.where = "runs/h/crafted"
        self.root = dataclasses.make_dataclass("Root", ["entries"])(entries)

    def top(self) -> Item:
        return Item(Entry(b"/", "dir", 0o755, 0, 0, 0), ref("top"), None)

    def listing(self, at: ChunkRef, parent: bytes) -> tc.Listing:
        return self.nodes[at.hash]

    def listed(self, at: ChunkRef, listing: tc.Listing, index: int, parent: bytes) -> Item:
        entry, lists = tc.listed_entry(listing, index, parent, TABLE, "crafted")
        return Item(entry, listing.trees[index], lists)


def ref(name: str) -> ChunkRef:
    return ChunkRef(name, 10, 1, 100, 10, "raw")


def listed(*entries: dict) -> tc.Listing:
    return tc.decode_listing(leaf(*entries), TABLE, "crafted")


def inner(height: int, *children: tuple[str, int, str]) -> tc.Listing:
    return tc.Listing(height, [], [], [], [], [tc.Child(first.encode(), count, ref(node))
                                              for first, count, node in children], [], [])


def search_crafted(nodes: dict[str, tc.Listing], entries: int = 100) -> list[bytes]:
    search = Search([compile_pattern("*.conf")])
    _, below = TreeSearch(search).search(CraftedTree(nodes, entries), search.start())
    return [path for path, _ in expand(below, b"/")]


GOOD = {"top": inner(1, ("a.conf", 2, "left"), ("c.conf", 1, "right")),
        "left": listed(file("a.conf"), file("b.txt")), "right": listed(file("c.conf"))}


def test_a_crafted_tree_is_searched_as_written() -> None:
    assert search_crafted(GOOD) == [b"/a.conf", b"/c.conf"]


@pytest.mark.parametrize("change, why", [
    ({"top": inner(2, ("a.conf", 2, "left"), ("c.conf", 1, "right"))},
     "has height 0, its parent expects 1"),
    ({"top": inner(1, ("a.conf", 2, "left"), ("b.conf", 1, "right"))},
     "does not start with the name its parent gives"),
    ({"top": inner(1, ("a.conf", 3, "left"), ("c.conf", 1, "right"))},
     "a child node holds 2 entries, its parent says 3"),
    ({"right": listed(file("a.conf")),
      "top": inner(1, ("a.conf", 2, "left"), ("a.conf", 1, "right"))},
     "names out of order across nodes"),
])
def test_a_crafted_inner_node_fails_the_search(change: dict, why: str) -> None:
    with pytest.raises(ManifestError, match=why):
        search_crafted({**GOOD, **change})


def test_a_subtree_shared_under_many_names_counts_against_the_declared_entries() -> None:
    """Shared subtrees are read once, but their entries count for every place they
    appear: 41 nodes holding 2^40 paths are refused, not expanded."""
    def level(number: int) -> str:
        return f"{number:064x}"

    def two_dirs_to(node: str) -> tc.Listing:
        return listed(*(directory(f"d{i}", tree=[node, 50, 1, 100, 40, "zstd"])
                        for i in range(2)))

    nodes = {"top": two_dirs_to(level(1)), level(40): listed(file("x.conf"))}
    for number in range(1, 40):
        nodes[level(number)] = two_dirs_to(level(number + 1))
    with pytest.raises(ManifestError, match=r"more entries than the run declares \(1000\)"):
        search_crafted(nodes, entries=1000)
    nodes[level(39)] = listed(file("x.conf"))  # 2^39 paths to it, each one
    with pytest.raises(ManifestError, match="more entries than the run declares"):
        search_crafted(nodes, entries=10**6)


def test_packs_that_do_not_fit_are_downloaded_whole_once(
        host: MemoryHost, runs: list[RunRef], monkeypatch: pytest.MonkeyPatch) -> None:
    import s3archive.find as find_module
    whole_gets: list[str] = []

    class Recording:
        def __getattr__(self, name):
            return getattr(host.store, name)

        def get(self, key, version_id=None, byte_range=None):
            if byte_range is None and key.startswith("meta/"):
                whole_gets.append(key)
            return host.store.get(key, version_id, byte_range)

    expected = find(runs, lambda run, _: open_run(host.store, run), ["*.txt"],
                    lambda run, why: pytest.fail(why))
    monkeypatch.setattr(find_module, "SHARED_PACK_BYTES", 1)  # one pack kept at a time
    store = Recording()
    hits = find(runs, lambda run, _: open_run(store, run), ["*.txt"],
                lambda run, why: pytest.fail(why))
    assert hits == expected
    assert whole_gets and len(whole_gets) == len(set(whole_gets))
