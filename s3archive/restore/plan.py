"""What a restore writes: the selected entries and the ranged GETs behind them.

Entries keep manifest order (component-wise sorted, so a directory comes
before its contents).  A selection of subtrees brings along the ``dir``
entries of its ancestors; a hardlink whose group file lies outside the
selection is restored as a copy of that file, and the rest of its group link
to that copy.

An :class:`EntryFilter` (``restore --include/--exclude``) narrows the
selection further: a pattern is matched against an entry's full path in the
run and against the paths of its ancestors, so a directory included (or
excluded) brings its whole subtree; exclude wins; the ancestors of what is
kept are restored as directories with their recorded metadata.  The patterns
themselves are compiled by the caller (``find.compile_pattern``: one matcher).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol, Sequence

from s3archive.errors import ManifestError, UsageError
from s3archive.format.manifest_codec import check_path, covered_bytes
from s3archive.format.model import (DIR, FILE, HARDLINK, BlobOpener, ChunkRef, Entry, Manifest,
                                    PackRef)
from s3archive.repo.run_tree import RunTree


@dataclass(frozen=True, slots=True)
class PlannedEntry:
    entry: Entry
    parts: tuple[bytes, ...]  # components below the target; () is the target itself
    link_to: tuple[bytes, ...] | None = None  # hardlinks: the restored group file
    kept: bool = True  # False: a directory that only comes along above what is restored
    problem: str | None = None  # why the entry cannot be restored (a bad hardlink)


def components(path: bytes) -> tuple[bytes, ...]:
    return tuple(p for p in path.split(b"/") if p)


def _parts(path: bytes) -> tuple[bytes, ...]:
    """:func:`components` of a path the run's decoder checked (absolute, normalised)."""
    return tuple(path[1:].split(b"/")) if path != b"/" else ()


def normalise_selection(raw: bytes) -> bytes:
    """``etc/ssh/`` -> ``/etc/ssh``; refuses ``..`` and the like."""
    path = b"/" + b"/".join(components(raw))
    problem = check_path(path)
    if problem:
        raise UsageError(f"cannot restore {raw!r}: {problem}")
    return path


@dataclass(frozen=True)
class Pattern:
    text: str  # as the user gave it, for messages
    matches: Callable[[bytes], bool]


@dataclass(frozen=True)
class EntryFilter:
    """Keep an entry when it or an ancestor matches an include (or there are
    none) and neither it nor an ancestor matches an exclude."""

    include: Sequence[Pattern] = ()
    exclude: Sequence[Pattern] = ()

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)


class _Verdicts:
    """Whether patterns match a path or one of its ancestors.

    The verdicts of the last path's ancestors are kept (entries come sorted,
    so the next path shares most of them): each entry costs one match per
    pattern, memory stays one path deep.  ``used`` marks the patterns that
    matched anything.
    """

    def __init__(self, patterns: Sequence[Pattern]):
        self.patterns = patterns
        self.used = [False] * len(patterns)
        self._root = self._own(b"/")
        self._chain: list[tuple[bytes, bool]] = []  # (name, verdict) from the top down

    def _own(self, path: bytes) -> bool:
        hit = False
        for number, pattern in enumerate(self.patterns):
            if pattern.matches(path):
                self.used[number] = hit = True
        return hit

    def under(self, path: bytes) -> bool:
        """``path`` or an ancestor of it matches."""
        parts = components(path)
        chain = self._chain
        common = 0
        while common < min(len(chain), len(parts)) and chain[common][0] == parts[common]:
            common += 1
        del chain[common:]
        verdict = chain[-1][1] if chain else self._root
        for depth in range(common, len(parts)):
            verdict = self._own(b"/" + b"/".join(parts[:depth + 1])) or verdict
            chain.append((parts[depth], verdict))
        return verdict


def _selected(path: bytes, selections: list[bytes]) -> bool:
    for sel in selections:
        if sel == b"/" or path == sel or path.startswith(sel + b"/"):
            return True
    return False


