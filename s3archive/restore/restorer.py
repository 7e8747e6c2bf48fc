"""Restore a run (or chosen subtrees of it) into a target directory.

The plan lists the entries in manifest order; the chunks of its files are
fetched as merged ranged GETs of the pinned pack versions, in parallel within
a memory window, checked against their SHA-256 and written in the same order;
a file with at least ``DIRECT_BYTES`` to fetch is written by the GET threads of
``direct`` instead (each chunk verified before it is written), consecutive
such files together, while this thread goes on with the next entries; each
such file ends here (metadata, moved into place, counted) once its GETs have,
its directories' metadata waits for it, and entries are told (progress,
``listed``) in path order all the same.
A bad chunk damages only its file: the file is named, everything else is
restored, and the report says the restore failed.

``resume`` finishes an interrupted restore in the same target: the files
already there are read back first and every chunk that matches its hash is
kept, so only the rest is downloaded; everything else is created again and
all metadata applied again (see ``tree``).

Progress is reported through :class:`s3archive.progress.Progress`, with the
totals taken from the plan before anything is written; ``listed`` hears each
entry restored (``restore -v``).  :func:`preview_restore` (``--dry-run``)
plans the same restore and counts the ranged GETs it would issue, without
touching the target.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from s3archive.errors import IntegrityError, TransportError, UsageError
from s3archive.restore.apply import MetadataApplier
from s3archive.restore.direct import (DIRECT_BYTES, GROUP_BYTES, GROUP_FILES, DirectFile,
                                      DirectOutcome, DirectWriter, Placed, direct_threads,
                                      group_reads, placed)
from s3archive.format.model import DIR, FILE, ChunkRef, Entry, Manifest, Snapshot
from s3archive.progress import Progress
from s3archive.repo.pack_reader import (DEFAULT_WINDOW, DEFAULT_WORKERS, ChunkResult, PackReader,
                                        ReadBatch, batched_reads, read_batch)
from s3archive.repo.run_tree import RunTree
from s3archive.restore.plan import (ENTRY_HELD, EntryFilter, EntrySource, PlannedEntry,
                                    RestorePlan, file_chunks)
from s3archive.restore.tree import EntryFailed, FileResult, OpenFile, TreeWriter
from s3archive.store.base import StoreReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    path: bytes
    message: str


@dataclass
class RestoreReport:
    target: str
    entries: int = 0
    files: int = 0
    bytes_written: int = 0
    bytes_kept: int = 0  # (resume) plain bytes found already restored and verified
    seconds: float = 0.0
    damaged: list[Problem] = field(default_factory=list)  # files with bad or missing chunks
    # entries not restored at all, or files whose bytes the store could not deliver
    failed: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # metadata not applied
    store: dict[str, Any] = field(default_factory=dict)  # requests and bytes

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.failed


@dataclass(frozen=True)
class RestoreOptions:
    overwrite: bool = False
    resume: bool = False
    numeric_owner: bool = False
    workers: int = DEFAULT_WORKERS
    window: int = DEFAULT_WINDOW


@dataclass(frozen=True)
class RestorePreview:
    """What a restore would do (``--dry-run``): nothing is read from packs or written.

    ``download_bytes`` is the sum of the ranged GETs the pack reader would
    issue (:func:`batched_reads`, the same planning :meth:`PackReader.chunks`
    does): each distinct chunk's stored bytes once per batch, plus the gaps
    of up to 256 KiB it merges across, so it is what the restore downloads
    from the packs when no GET has to be repeated.
    """

    entries: int  # entries restored (directories that come along included)
    files: int  # regular files written (a hardlink whose group file is left out counts)
    bytes: int  # plain bytes written into files
    download_bytes: int
    requests: int  # ranged GETs
    warnings: list[Problem]


def preview_restore(run: Manifest | RunTree | EntrySource, selections: Iterable[bytes] = (),
                    entry_filter: EntryFilter = EntryFilter(),
                    listed: Callable[[bytes], None] | None = None) -> RestorePreview:
    """Plan the restore and count what it would write and download; ``listed``
    hears each entry's path as it is planned (nothing is held per entry)."""
    warnings: list[Problem] = []
    plan = RestorePlan(run, selections, entry_filter,
                       lambda path, message: warnings.append(Problem(path, message)))
    plan.check()
    counts = [0, 0]  # entries, files

    def planned() -> Iterator[PlannedEntry]:
        for item in plan:
            counts[0] += 1
            if item.entry.kind == FILE and item.link_to is None and item.problem is None:
                counts[1] += 1
            if listed is not None:
                listed(item.entry.path)
            yield item

    plain = downloaded = requests = 0
    # the larger files as the restore fetches them: consecutive ones together, apart
    # from the rest (direct.py)
    group: list[ChunkRef] = []
    group_files = group_bytes = 0

    def count(batch: ReadBatch) -> None:
        nonlocal plain, downloaded, requests
        plain += sum(ref.size for ref in batch.chunks)
        downloaded += sum(request.length for request in batch.requests)
        requests += len(batch.requests)

    def fetch_group() -> None:
        nonlocal group_files, group_bytes
        if group:
            count(group_reads(group))
        group.clear()
        group_files = group_bytes = 0

    def others() -> Iterator[PlannedEntry]:
        nonlocal group_files, group_bytes
        for item in planned():
            if _direct(item):
                group.extend(item.entry.chunks)
                group_files += 1
                group_bytes += item.entry.size
                if group_files >= GROUP_FILES or group_bytes >= GROUP_BYTES:
                    fetch_group()
                continue
            fetch_group()
            yield item
        fetch_group()

    for batch in batched_reads(file_chunks(others()), BATCH_BYTES):
        count(batch)
    return RestorePreview(counts[0], counts[1], plain, downloaded, requests, warnings)


