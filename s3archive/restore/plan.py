"""What a restore writes: the selected entries and the ranged GETs behind them.

Entries keep manifest order (component-wise sorted, so a directory comes
before its contents).  A selection of subtrees brings along the ``dir``
entries of its ancestors; a hardlink whose group file lies outside the
selection is restored as a copy of that file, and the rest of its group link
to that copy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Iterator

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


def _selected(path: bytes, selections: list[bytes]) -> bool:
    for sel in selections:
        if sel == b"/" or path == sel or path.startswith(sel + b"/"):
            return True
    return False


def plan_entries(manifest: Manifest, selections: Iterable[bytes] = ()) -> list[PlannedEntry]:
    """The entries to restore, in manifest order."""
    chosen = [normalise_selection(s) for s in selections] or [b"/"]
    ancestors: set[bytes] = set()
    for sel in chosen:
        parts = components(sel)
        ancestors.update(b"/" + b"/".join(parts[:i]) for i in range(len(parts)))
    by_path = {e.path: e for e in manifest.entries if e.kind == FILE}
    found = {sel: False for sel in chosen}
    planned: list[PlannedEntry] = []
    restored_as: dict[bytes, tuple[bytes, ...]] = {}  # group file path -> restored parts
    for entry in manifest.entries:
        inside = _selected(entry.path, chosen)
        if not inside:
            if entry.kind == DIR and entry.path in ancestors:
                planned.append(PlannedEntry(entry, components(entry.path)))
            continue
        for sel in chosen:
            if entry.path == sel or sel == b"/" or entry.path.startswith(sel + b"/"):
                found[sel] = True
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
    missing = [sel for sel, ok in found.items() if not ok and sel != b"/"]
    if missing:
        shown = ", ".join(m.decode("utf-8", "backslashreplace") for m in missing)
        raise UsageError(f"not in this run: {shown}")
    return planned


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