def _under_any(patterns: Sequence[Pattern], path: bytes) -> bool:
    """``path`` or an ancestor of it matches one of ``patterns`` (no memo, no marks)."""
    parts = components(path)
    return any(pattern.matches(b"/" + b"/".join(parts[:depth]))
               for depth in range(len(parts) + 1) for pattern in patterns)


# ------------------------------------------------------------------ sources

class EntrySource(Protocol):
    """The entries of one run a restore reads, in path order (component-wise)."""

    packs: list[PackRef]
    opener: BlobOpener | None

    def has(self, path: bytes) -> bool:
        """The run holds ``path``."""

    def entries(self, selections: list[bytes], complete: bool = True) -> Iterator[Entry]:
        """The recorded directories above each selection, then each selection's
        subtree, in path order; ``selections`` are normalised, sorted
        component-wise and none lies below another.  ``complete``: files carry
        their chunks (else a format-2 file may have none yet: its size and
        extents are right)."""

    def file(self, path: bytes) -> Entry | None:
        """The ``file`` entry at ``path`` with its chunks, or None (hardlink copies)."""

    def totals(self) -> tuple[int, int] | None:
        """(entries, bytes) of the whole run as the run states them, or None."""


class ManifestEntries:
    """A run read whole into a :class:`Manifest` (format 1; or a format-2 run read
    with ``load_manifest``)."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.packs = manifest.packs
        self.opener = manifest.opener
        self._files: dict[bytes, Entry] | None = None

    def has(self, path: bytes) -> bool:
        return any(e.path == path for e in self.manifest.entries)

    def entries(self, selections: list[bytes], complete: bool = True) -> Iterator[Entry]:
        above = {b"/" + b"/".join(components(sel)[:depth])
                 for sel in selections for depth in range(len(components(sel)))}
        for entry in self.manifest.entries:
            if _selected(entry.path, selections) or (entry.kind == DIR and entry.path in above):
                yield entry

    def file(self, path: bytes) -> Entry | None:
        if self._files is None:
            self._files = {e.path: e for e in self.manifest.entries if e.kind == FILE}
        return self._files.get(path)

    def totals(self) -> tuple[int, int] | None:
        return None  # the list is at hand: the plan counts it


class TreeEntries:
    """A format-2 run read from its tree as the restore goes: one directory's
    nodes at a time (repo/run_tree.py), never a list of the run's entries."""

    def __init__(self, tree: RunTree):
        self.tree = tree
        self.packs = tree.root.packs
        self.opener = tree.crypto

    def has(self, path: bytes) -> bool:
        return self.tree.lookup(path) is not None

    def entries(self, selections: list[bytes], complete: bool = True) -> Iterator[Entry]:
        tree = self.tree
        budget = tree.walk_budget()
        if b"/" in selections:
            yield from tree.walk(budget=budget, complete=complete)
            return
        done: set[bytes] = set()  # ancestors already given (depth-bounded per selection)
        for sel in selections:
            chain = tree.lookup_chain(sel)
            if chain is None:
                continue
            *above, item = chain
            for ancestor in above:
                if ancestor.entry.kind != DIR:
                    break
                if ancestor.entry.path not in done:
                    done.add(ancestor.entry.path)
                    yield ancestor.entry
            yield from tree.walk(item, budget, complete=complete)

    def file(self, path: bytes) -> Entry | None:
        item = self.tree.lookup(path)
        if item is None or item.entry.kind != FILE:
            return None
        return self.tree.complete(item)

    def totals(self) -> tuple[int, int] | None:
        stats = self.tree.root.trailer.stats
        return self.tree.root.entries, int(stats.get("bytes_total", 0))


def entry_source(run: "Manifest | RunTree | EntrySource") -> EntrySource:
    if isinstance(run, Manifest):
        return ManifestEntries(run)
    if isinstance(run, RunTree):
        return TreeEntries(run)
    return run


# ------------------------------------------------------------------ the plan

