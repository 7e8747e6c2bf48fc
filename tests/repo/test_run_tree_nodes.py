"""RunTree's walk over a directory of several nodes (repo/run_tree.py): the
nodes' heights, first names and counts, and the order of names across nodes,
are checked as it goes (nodes crafted here, each as decode_node returns it)."""

from __future__ import annotations

import pytest

from s3archive.errors import ManifestError
from s3archive.format import tree_codec as tc
from s3archive.format.model import ChunkRef, Entry
from s3archive.repo.run_tree import RunTree


def ref(name: str) -> ChunkRef:
    return ChunkRef(name.encode().hex().ljust(64, "0"), 10, 0, 29, 10, "raw")


def leaf(*names: str) -> tc.Node:
    entries = [Entry(b"/d/" + n.encode(), "file", 0o644, 0, 0, 0) for n in names]
    return tc.Node(0, entries, [], {}, {}, [n.encode() for n in names])


def inner(height: int, *children: tuple[str, int, str]) -> tc.Node:
    return tc.Node(height, [], [tc.Child(first.encode(), count, ref(node))
                                for first, count, node in children], {}, {})


class CraftedTree(RunTree):
    def __init__(self, nodes: dict[str, tc.Node]):  # no store: the nodes are given
        self.where = "crafted"
        self.nodes = {ref(name): node for name, node in nodes.items()}

    def _node(self, ref: ChunkRef, parent: bytes, point: bool = False) -> tc.Node:
        return self.nodes[ref]


GOOD = {"top": inner(2, ("a", 3, "upper"), ("m", 2, "lower")),
        "upper": inner(1, ("a", 2, "left"), ("c", 1, "right")),
        "left": leaf("a", "b"), "right": leaf("c"),
        "lower": inner(1, ("m", 2, "last")), "last": leaf("m", "n")}


def names(nodes: dict[str, tc.Node]) -> list[bytes]:
    return [item.entry.path for item in CraftedTree(nodes).items(ref("top"), b"/d")]


def test_a_directory_of_several_nodes_is_read_in_order() -> None:
    assert names(GOOD) == [b"/d/a", b"/d/b", b"/d/c", b"/d/m", b"/d/n"]


@pytest.mark.parametrize("change, why", [
    ({"left": leaf("a", "d")}, "names out of order across nodes"),  # d, then c
    ({"left": leaf("a", "c")}, "names out of order across nodes"),  # c twice
    ({"right": leaf("c", "z")}, "a child node holds 2 entries, its parent says 1"),
    ({"top": inner(2, ("a", 3, "upper"), ("m", 2, "upper"))},
     "does not start with the name its parent gives"),
    ({"upper": inner(1, ("a", 2, "left"), ("c", 1, "right"), ("x", 1, "tail")),
      "tail": leaf("x"), "top": inner(2, ("a", 4, "upper"), ("m", 2, "lower"))},
     "names out of order across nodes"),  # a subtree ending after the next one begins
    ({"top": inner(2, ("a", 3, "upper"), ("m", 2, "last"))}, "has height 0, its parent"),
])
def test_a_crafted_directory_is_refused(change: dict[str, tc.Node], why: str) -> None:
    with pytest.raises(ManifestError, match=why):
        names({**GOOD, **change})
