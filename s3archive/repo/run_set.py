"""Several format-2 runs read together: what ``find`` and ``history`` need.

Consecutive runs of a host share most of their tree nodes (an unchanged
directory encodes to the same node, named by its hash), so reading runs one
after the other reads the same nodes again and again.  Here:

* :class:`TreeSearch` finds what a ``Matcher`` wants in run after run, and
  remembers the answer under each node's id (and the matcher's state there):
  a run holding a node already searched — a whole unchanged directory, or
  an unchanged leaf of a large one — costs no read and no decoding.  Nodes
  are read as listings (names, kinds, trees: format/tree_codec.py); only a
  matching entry is decoded whole.  What is remembered is bounded: per node
  a small summary, and its matches (kept once however many runs and
  directories share them); past ``MEMO_NODES`` nodes the oldest are dropped
  (read again if needed).
* :class:`PathLookup` finds one path in run after run, one node per level,
  remembering the answer under each directory id on the way: a run whose
  directory on the path has an id seen before costs no node at all.

A failure (a damaged or hostile node: ``ManifestError``) fails the runs
that reach that node; the search goes on with the others.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Generator, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeAlias, TypeVar

from s3archive.errors import ManifestError
from s3archive.format import tree_codec as tc
from s3archive.format.limits import LIMITS
from s3archive.format.model import FILE, ChunkRef, Entry
from s3archive.repo.run_tree import MAX_WALK_ENTRIES, RunTree

S = TypeVar("S", bound=Hashable)
MEMO_NODES = 1 << 18  # node summaries kept per generation (two generations at most)


class Pruner(Protocol[S]):
    """Which directories a walk needs.  ``S`` is the caller's state of a
    directory (e.g. how far patterns got along its path)."""

    def child(self, state: S, name: bytes, text: str) -> S | None:
        """The state inside subdirectory ``name`` (``text``: as text), or None: skip it."""

    def names(self, state: S) -> Collection[bytes] | None:
        """The only names of this directory that matter, or None: all of them."""


class Matcher(Pruner[S], Protocol[S]):
    """A pruner that also says which entries are wanted."""

    by_path: bool  # whether ``matches`` needs the path (else the state and name decide)

    def matches(self, state: S, parent: bytes, name: bytes, text: str) -> bool:
        """Entry ``name`` (``text``: as text) of directory ``parent`` (in ``state``) is
        wanted."""


@dataclass(frozen=True, slots=True)
class Found:
    """A wanted entry: what a listing shows, not the whole entry."""

    name: bytes
    kind: str
    size: int
    mtime_ns: int


# What lies in a node: wanted entries, and (name, what lies below) for a
# subdirectory with something wanted in it; in path order.
Piece: TypeAlias = "Found | tuple[bytes, Summary]"


@dataclass(frozen=True, slots=True)
class Summary:
    """A node, searched: what its parent checks it against, and what it holds."""

    height: int
    first: bytes | None  # the first and last names of its entries (None: empty)
    last: bytes | None
    entries: int  # entries of the directory in this node (inner: in its leaves)
    walked: int  # entries searched at and below it (a run may not exceed what it declares)
    pieces: tuple[Piece, ...]


EMPTY: tuple[Piece, ...] = ()


@dataclass(slots=True)
class _Ask:
    """A node the current one needs searched first."""

    ref: ChunkRef
    path: bytes  # of its directory
    state: Hashable
    top: bool  # the top node of a directory (else a child of an inner node)
    depth: int  # directories from /


_Task = Generator[_Ask, Summary, Summary]


class _Memo:
    """Summaries by node id and state, in two generations: at most 2 x ``limit``."""

    def __init__(self, limit: int):
        self.limit = limit
        self.current: dict[Hashable, Summary] = {}
        self.previous: dict[Hashable, Summary] = {}

    def get(self, key: Hashable) -> Summary | None:
        found = self.current.get(key)
        if found is None:
            found = self.previous.pop(key, None)
            if found is not None:
                self.put(key, found)
        return found

    def put(self, key: Hashable, summary: Summary) -> None:
        if len(self.current) >= self.limit:
            self.previous = self.current
            self.current = {}
        self.current[key] = summary


class TreeSearch(Generic[S]):
    """What ``matcher`` wants in each of several runs, nodes shared by runs
    searched once (see the module's doc).  One run at a time: :meth:`search`."""

    def __init__(self, matcher: Matcher[S], limit: int = MEMO_NODES):
        self.matcher = matcher
        self.memo = _Memo(limit)
        self.failed: dict[str, str] = {}  # node id -> why it cannot be read
        self.reads = 0  # nodes read

    def search(self, tree: RunTree, start: S) -> tuple[Entry | None, Summary | None]:
        """The run's root entry, and what lies below ``/`` (None: no tree).
        Raises ManifestError when the run cannot be searched (a node it
        reaches is damaged, or it holds more entries than it declares)."""
        top = tree.top()
        if top is None:
            return None, None
        if top.tree is None:
            return top.entry, None
        below = self._run(tree, _Ask(top.tree, b"/", start, True, 0))
        budget = min(tree.root.entries, MAX_WALK_ENTRIES)
        if 1 + below.walked > budget:
            raise ManifestError(f"{tree.where}: more entries than the run declares "
                                f"({tree.root.entries})")
        return top.entry, below

    # ------------------------------------------------------------ the walk
    def _key(self, ask: _Ask) -> Hashable:
        if self.matcher.by_path:
            return ask.ref.hash, ask.state, ask.top, ask.path
        return ask.ref.hash, ask.state, ask.top

    def _run(self, tree: RunTree, first: _Ask) -> Summary:
        """``first`` searched, without recursion: each node is a task (a generator)
        that asks for the nodes below it and is sent their summaries."""
        stack: list[tuple[_Ask, _Task]] = []
        ask: _Ask | None = first
        result: Summary | None = None
        while True:
            if ask is not None:  # a node to search: remembered, or a new task
                known = self.memo.get(self._key(ask))
                if known is None and ask.ref.hash in self.failed:
                    raise ManifestError(self.failed[ask.ref.hash])
                if known is not None:
                    if not stack:
                        return known
                    result, ask = known, None
                else:
                    if ask.depth >= LIMITS.path_bytes // 2:
                        raise ManifestError(f"{tree.where}: the tree is deeper than a path "
                                            "allows")
                    stack.append((ask, self._task(tree, ask)))
                    result, ask = None, None
            _, task = stack[-1]
            try:
                ask = task.send(result) if result is not None else next(task)
                result = None
            except StopIteration as done:
                finished, _ = stack.pop()
                result = done.value
                self.memo.put(self._key(finished), result)
                if not stack:
                    return result
            except ManifestError as err:
                self.failed.setdefault(stack[-1][0].ref.hash, str(err))
                raise

    def _task(self, tree: RunTree, ask: _Ask) -> _Task:
        self.reads += 1
        listing = tree.listing(ask.ref, ask.path)
        state = ask.state
        wanted = self.matcher.names(state) if ask.top else None
        if wanted is not None:
            return (yield from self._named(tree, ask, listing, sorted(wanted)))
        if listing.height == 0:
            return (yield from self._leaf(tree, ask, listing))
        pieces: list[Piece] = []
        entries = walked = 0
        first = last = None
        for child in listing.children:
            below = yield _Ask(child.ref, ask.path, state, False, ask.depth)
            where = f"{tree.where}: node {child.ref.hash[:16]} of {_shown(ask.path)}"
            if below.height != listing.height - 1:
                raise ManifestError(f"{where} has height {below.height}, its parent expects "
                                    f"{listing.height - 1}")
            if below.first != child.first:
                raise ManifestError(f"{where} does not start with the name its parent gives")
            if below.entries != child.entries:
                raise ManifestError(f"{tree.where}: {_shown(ask.path)}: a child node holds "
                                    f"{below.entries} entries, its parent says {child.entries}")
            if last is not None and below.first is not None and below.first <= last:
                raise ManifestError(f"{tree.where}: {_shown(ask.path)}: names out of order "
                                    "across nodes")
            first = first if first is not None else below.first
            last = below.last
            entries += below.entries
            walked += below.walked
            pieces += below.pieces
        return Summary(listing.height, first, last, entries, walked, tuple(pieces) or EMPTY)

    def _leaf(self, tree: RunTree, ask: _Ask, listing: tc.Listing) -> _Task:
        matches, child = self.matcher.matches, self.matcher.child
        path, state = ask.path, ask.state
        pieces: list[Piece] = []
        names, texts, trees = listing.names, listing.texts, listing.trees
        walked = len(names)
        for index, name in enumerate(names):
            if matches(state, path, name, texts[index]):
                pieces.append(self._found(tree, ask, listing, index))
            below = trees[index]
            if below is not None:
                inner = child(state, name, texts[index])
                if inner is not None:
                    summary = yield _Ask(below, _join(path, name), inner, True, ask.depth + 1)
                    walked += summary.walked
                    if summary.pieces:
                        pieces.append((name, summary))
        return Summary(0, names[0] if names else None, names[-1] if names else None,
                       len(names), walked, tuple(pieces) or EMPTY)

    def _named(self, tree: RunTree, ask: _Ask, top: tc.Listing, wanted: list[bytes]) -> _Task:
        """A directory of which only ``wanted`` names matter: each looked up."""
        matcher, path, state = self.matcher, ask.path, ask.state
        pieces: list[Piece] = []
        walked = 0
        for name in wanted:
            if b"/" in name or not name:
                continue
            found = self._lookup(tree, ask.ref, top, path, name)
            if found is None:
                continue
            ref, listing, index = found
            walked += 1
            text = listing.texts[index]
            if matcher.matches(state, path, name, text):
                pieces.append(self._found(tree, _Ask(ref, path, state, False, ask.depth), listing,
                                               index))
            below = listing.trees[index]
            if below is not None:
                inner = matcher.child(state, name, text)
                if inner is not None:
                    summary = yield _Ask(below, _join(path, name), inner, True, ask.depth + 1)
                    walked += summary.walked
                    if summary.pieces:
                        pieces.append((name, summary))
        # the listing of a directory searched by name is its top node's (never a child's)
        return Summary(top.height, None, None, 0, walked, tuple(pieces) or EMPTY)

    def _lookup(self, tree: RunTree, ref: ChunkRef, listing: tc.Listing, path: bytes,
                name: bytes) -> tuple[ChunkRef, tc.Listing, int] | None:
        """Entry ``name`` of the directory whose top node is ``listing``: one node a level."""
        while listing.height > 0:
            at = bisect.bisect_right([c.first for c in listing.children], name) - 1
            if at < 0:
                return None
            ref = listing.children[at].ref
            below = tree.listing(ref, path)
            self.reads += 1
            if below.height != listing.height - 1:
                raise ManifestError(f"{tree.where}: {_shown(path)}: node heights do not "
                                    "decrease by one")
            listing = below
        at = bisect.bisect_left(listing.names, name)
        if at < len(listing.names) and listing.names[at] == name:
            return ref, listing, at
        return None

    @staticmethod
    def _found(tree: RunTree, ask: _Ask, listing: tc.Listing, index: int) -> Found:
        entry = tree.listed(ask.ref, listing, index, ask.path).entry
        return Found(listing.names[index], entry.kind, entry.size, entry.mtime_ns)


def expand(summary: Summary, path: bytes) -> Generator[tuple[bytes, Found], None, None]:
    """Every wanted entry below directory ``path``, with its path, in path order."""
    stack = [(path, iter(summary.pieces))]
    while stack:
        parent, pieces = stack[-1]
        piece = next(pieces, None)
        if piece is None:
            stack.pop()
        elif isinstance(piece, Found):
            yield _join(parent, piece.name), piece
        else:
            name, below = piece
            stack.append((_join(parent, name), iter(below.pieces)))


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + name if parent == b"/" else parent + b"/" + name


def _shown(path: bytes) -> str:
    return path[:200].decode("utf-8", "backslashreplace")


class PathLookup:
    """One path in run after run (``find`` per level), each answer remembered
    under the id of every directory node on the way: a later run that holds
    the same node at some level gets the answer without reading below it."""

    def __init__(self, path: bytes):
        self.path = b"/" + b"/".join(p for p in path.split(b"/") if p)
        self.names = [p for p in self.path.split(b"/") if p]
        self.known: dict[tuple[int, str], Entry | None] = {}

    def entry(self, tree: RunTree) -> Entry | None:
        """The entry at the path in ``tree`` (complete: a file's chunks read), or None."""
        item = tree.top()
        if item is None:
            return None
        if not self.names:
            return item.entry
        seen: list[tuple[int, str]] = []
        answer: Entry | None = None
        current = b""
        for level, name in enumerate(self.names):
            if item.tree is None:
                break
            key = (level, item.tree.hash)
            if key in self.known:
                answer = self.known[key]
                break
            seen.append(key)
            found = tree.find(item.tree, current or b"/", name)
            if found is None:
                break
            current += b"/" + name
            item = found
        else:
            answer = tree.complete(item) if item.entry.kind == FILE else item.entry
        for key in seen:
            self.known[key] = answer
        return answer


__all__ = ["Found", "Matcher", "PathLookup", "Pruner", "Summary", "TreeSearch", "expand"]