ENTRY_HELD = 2048  # bytes a planned entry is taken to hold (read-ahead accounting)


class RestorePlan:
    """The entries to restore, in path order, produced as they are read.

    :meth:`check` refuses what cannot be restored before anything is written:
    a selection not in the run, an include pattern that matches nothing in
    the selection, a filter that leaves nothing (an exclude pattern that
    matches nothing is only reported to ``warn``).  With a filter, a partial
    selection or ``count`` it reads the selection once without data (a
    format-2 run: its nodes, not its chunk lists) and knows the exact
    :attr:`totals`; otherwise the totals are the run's own (its root object's
    entry count and its trailer's logical bytes).

    Iterating yields :class:`PlannedEntry` items: a directory that is not
    restored in its own right comes along (with its recorded metadata) when it
    lies above a selection or above a kept entry; a hardlink whose group file
    is restored links to it, one whose group file is left out becomes a copy
    of that file and the rest of its group links to the copy.  Memory: the
    path being read (its ancestors) and the copies made for hardlinks.
    """

    def __init__(self, run: "Manifest | RunTree | EntrySource", selections: Iterable[bytes] = (),
                 entry_filter: EntryFilter = EntryFilter(),
                 warn: Callable[[bytes, str], None] | None = None):
        self.source = entry_source(run)
        selections = list(selections)
        self.given = bool(selections)
        chosen = sorted({normalise_selection(s) for s in selections}, key=components) or [b"/"]
        # a selection below another adds nothing
        self.chosen = [sel for sel in chosen
                       if not any(other != sel and _selected(sel, [other]) for other in chosen)]
        self.entry_filter = entry_filter
        self.warn = warn
        self.totals: tuple[int, int] | None = None
        self.odd_names: set[tuple[bytes, ...]] = set()  # planned names a restore could use itself

    def check(self, count: bool = False) -> None:
        missing = [sel for sel in self.chosen if sel != b"/" and not self.source.has(sel)]
        if missing:
            shown = ", ".join(m.decode("utf-8", "backslashreplace") for m in missing)
            raise UsageError(f"not in this run: {shown}")
        if not (self.entry_filter or count or self.given):
            self.totals = self.source.totals()
            if self.totals is not None:
                return
        flt = self.entry_filter
        includes, excludes = _Verdicts(flt.include), _Verdicts(flt.exclude)
        entries = size = kept = 0
        for item in self._plan(self.source.entries(self.chosen, complete=False),
                               includes, excludes):
            entries += 1
            if item.kept:
                kept += 1
            if item.entry.kind == FILE and item.link_to is None and item.problem is None:
                size += covered_bytes(item.entry)
            if item.parts and item.parts[-1].startswith(b".s3archive-"):
                self.odd_names.add(item.parts)
        self.totals = (entries, size)
        where = " below the paths given" if self.given else ""
        unmatched = [p.text for p, used in zip(flt.include, includes.used) if not used]
        if unmatched:
            raise UsageError("--include " + ", ".join(repr(t) for t in unmatched)
                             + f" matches nothing in this run{where}")
        if flt and not kept:
            raise UsageError(f"nothing to restore: every entry{where} is excluded")
        if self.warn is not None:
            for pattern, used in zip(flt.exclude, excludes.used):
                if not used:
                    self.warn(b"", f"--exclude {pattern.text!r} matches nothing in this "
                                   f"run{where}")

    def __iter__(self) -> Iterator[PlannedEntry]:
        flt = self.entry_filter
        return self._plan(self.source.entries(self.chosen), _Verdicts(flt.include),
                          _Verdicts(flt.exclude))

    def _keeps(self, path: bytes) -> bool:
        flt = self.entry_filter
        return (_selected(path, self.chosen)
                and (not flt.include or _under_any(flt.include, path))
                and not (flt.exclude and _under_any(flt.exclude, path)))

    def _plan(self, entries: Iterator[Entry], includes: "_Verdicts", excludes: "_Verdicts"
              ) -> Iterator[PlannedEntry]:
        flt = self.entry_filter
        above = {b"/" + b"/".join(components(sel)[:depth])
                 for sel in self.chosen for depth in range(len(components(sel)))}
        # recorded directories above the next entry, not yet given
        pending: list[tuple[Entry, tuple[bytes, ...]]] = []
        copies: dict[bytes, tuple[bytes, ...]] = {}  # group file left out -> its copy
        last: tuple[bytes, ...] | None = None
        everything = self.chosen == [b"/"]
        for entry in entries:
            key = _parts(entry.path)
            while pending and not _is_below(key, pending[-1][1]):
                pending.pop()
            if not everything and not _selected(entry.path, self.chosen):
                if entry.kind == DIR:
                    if entry.path in above:  # a selection's parents always come along
                        yield from _give(pending)
                        yield PlannedEntry(entry, key, kept=False)
                    else:
                        pending.append((entry, key))
                continue
            # both always evaluated: a pattern is "used" when it matches in the selection
            included = includes.under(entry.path) if flt.include else True
            excluded = excludes.under(entry.path) if flt.exclude else False
            if not included or excluded:
                if entry.kind == DIR:
                    pending.append((entry, key))
                continue
            yield from _give(pending)
            if last is not None and key <= last:
                raise ManifestError(f"{_shown(entry.path)}: entries out of path order")
            last = key
            if entry.kind != HARDLINK:
                yield PlannedEntry(entry, key)
                continue
            target = entry.target or b""
            if check_path(target) is not None or target == b"/":
                yield PlannedEntry(entry, key, problem=f"hardlink to {_shown(target)}: not a "
                                   "path of this run")
            elif target in copies:
                yield PlannedEntry(entry, key, copies[target])
            elif components(target) >= key:
                yield PlannedEntry(entry, key, problem=f"hardlink to {_shown(target)}, which "
                                   "is no earlier path")
            elif self._keeps(target):
                yield PlannedEntry(entry, key, components(target))
            else:
                source = self.source.file(target)
                if source is None:
                    yield PlannedEntry(entry, key, problem=f"hardlink to {_shown(target)}, "
                                       "which is no file in this run")
                    continue
                copies[target] = key
                yield PlannedEntry(dataclasses.replace(
                    entry, kind=FILE, size=source.size, chunks=source.chunks,
                    extents=source.extents, target=None), key)