# The smaller files' chunks come through batches held whole until written: bounds
# measured on 20 000 small files (bench_scale.py): peak RSS 89 MiB with a 32 MiB window
# and batches of 4096 entries, 72 MiB with an 8 MiB window, 59 MiB with batches of 1024
# too, at the same CPU; the main thread still never waited for a GET.
ORDERED_WINDOW = 8 << 20  # bytes the batches' GETs hold at most (stored, plain, entries)
BATCH_BYTES = 4 << 20  # plain bytes of chunks a batch of the restore asks for at most
BATCH_ENTRIES = 1024  # entries a batch covers at most (directories, empty files ...)
TOLD_HELD = 16384  # entries restored whose telling waits for a file before them, at most

ChunkStream = Iterator[tuple[ChunkRef, "bytes | memoryview | None", "str | None"]]


def restore_run(store: StoreReader, run: Manifest | RunTree | EntrySource, target: Path,
                selections: Iterable[bytes] = (),
                options: RestoreOptions = RestoreOptions(),
                entry_filter: EntryFilter = EntryFilter(),
                progress: Progress | None = None,
                listed: Callable[[bytes], None] | None = None) -> RestoreReport:
    """Restore the selected entries into ``target``; ``listed`` hears each one restored.

    The run is read as the restore goes (a format-2 run: directory by
    directory): entries are planned in batches of at most ``BATCH_BYTES`` of
    chunks or ``BATCH_ENTRIES`` entries, each batch's chunks fetched as merged
    ranged GETs sorted by pack and offset, later batches fetched while earlier
    ones are written, within ``ORDERED_WINDOW`` (or the smaller window asked
    for); a batch also ends after the files written directly that come before
    a smaller one, so that those go to their threads at once.  Memory does not
    grow with the run: the batches in flight, the path being written, the
    copies made for hardlinks.
    """
    began = time.monotonic()
    progress = progress or Progress()
    report = RestoreReport(target=str(target))
    seen_warnings: set[tuple[bytes, str]] = set()

    def warn(path: bytes, message: str) -> None:
        if (path, message) not in seen_warnings:
            seen_warnings.add((path, message))
            report.warnings.append(Problem(path, message))

    plan = RestorePlan(run, selections, entry_filter, warn)
    plan.check(count=options.resume)

    applier = MetadataApplier(warn, numeric_owner=options.numeric_owner)
    if not applier.is_root:
        warn(b"", "not running as root: owners are not restored, files belong to the "
                  "restoring user")
    damaged: dict[tuple[bytes, ...], bytes] = {}  # restored parts -> path of damaged files
    opener = plan.source.opener
    chunk_id = opener.data_id if opener is not None else None
    with TreeWriter(target, applier, overwrite=options.overwrite, resume=options.resume,
                    chunk_id=chunk_id) as tree, progress, ExitStack() as tree_stack:
        if options.resume:
            tree.remove_stray_temporaries(plan.odd_names)
        reader = PackReader(store, plan.source.packs, options.workers,
                            min(options.window, ORDERED_WINDOW), opener)
        # larger files: their GET threads write them (direct.py), outside the batches,
        # several at a time while this thread goes on; each ends here when its GETs have
        writing: dict[int, OpenFile] = {}

        def give_up_writing() -> None:  # (the restore stops) after the threads stopped
            for opened in writing.values():
                tree.discard_file(opened)
            writing.clear()
        tree_stack.callback(give_up_writing)
        direct: DirectWriter[OpenFile] = tree_stack.enter_context(
            DirectWriter(reader, direct_threads(options.workers), options.window))

        def end_file(work: DirectFile[OpenFile]) -> None:
            opened = work.tag
            del writing[opened.token]
            entry = opened.item.entry
            progress.end(entry.path)
            try:
                written = tree.finish_file(opened, work.error)
            except (EntryFailed, OSError) as err:
                message = str(err) if isinstance(err, EntryFailed) else err.strerror or str(err)
                report.failed.append(Problem(entry.path, message))
                slot = told.pop(opened.token)
                slot[0], slot[3] = None, True  # not restored: not told
                tell_done()
                return
            _count_file(report, damaged, opened.item, written, work.outcome.transport)
            told.pop(opened.token)[3] = True
            tell_done()

        # Entries restored are told (progress, ``listed``) in path order: those after a
        # file still being written wait for it, [kind, path, size, ended] each (kind None:
        # not told), at most TOLD_HELD (then this thread waits for the files)
        telling: deque[list[Any]] = deque()
        told: dict[int, list[Any]] = {}  # a file being written -> its place in ``telling``

        def tell(kind: str, path: bytes, size: int) -> None:
            progress.entry(kind, path, size)
            if listed is not None:
                listed(path)

        def tell_done() -> None:
            while telling and telling[0][3]:
                kind, path, size, _ = telling.popleft()
                if kind is not None:
                    tell(kind, path, size)

        # files opened for the direct path, started together (their GETs shared)
        group: list[tuple[int, Entry, Placed, FileResult, DirectOutcome, OpenFile]] = []
        group_bytes = [0]

        def start_group() -> None:
            if group:
                direct.start(group, progress.read)
                group.clear()
                group_bytes[0] = 0

        def end_files(wait: bool = False) -> None:
            """The files whose GETs ended (``wait``: at least one, the group started)."""
            if wait:
                start_group()
                if not direct.under_way:  # (never: a file opened is started) no hang
                    raise AssertionError(f"{len(writing)} files opened and never started")
            for work in direct.finished(wait):
                end_file(work)
        unread = [False]  # the current file met chunks the store could not deliver
        progress.phase("restoring", plan.totals)
        # each batch's entries, with (resume) the chunks of each file already in place
        # and whether the file is written directly
        planned: deque[list[tuple[PlannedEntry, frozenset[int], bool]]] = deque()

        def batches() -> Iterator[ReadBatch]:
            items: list[tuple[PlannedEntry, frozenset[int], bool]] = []
            refs: list[ChunkRef] = []
            held = 0
            direct_last = False  # a file written directly since the batch's last chunk
            for item in plan:
                have: frozenset[int] = frozenset()
                if _writes_data(item) and options.resume and item.entry.chunks:
                    have = tree.survey_file(item)
                large = _direct(item, have)
                if direct_last and _writes_data(item) and not large:
                    # the batch ends before this file's chunks: the files written directly
                    # in it go to their threads once the chunks before them are in, not
                    # once this file's are
                    planned.append(items)
                    yield read_batch(refs, len(items) * ENTRY_HELD)
                    items, refs, held = [], [], 0
                direct_last = large or (direct_last and not _writes_data(item))
                items.append((item, have, large))
                if _writes_data(item) and not large:
                    for number, ref in enumerate(item.entry.chunks):
                        if number in have:
                            continue
                        refs.append(ref)
                        held += ref.size
                        if held >= BATCH_BYTES:
                            planned.append(items)
                            yield read_batch(refs, len(items) * ENTRY_HELD)
                            items, refs, held = [], [], 0
                if len(items) >= BATCH_ENTRIES:
                    planned.append(items)
                    yield read_batch(refs, len(items) * ENTRY_HELD)
                    items, refs, held = [], [], 0
            planned.append(items)
            yield read_batch(refs, len(items) * ENTRY_HELD)

        fetched = reader.batches(batches())
        items: deque[tuple[PlannedEntry, frozenset[int], bool]] = deque()
        results: deque[ChunkResult] = deque()

        def more() -> bool:
            """The next batch: its entries and its chunks' results, queued."""
            start_group()  # the files opened so far are written while this thread waits
            got = next(fetched, None)
            if got is None:
                return False
            items.extend(planned.popleft())
            results.extend(got[1])
            return True

        def chunk_results() -> ChunkStream:
            while True:
                while not results:
                    if not more():
                        return
                r = results.popleft()
                unread[0] = unread[0] or r.transport
                progress.read(r.ref.size)  # handed to the writer
                yield r.ref, r.data, r.error

        stream = chunk_results()
        while True:
            if direct.any_finished:
                end_files()
            if not items:
                if more():
                    continue  # (a batch may hold only the rest of a large file's chunks)
                break
            item, have, large = items.popleft()
            if group and not large:
                start_group()
            entry = item.entry
            report.entries += 1
            try:
                tree.leave_dirs(item.parts)
                if item.problem is not None:
                    raise EntryFailed(item.problem)
                if entry.kind == DIR:
                    tree.make_dir(item)
                elif large:
                    while direct.full:
                        end_files(wait=True)
                    result = FileResult()
                    where = placed(entry, have, result)
                    opened = tree.open_file(item, bool(have))
                    opened.result = result
                    writing[opened.token] = opened
                    try:  # its size first: the GETs land in any order (holes stay holes)
                        os.ftruncate(opened.fd, entry.size)
                    except OSError as err:
                        del writing[opened.token]
                        tree.finish_file(opened, err)  # raises EntryFailed
                    progress.begin(entry.path)
                    told[opened.token] = [entry.kind, entry.path, entry.size, False]
                    telling.append(told[opened.token])
                    group.append((opened.fd, entry, where, result, DirectOutcome(), opened))
                    group_bytes[0] += entry.size
                    if len(group) >= GROUP_FILES or group_bytes[0] >= GROUP_BYTES:
                        start_group()
                    continue  # counted when it ends (end_file)
                elif _writes_data(item):
                    mine = itertools.islice(stream, len(entry.chunks) - len(have))
                    unread[0] = False
                    progress.begin(entry.path)
                    try:
                        written = tree.write_file(item, mine, have)
                    finally:
                        for _ in mine:  # keep the stream aligned after a failure
                            pass
                        progress.end(entry.path)
                    _count_file(report, damaged, item, written, unread[0])
                elif item.link_to is not None:
                    while writing:  # the file linked to may be one of them
                        end_files(wait=True)
                    tree.make_hardlink(item)
                    if item.link_to in damaged:
                        report.damaged.append(Problem(entry.path, "another name of the damaged "
                                                      f"{damaged[item.link_to]!r}"))
                else:
                    tree.make_special(item)
            except EntryFailed as err:
                report.failed.append(Problem(entry.path, str(err)))
                continue
            except OSError as err:
                report.failed.append(Problem(entry.path, err.strerror or str(err)))
                continue
            if telling:
                telling.append([entry.kind, entry.path, entry.size, True])
                while len(telling) > TOLD_HELD:
                    end_files(wait=True)
            else:
                tell(entry.kind, entry.path, entry.size)
        while writing:
            end_files(wait=True)
        tree.finish_dirs(lambda path, msg: report.failed.append(Problem(path, msg)))
    report.seconds = time.monotonic() - began
    usage = store.usage()
    if usage is not None:
        report.store = usage.to_json()
    return report


