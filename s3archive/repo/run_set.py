"""Several format-2 runs read together: what ``find`` and ``history`` need.

Consecutive runs of a host share most of their tree nodes (an unchanged
directory encodes to the same node, named by its hash), so reading runs one
after the other reads the same nodes again and again.  Here:

* :func:`walk_union` walks the union of the runs' trees at once: at each
  path the runs are grouped by the id of their directory node there, each
  distinct directory is read once (through one run of its group), and what
  it holds is credited to every run of the group.  A ``Pruner`` says below
  which directories nothing can be wanted, and where only some names can.
  Memory: the open directories along one path, one leaf per distinct
  version of each — not the runs.  The first nodes of a directory's
  versions are read in parallel (each through its own run's tree).
* :class:`PathLookup` finds one path in run after run, one node per level,
  remembering the answer under each directory id on the way: a run whose
  directory on the path has an id seen before costs no node at all.

A failure (a damaged or hostile node: ``ManifestError``) is charged to the
runs that reference that node; the walk goes on with the others.
"""

from __future__ import annotations

import heapq
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Collection, Iterator, Protocol, Sequence, TypeVar

from s3archive.errors import ManifestError
from s3archive.format.limits import LIMITS
from s3archive.format.model import FILE, ChunkRef, Entry
from s3archive.repo.run_tree import MAX_WALK_ENTRIES, Item, RunTree

S = TypeVar("S")
BUDGET_EVERY = 1024  # entries read between two checks of the runs' declared counts
PARALLEL_READS = 8  # the versions of one directory: their first nodes read at once


class Pruner(Protocol[S]):
    """Which directories a walk needs.  ``S`` is the caller's state of a
    directory (e.g. how far patterns got along its path)."""

    def child(self, state: S, name: bytes) -> S | None:
        """The state inside subdirectory ``name``, or None: skip it."""

    def names(self, state: S) -> Collection[bytes] | None:
        """The only names of this directory that matter, or None: all of them."""


@dataclass(frozen=True, slots=True)
class Held:
    """An entry, and the runs (indices into the walk's trees) that hold it."""

    entry: Entry
    runs: tuple[int, ...]


@dataclass(slots=True)
class _Group:
    """The runs sharing one directory node at a path, and how to read it."""

    reader: int  # the run whose tree reads it (its ``ref`` indexes that run's packs)
    ref: ChunkRef
    runs: list[int] = field(default_factory=list)
    alive: tuple[int, ...] = ()  # ``runs`` not failed, as of ``checked``
    checked: int = -1


@dataclass
class Failures:
    """The runs a walk gave up, with why (one line each)."""

    by_run: dict[int, str] = field(default_factory=dict)

    def add(self, runs: Sequence[int], why: str) -> None:
        for run in runs:
            self.by_run.setdefault(run, why)

    def alive(self, runs: Sequence[int]) -> list[int]:
        return [r for r in runs if r not in self.by_run]

    def alive_in(self, group: _Group) -> tuple[int, ...]:
        if group.checked != len(self.by_run):
            group.alive = tuple(self.alive(group.runs))
            group.checked = len(self.by_run)
        return group.alive


