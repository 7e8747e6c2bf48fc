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
from typing import Callable, Iterable, Iterator, Sequence

from s3archive.errors import UsageError
from s3archive.format.manifest_codec import check_path
from s3archive.format.model import DIR, FILE, HARDLINK, ChunkRef, Entry, Manifest


@dataclass(frozen=True, slots=True)
class PlannedEntry:
    entry: Entry
    parts: tuple[bytes, ...]  # components below the target; () is the target itself
    link_to: tuple[bytes, ...] | None = None  # hardlinks: the restored group file


def components(path: bytes) -> tuple[bytes, ...]:
    return tuple(p for p in path.split(b"/") if p)


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


def plan_entries(manifest: Manifest, selections: Iterable[bytes] = (),
                 entry_filter: EntryFilter = EntryFilter(),
                 warn: Callable[[bytes, str], None] | None = None) -> list[PlannedEntry]:
    """The entries to restore, in manifest order.

    Raises UsageError for a selection not in the run, an include pattern that
    matches nothing in the selection, or a filter that leaves nothing; an
    exclude pattern that matches nothing is only reported to ``warn``.
    """
    chosen = [normalise_selection(s) for s in selections] or [b"/"]
    found = {sel: False for sel in chosen}
    includes = _Verdicts(entry_filter.include)
    excludes = _Verdicts(entry_filter.exclude)
    keep = bytearray(len(manifest.entries))  # 1: restored in its own right
    for index, entry in enumerate(manifest.entries):
        if not _selected(entry.path, chosen):
            continue
        for sel in chosen:
            if entry.path == sel or sel == b"/" or entry.path.startswith(sel + b"/"):
                found[sel] = True
        # both always evaluated: a pattern is "used" when it matches in the selection
        included = includes.under(entry.path) if entry_filter.include else True
        excluded = excludes.under(entry.path) if entry_filter.exclude else False
        if included and not excluded:
            keep[index] = 1
    missing = [sel for sel, ok in found.items() if not ok and sel != b"/"]
    if missing:
        shown = ", ".join(m.decode("utf-8", "backslashreplace") for m in missing)
        raise UsageError(f"not in this run: {shown}")
    where = " below the paths given" if selections else ""
    unmatched = [p.text for p, used in zip(entry_filter.include, includes.used) if not used]
    if unmatched:
        raise UsageError("--include " + ", ".join(repr(t) for t in unmatched)
                         + f" matches nothing in this run{where}")
    if entry_filter and not any(keep):
        raise UsageError(f"nothing to restore: every entry{where} is excluded")
    if warn is not None:
        for pattern, used in zip(entry_filter.exclude, excludes.used):
            if not used:
                warn(b"", f"--exclude {pattern.text!r} matches nothing in this run{where}")
    ancestors = _ancestors(manifest, chosen, keep) if entry_filter else _ancestors(
        manifest, chosen, None)
    by_path = {e.path: e for e in manifest.entries if e.kind == FILE}
    planned: list[PlannedEntry] = []
    restored_as: dict[bytes, tuple[bytes, ...]] = {}  # group file path -> restored parts
    for index, entry in enumerate(manifest.entries):
        if not keep[index]:
            if entry.kind == DIR and entry.path in ancestors:
                planned.append(PlannedEntry(entry, components(entry.path)))
            continue
        parts = components(entry.path)
        if entry.kind == FILE:
            restored_as[entry.path] = parts
        elif entry.kind == HARDLINK:
            assert entry.target is not None
            if entry.target in restored_as:
                planned.append(PlannedEntry(entry, parts, restored_as[entry.target]))
                continue
            source = by_path[entry.target]
            entry = dataclasses.replace(entry, kind=FILE, size=source.size,
                                        chunks=source.chunks, extents=source.extents,
                                        target=None)
            restored_as[source.path] = parts
        planned.append(PlannedEntry(entry, parts))
    return planned


def _ancestors(manifest: Manifest, chosen: list[bytes], keep: bytearray | None) -> set[bytes]:
    """The paths of the directories above the selections and (with a filter)
    above every kept entry; only recorded directories are remembered."""
    result: set[bytes] = set()
    for sel in chosen:
        parts = components(sel)
        result.update(b"/" + b"/".join(parts[:i]) for i in range(len(parts)))
    if keep is None:
        return result
    dirs = {e.path for e in manifest.entries if e.kind == DIR}
    for index, entry in enumerate(manifest.entries):
        if not keep[index]:
            continue
        path = entry.path
        while path != b"/":
            path = path.rsplit(b"/", 1)[0] or b"/"
            if path in result:
                break
            if path in dirs:
                result.add(path)
    return result


# ------------------------------------------------------------------ reads

def file_chunks(planned: list[PlannedEntry],
                kept: dict[int, frozenset[int]] | None = None) -> Iterator[ChunkRef]:
    """Every chunk the restore writes, in the order the writer consumes them.

    ``kept`` (resume): by index into ``planned``, the chunks of a file that
    are already in place, left out.
    """
    kept = kept or {}
    for index, item in enumerate(planned):
        if item.entry.kind == FILE and item.link_to is None:
            have = kept.get(index, frozenset())
            for number, ref in enumerate(item.entry.chunks):
                if number not in have:
                    yield ref