def _is_below(key: tuple[bytes, ...], parent: tuple[bytes, ...]) -> bool:
    return len(key) > len(parent) and key[:len(parent)] == parent


def _give(pending: list[tuple[Entry, tuple[bytes, ...]]]) -> Iterator[PlannedEntry]:
    for entry, key in pending:
        yield PlannedEntry(entry, key, kept=False)
    pending.clear()


def _shown(path: bytes) -> str:
    return path[:200].decode("utf-8", "backslashreplace")


def plan_entries(manifest: "Manifest | RunTree | EntrySource", selections: Iterable[bytes] = (),
                 entry_filter: EntryFilter = EntryFilter(),
                 warn: Callable[[bytes, str], None] | None = None) -> list[PlannedEntry]:
    """The entries to restore, in path order, as a list (:class:`RestorePlan`,
    checked first): for small selections (``export``, ``cat``) and tests."""
    plan = RestorePlan(manifest, list(selections), entry_filter, warn)
    plan.check()
    return list(plan)


# ------------------------------------------------------------------ reads

def file_chunks(planned: Iterable[PlannedEntry],
                kept: dict[int, frozenset[int]] | None = None) -> Iterator[ChunkRef]:
    """Every chunk the restore writes, in the order the writer consumes them.

    ``kept`` (resume): by index into ``planned``, the chunks of a file that
    are already in place, left out.
    """
    kept = kept or {}
    for index, item in enumerate(planned):
        if item.entry.kind == FILE and item.link_to is None and item.problem is None:
            have = kept.get(index, frozenset())
            for number, ref in enumerate(item.entry.chunks):
                if number not in have:
                    yield ref
