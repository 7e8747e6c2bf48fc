"""Two format-2 runs walked together, reading only what differs.

A node is named by the hash of its bytes, and a node's bytes hold its
entries (names, metadata, chunk ids) and its children's ids: two runs that
reference the same node id hold the same entries below it.  So the walk
skips every directory whose tree id is the same in both runs, and inside a
directory that differs, every node (an inner node or a leaf of a large
directory) whose id both runs share: a run with one changed file costs the
nodes on that file's path, in both runs.  Memory: the open directories
along one path (a leaf per side, the node references of a directory).

Nodes are read through :attr:`RunTree.blobs` (verified against their id)
and decoded with :func:`tree_codec.decode_node`, with the checks
``RunTree.items`` makes on what it reads: heights, first names, entry
counts, names in order across nodes.  What is skipped is not read, hence
not checked: the other run's copy of it is, when that run is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from s3archive.errors import ManifestError
from s3archive.format import pack2
from s3archive.format import tree_codec as tc
from s3archive.format.limits import LIMITS
from s3archive.format.model import ChunkRef
from s3archive.repo.run_tree import MAX_WALK_ENTRIES, Item, RunTree


@dataclass(frozen=True, slots=True)
class Pair:
    """One path in either run: ``old`` or ``new`` is None where a run lacks it.
    Both present: the entries may or may not differ (the caller compares)."""

    path: bytes
    old: Item | None
    new: Item | None


def read_node(tree: RunTree, ref: ChunkRef, path: bytes) -> tc.Node:
    """One tree node of directory ``path``, verified and decoded (as ``RunTree``
    reads its nodes; it has no public method for one node)."""
    plain = tree.blobs.read(ref, pack2.KIND_TREE)
    return tc.decode_node(plain, path, tree.table,
                          f"{tree.where}: node {ref.hash[:16]} of {_shown(path)}")


def changed_pairs(old: RunTree, new: RunTree) -> Iterator[Pair]:
    """Every path where the runs may differ, in path order (parents first,
    names in byte order): the paths of nodes the runs do not share."""
    budgets = {id(old): _budget(old), id(new): _budget(new)}
    top_old, top_new = old.top(), new.top()
    if top_old is None and top_new is None:
        return
    yield Pair(b"/", top_old, top_new)
    below = _below(old, new, top_old, top_new, b"/", budgets)
    stack: list[Iterator[Pair]] = [below] if below is not None else []
    while stack:
        pair = next(stack[-1], None)
        if pair is None:
            stack.pop()
            continue
        yield pair
        below = _below(old, new, pair.old, pair.new, pair.path, budgets)
        if below is not None:
            if len(stack) >= LIMITS.path_bytes // 2:
                raise ManifestError(f"{new.where}: the tree is deeper than a path allows")
            stack.append(below)


def _budget(tree: RunTree) -> list[int]:
    return [min(tree.root.entries, MAX_WALK_ENTRIES)]


def _below(old: RunTree, new: RunTree, a: Item | None, b: Item | None, path: bytes,
           budgets: dict[int, list[int]]) -> Iterator[Pair] | None:
    """The pairs directly inside ``path``, or None when nothing there differs."""
    tree_a = a.tree if a is not None else None
    tree_b = b.tree if b is not None else None
    if tree_a is None and tree_b is None:
        return None
    if tree_a is not None and tree_b is not None and tree_a.hash == tree_b.hash:
        return None  # the same directory in both runs
    side_a = _Side(old, tree_a, path, budgets[id(old)])
    side_b = _Side(new, tree_b, path, budgets[id(new)])
    _drop_shared(side_a, side_b)
    return _merge(side_a, side_b, path)


@dataclass(slots=True)
class _Part:
    """A node of one run's directory not (yet) known to be shared."""

    ref: ChunkRef
    height: int | None  # what its parent says (None: the directory's top node)
    first: bytes | None  # the name its parent says it starts with
    entries: int | None  # the entry count its parent gives
    node: tc.Node | None = None


