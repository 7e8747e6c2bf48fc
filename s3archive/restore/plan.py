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

@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One ranged GET of a pinned pack version, covering ``chunks`` in order."""

    pack: int
    first: int  # inclusive byte range
    last: int
    chunks: tuple[ChunkRef, ...]

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    @property
    def plain(self) -> int:
        return sum(c.size for c in self.chunks)


def file_chunks(planned: Iterable[PlannedEntry]) -> Iterator[ChunkRef]:
    """Every chunk the restore writes, in the order the writer consumes them."""
    for item in planned:
        if item.entry.kind == FILE and item.link_to is None:
            yield from item.entry.chunks


def merge_reads(chunks: Iterable[ChunkRef], max_request: int = 8 << 20,
                max_gap: int = 0) -> Iterator[ReadRequest]:
    """Consecutive chunks that lie back to back (up to ``max_gap`` apart) in one
    pack become one ranged GET of at most ``max_request`` bytes."""
    pack = -1
    first = last = 0
    group: list[ChunkRef] = []
    for ref in chunks:
        end = ref.offset + ref.stored - 1
        if (group and ref.pack == pack and last < ref.offset <= last + 1 + max_gap
                and end - first + 1 <= max_request):  # (an overlap starts a new request)
            group.append(ref)
            last = end
            continue
        if group:
            yield ReadRequest(pack, first, last, tuple(group))
        pack, first, last, group = ref.pack, ref.offset, end, [ref]
    if group:
        yield ReadRequest(pack, first, last, tuple(group))


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """Chunks in the order the writer needs them, and the GETs that fetch them.

    The archiver packs chunks in the order its workers finish them, which is
    close to, but not exactly, path order; and dedup points back to older
    packs.  Sorting a batch's distinct chunks by (pack, offset) before merging
    turns that into few large ranged GETs; the batch bounds what is held.
    """

    chunks: tuple[ChunkRef, ...]
    requests: tuple[ReadRequest, ...]


def batched_reads(chunks: Iterable[ChunkRef], batch_bytes: int = 32 << 20,
                  max_request: int = 8 << 20, max_gap: int = 256 << 10) -> Iterator[ReadBatch]:
    batch: list[ChunkRef] = []
    distinct: dict[tuple[int, int], ChunkRef] = {}
    held = 0

    def flush() -> ReadBatch:
        ordered = sorted(distinct.values(), key=lambda c: (c.pack, c.offset))
        return ReadBatch(tuple(batch), tuple(merge_reads(ordered, max_request, max_gap)))

    for ref in chunks:
        batch.append(ref)
        if (ref.pack, ref.offset) not in distinct:
            distinct[(ref.pack, ref.offset)] = ref
            held += ref.size
        if held >= batch_bytes:
            yield flush()
            batch, distinct, held = [], {}, 0
    if batch:
        yield flush()