def _count_file(report: RestoreReport, damaged: dict[tuple[bytes, ...], bytes],
                item: PlannedEntry, written: FileResult, unread: bool) -> None:
    """A file written: its bytes in the report, its damage named (``unread``: some
    chunks could not be read, which says nothing about the data: failed, not damaged)."""
    report.files += 1
    report.bytes_written += written.written
    report.bytes_kept += written.kept
    if written.damage:
        (report.failed if unread else report.damaged).append(
            Problem(item.entry.path, "; ".join(written.damage[:3])))
        damaged[item.parts] = item.entry.path


def _direct(item: PlannedEntry, have: frozenset[int] = frozenset()) -> bool:
    """A file written by the direct path: at least ``DIRECT_BYTES`` to fetch (but the
    chunks ``have``, already in place)."""
    return (_writes_data(item) and item.entry.size >= DIRECT_BYTES
            and sum(ref.size for number, ref in enumerate(item.entry.chunks)
                    if number not in have) >= DIRECT_BYTES)


def _writes_data(item: PlannedEntry) -> bool:
    """A regular file whose bytes the restore writes (not a link to one restored)."""
    return item.entry.kind == FILE and item.link_to is None and item.problem is None


def snapshot_stream(store: StoreReader, manifest: Manifest, name: str,
                    workers: int = DEFAULT_WORKERS,
                    window: int = DEFAULT_WINDOW) -> Iterator[bytes | memoryview]:
    """The bytes of snapshot ``name``, verified chunk by chunk.

    A bad chunk raises IntegrityError after the good bytes before it; a chunk
    the store could not deliver, TransportError.
    """
    snap = find_snapshot(manifest, name)
    for result in PackReader(store, manifest.packs, workers, window,
                             manifest.opener).chunks(snap.chunks):
        if result.data is None:
            failure = TransportError if result.transport else IntegrityError
            raise failure(f"snapshot {name}: {result.error}")
        yield result.data


def find_snapshot(manifest: Manifest, name: str) -> Snapshot:
    snap = next((s for s in manifest.snapshots if s.name == name), None)
    if snap is None:
        names = ", ".join(s.name for s in manifest.snapshots) or "none"
        raise UsageError(f"no snapshot {name!r} in run {manifest.header.run_id} "
                         f"(snapshots: {names})")
    return snap