class _Side:
    def __init__(self, tree: RunTree, ref: ChunkRef | None, path: bytes, budget: list[int]):
        self.tree = tree
        self.path = path
        self.budget = budget
        self.parts = [_Part(ref, None, None, None)] if ref is not None else []

    def read(self, part: _Part) -> tc.Node:
        if part.node is None:
            node = read_node(self.tree, part.ref, self.path)
            where = f"{self.tree.where}: node {part.ref.hash[:16]} of {_shown(self.path)}"
            if part.height is not None and node.height != part.height:
                raise ManifestError(f"{where} has height {node.height}, its parent expects "
                                    f"{part.height}")
            first = (tc.name_of(node.entries[0].path) if node.entries else None) \
                if node.height == 0 else node.children[0].first
            if part.first is not None and first != part.first:
                raise ManifestError(f"{where} does not start with the name its parent gives")
            count = len(node.entries) if node.height == 0 else \
                sum(c.entries for c in node.children)
            if part.entries is not None and count != part.entries:
                raise ManifestError(f"{where} holds {count} entries, its parent says "
                                    f"{part.entries}")
            part.node = node
        return part.node

    def expand(self, height: int) -> None:
        """Replace the inner nodes of ``height`` by their children (unread)."""
        out: list[_Part] = []
        for part in self.parts:
            if part.node is not None and part.node.height == height and height > 0:
                out += [_Part(c.ref, height - 1, c.first, c.entries)
                        for c in part.node.children]
            else:
                out.append(part)
        self.parts = out

    def items(self) -> Iterator[Item]:
        last: bytes | None = None
        for part in self.parts:
            node = self.read(part)
            self.budget[0] -= len(node.entries)
            if self.budget[0] < 0:
                raise ManifestError(f"{self.tree.where}: more entries than the run declares "
                                    f"({self.tree.root.entries})")
            for entry in node.entries:
                name = tc.name_of(entry.path)
                if last is not None and name <= last:
                    raise ManifestError(f"{self.tree.where}: {_shown(self.path)}: names out "
                                        "of order across nodes")
                last = name
                yield Item(entry, node.trees.get(name), node.lists.get(name))


def _drop_shared(a: _Side, b: _Side) -> None:
    """Leave on each side only the nodes the other side does not have, down to
    leaves (unread) — the highest nodes first, so a shared subtree is
    dropped whole."""
    while True:
        shared = {p.ref.hash for p in a.parts} & {p.ref.hash for p in b.parts}
        if shared:
            a.parts = [p for p in a.parts if p.ref.hash not in shared]
            b.parts = [p for p in b.parts if p.ref.hash not in shared]
        unknown = [(s, p) for s in (a, b) for p in s.parts if p.height is None]
        if unknown:  # the top nodes: their heights are known once read
            for side, part in unknown:
                side.read(part)
                part.height = part.node.height if part.node is not None else 0
            continue
        height = max((p.height or 0 for s in (a, b) for p in s.parts), default=0)
        if height == 0:
            return
        for side in (a, b):
            for part in side.parts:
                if part.height == height:
                    side.read(part)
            side.expand(height)


def _merge(a: _Side, b: _Side, path: bytes) -> Iterator[Pair]:
    left, right = a.items(), b.items()
    x, y = next(left, None), next(right, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x.entry.path < y.entry.path):
            assert x is not None
            yield Pair(x.entry.path, x, None)
            x = next(left, None)
        elif x is None or y.entry.path < x.entry.path:
            yield Pair(y.entry.path, None, y)
            y = next(right, None)
        else:
            yield Pair(x.entry.path, x, y)
            x, y = next(left, None), next(right, None)


def _shown(path: bytes) -> str:
    return path[:200].decode("utf-8", "backslashreplace")


def every_item(tree: RunTree) -> Iterator[Item]:
    """Every entry of the run below ``/`` in path order, chunk lists not read."""
    top = tree.top()
    if top is None or top.tree is None:
        return
    budget = _budget(tree)
    stack: list[Iterator[Item]] = [tree.items(top.tree, b"/")]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        budget[0] -= 1
        if budget[0] < 0:
            raise ManifestError(f"{tree.where}: more entries than the run declares "
                                f"({tree.root.entries})")
        yield item
        if item.tree is not None:
            if len(stack) >= LIMITS.path_bytes // 2:
                raise ManifestError(f"{tree.where}: the tree is deeper than a path allows")
            stack.append(tree.items(item.tree, item.entry.path))