def walk_union(trees: Sequence[RunTree], start: S, pruner: Pruner[S],
               failures: Failures) -> Iterator[tuple[Held, S]]:
    """Every entry of the runs' trees that the pruner lets the walk reach, in
    path order, each with the state of its directory (``start`` for ``/``).
    A directory is read once for all the runs that share it."""
    budgets = [min(t.root.entries, MAX_WALK_ENTRIES) for t in trees]
    groups: dict[str, _Group] = {}
    for number, tree in enumerate(trees):
        try:
            top = tree.top()
        except ManifestError as err:
            failures.add([number], str(err))
            continue
        if top is None:
            continue
        yield Held(top.entry, (number,)), start
        if top.tree is not None:
            group = groups.setdefault(top.tree.hash, _Group(number, top.tree))
            group.runs.append(number)
    stack: list[tuple[S, Iterator[list[tuple[Item, _Group]]]]] = []
    if groups:
        stack.append((start, _versions(trees, list(groups.values()), b"/",
                                       pruner.names(start), budgets, failures)))
    while stack:
        state, versions = stack[-1]
        same_name = next(versions, None)
        if same_name is None:
            stack.pop()
            continue
        below: dict[str, _Group] = {}
        for item, group in same_name:
            runs = failures.alive_in(group)
            if not runs:
                continue
            yield Held(item.entry, runs), state
            if item.tree is not None:
                known = below.get(item.tree.hash)
                if known is None:
                    below[item.tree.hash] = _Group(group.reader, item.tree, list(runs))
                else:
                    known.runs += runs
                    if group.reader < known.reader:
                        known.reader, known.ref = group.reader, item.tree
        if not below:
            continue
        path = same_name[0][0].entry.path
        inner = pruner.child(state, path.rsplit(b"/", 1)[1])
        if inner is None:
            continue
        if len(stack) >= LIMITS.path_bytes // 2:
            for group in below.values():
                failures.add(group.runs, f"{trees[group.reader].where}: the tree is "
                             "deeper than a path allows")
            continue
        for group in below.values():
            group.runs.sort()
        stack.append((inner, _versions(trees, list(below.values()), path,
                                       pruner.names(inner), budgets, failures)))


def _versions(trees: Sequence[RunTree], groups: list[_Group], path: bytes,
              names: Collection[bytes] | None, budgets: list[int], failures: Failures
              ) -> Iterator[list[tuple[Item, _Group]]]:
    """The entries of directory ``path`` in every version ``groups`` name,
    merged by name: per name, each version's item."""
    streams: list[Iterator[tuple[bytes, Item, _Group]]] = [
        _stream(trees, group, path, names, budgets, failures) for group in groups]
    if len(streams) > 1:  # the versions' first nodes, read in parallel (each its own run)
        with ThreadPoolExecutor(max_workers=min(len(streams), PARALLEL_READS)) as pool:
            firsts = list(pool.map(lambda stream: next(stream, None), streams))
        streams = [chain([first], stream) if first is not None else iter(())
                   for first, stream in zip(firsts, streams)]
    current: list[tuple[Item, _Group]] = []
    name: bytes | None = None
    for this, item, group in heapq.merge(*streams, key=itemgetter(0)):
        if this != name and current:
            yield current
            current = []
        name = this
        current.append((item, group))
    if current:
        yield current


def _stream(trees: Sequence[RunTree], group: _Group, path: bytes,
            names: Collection[bytes] | None, budgets: list[int], failures: Failures
            ) -> Iterator[tuple[bytes, Item, _Group]]:
    tree = trees[group.reader]
    if names is None:
        items: Iterator[Item] = tree.items(group.ref, path)
    else:
        items = _named(tree, group.ref, path, sorted(names))
    count = 0
    try:
        for item in items:
            yield item.entry.path.rsplit(b"/", 1)[1], item, group
            count += 1
            if count == BUDGET_EVERY:
                if not _charge(trees, group, count, budgets, failures):
                    return
                count = 0
        _charge(trees, group, count, budgets, failures)
    except ManifestError as err:
        failures.add(group.runs, str(err))


def _named(tree: RunTree, ref: ChunkRef, path: bytes, names: list[bytes]) -> Iterator[Item]:
    for name in names:
        if b"/" in name or not name:
            continue
        item = tree.find(ref, path, name)
        if item is not None:
            yield item


def _charge(trees: Sequence[RunTree], group: _Group, count: int, budgets: list[int],
            failures: Failures) -> bool:
    """Count ``count`` entries against each run of the group; False when none
    of them may go on (each failed, or holds more entries than it declares)."""
    alive = False
    for run in failures.alive(group.runs):
        budgets[run] -= count
        if budgets[run] < 0:
            failures.add([run], f"{trees[run].where}: more entries than the run "
                         f"declares ({trees[run].root.entries})")
        else:
            alive = True
    return alive


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


__all__ = ["Failures", "Held", "PathLookup", "Pruner", "walk_union"]
