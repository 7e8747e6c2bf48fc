"""Files written by the GET threads themselves, several at a time, in parallel.

The restore's ordered path hands every chunk to the main thread in file
order, so the bytes of each GET wait in memory until the writer reaches them,
and the read window (stored plus plain bytes) lets only one or two GETs of
compressible data run at once.  A file with at least ``DIRECT_BYTES`` to
fetch instead is opened (and sized: holes stay holes) by the main thread and
handed here (:meth:`DirectWriter.start`), consecutive such files together
(up to ``GROUP_FILES`` / ``GROUP_BYTES``): their chunks are fetched as shared
ranged GETs of at most ``DIRECT_REQUEST`` bytes, so files back to back in a
pack cost one GET, not one each.  The thread that fetched a GET decodes each
chunk, checks its hash (:meth:`PackReader.fetch`: never unverified bytes)
and ``pwrite``s it into every file that holds it before decoding the next,
so no more than one plain chunk per thread is held.  The window counts each
GET's stored bytes plus its largest chunk; the GETs of small groups go
first.  The main thread goes on with the next entries meanwhile and takes
each file back once every GET of it has ended (:meth:`DirectWriter.finished`):
only then is the file's descriptor closed, so no thread ever writes to a
closed (or reused) descriptor.  At most ``MAX_FILES`` files are under way at
once.  A ``pwrite`` error gives up that file (its later GETs are skipped, the
other files of its GETs go on) and is handed back with it.
"""

from __future__ import annotations

import heapq
import itertools
import os
import resource
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generic, Iterable, TypeVar

from s3archive.format.model import ChunkRef, Entry
from s3archive.repo.pack_reader import ChunkResult, PackReader, ReadBatch, ReadRequest, read_batch
from s3archive.restore.tree import FileResult, chunk_spans, pwrite_all

DIRECT_BYTES = 128 << 10  # a file with at least this many bytes to fetch is written directly
DIRECT_REQUEST = 4 << 20  # bytes of one ranged GET of a directly written file
# files under way at once (each holds a descriptor): a quarter of the descriptors allowed
MAX_FILES = max(8, min(256, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4))
MAX_BYTES = 1 << 30  # ... or files of this many bytes at most (each file's chunk list is held)
GROUP_FILES = 16  # files started together at most (their GETs shared)
GROUP_BYTES = 16 << 20  # ... with at most this many bytes to fetch
_WRITTEN = b""  # a result whose bytes were written (and dropped) by the fetching thread

T = TypeVar("T")


Placed = dict[ChunkRef, list[tuple[int, int, int]]]  # chunk -> (file offset, offset in it, length)


def placed(entry: Entry, kept: frozenset[int], result: FileResult) -> Placed:
    """Where each of ``entry``'s chunks to fetch goes; the ``kept`` ones (resume) are
    counted in ``result``.  :class:`EntryFailed` when its chunks do not fit its extents."""
    spans = chunk_spans(entry)
    where: Placed = {}
    for index, ref in enumerate(entry.chunks):
        if index in kept:
            result.kept += ref.size
        else:
            where.setdefault(ref, []).extend(spans[index])
    return where


def group_reads(refs: Iterable[ChunkRef], max_request: int | None = None) -> ReadBatch:
    """The ranged GETs that fetch a group's chunks (``restore --dry-run`` counts them)."""
    return read_batch(refs, max_request=max_request or DIRECT_REQUEST)


def direct_threads(workers: int) -> int:
    """Threads for the direct path: ``workers``, but no more than one per core and
    one more.  Their work (socket reads, zstd, SHA-256, pwrite) runs without the GIL,
    but each step between takes it again: more threads than cores only contend
    for it with the main thread, which writes the small files meanwhile."""
    return max(2, min(workers, (os.cpu_count() or 1) + 1))


@dataclass
class DirectOutcome:
    """What the GETs of one file did, beyond ``FileResult``."""

    transport: bool = False  # some bytes could not be read (says nothing about the data)


@dataclass(eq=False)
class DirectFile(Generic[T]):
    """One file under way; ``tag`` is the caller's (what it needs to finish the file)."""

    tag: T
    fd: int
    entry: Entry
    result: FileResult
    outcome: DirectOutcome
    where: Placed
    failures: dict[ChunkRef, str] = field(default_factory=dict)  # the group's
    left: int = 0  # GETs not yet ended
    error: OSError | None = None  # a write failed: the file is given up
    crash: BaseException | None = None  # anything else a worker met (a bug): re-raised

    def conclude(self) -> None:
        """Every GET ended: say in ``result`` what was written and damaged."""
        damage: list[tuple[int, str]] = []
        for ref, pieces in self.where.items():
            if ref in self.failures:
                damage.extend((offset, f"bytes {offset}-{offset + length - 1}: "
                               f"{self.failures[ref]}") for offset, _, length in pieces)
            else:
                self.result.written += sum(length for _, _, length in pieces)
        self.result.damage.extend(text for _, text in sorted(damage))


class _Group(Generic[T]):
    """Files started together: their chunks fetched by shared GETs, so files that lie
    back to back in a pack cost one GET, not one each."""

    def __init__(self, files: list[DirectFile[T]], read: Callable[[int], None] | None):
        self.files = files
        self.read = read
        self.failures: dict[ChunkRef, str] = {}
        # chunk -> (file, file offset, offset in the chunk, length) for every file
        self.targets: dict[ChunkRef, list[tuple[DirectFile[T], int, int, int]]] = {}
        for work in files:
            work.failures = self.failures
            for ref, pieces in work.where.items():
                self.targets.setdefault(ref, []).extend(
                    (work, offset, start, length) for offset, start, length in pieces)

    def sink(self, got: ChunkResult) -> ChunkResult:
        """(on a GET thread) A verified chunk: written into each file that holds it."""
        assert got.data is not None
        view = memoryview(got.data)
        written = 0
        for work, offset, start, length in self.targets[got.ref]:
            if work.error is None:
                try:
                    pwrite_all(work.fd, view[start:start + length], offset)
                except OSError as err:  # the file is given up; the others go on
                    work.error = err
                else:
                    written += length
        if written and self.read is not None:
            self.read(written)
        return ChunkResult(got.ref, _WRITTEN)

    def files_of(self, request: ReadRequest) -> list[DirectFile[T]]:
        return list({work: None for ref in request.chunks
                     for work, _, _, _ in self.targets[ref]})


class DirectWriter(Generic[T]):
    """Writes files' chunks from the GET threads (one set of threads for the restore)."""

    def __init__(self, reader: PackReader, workers: int, window: int,
                 max_request: int | None = None, max_files: int | None = None):
        self.reader = reader
        self.workers = max(1, workers)
        self.window = window
        self.max_request = max_request
        self.max_files = max(1, max_files or MAX_FILES)
        self._cond = threading.Condition()
        # GETs not yet begun: (GETs of their group, sequence, group, request, window cost);
        # the GETs of small groups go first, so that a few large files do not hold up
        # the many smaller ones started after them (and with them the main thread)
        self._queue: list[tuple[int, int, _Group[T], ReadRequest, int]] = []
        self._sequence = itertools.count()
        self._in_flight = 0  # window bytes of the GETs running
        self._under_way = 0  # files started and not yet handed back
        self._under_way_bytes = 0  # ... their sizes
        self._ended: deque[DirectFile[T]] = deque()  # every GET ended, not yet handed back
        self._closing = False
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop: GETs not yet begun are dropped, running ones end; returns after
        every thread has stopped (nothing writes to any descriptor afterwards)."""
        with self._cond:
            self._closing = True
            self._queue.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def __enter__(self) -> "DirectWriter[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- the caller

    @property
    def under_way(self) -> int:
        """Files started and not yet handed back by :meth:`finished`."""
        return self._under_way

    @property
    def any_finished(self) -> bool:
        """A hint (no lock): some file may be ready for :meth:`finished`."""
        return bool(self._ended)

    @property
    def full(self) -> bool:
        """No more files now: ``max_files`` under way, or ``MAX_BYTES`` of them (their
        chunk lists are held; a larger file is started alone)."""
        return self._under_way >= self.max_files or (
            self._under_way > 0 and self._under_way_bytes >= MAX_BYTES)

    def start(self, files: list[tuple[int, Entry, Placed, FileResult, DirectOutcome, T]],
              read: Callable[[int], None] | None = None) -> None:
        """Write each ``(fd, entry, where, result, outcome, tag)``'s chunks (``where``:
        :func:`placed`) into ``fd`` from the GET threads, the files fetched together; each comes back
        from :meth:`finished` with ``result`` and ``outcome`` filled in.  ``read``
        hears the plain bytes written.  Each file has its size already (the GETs
        land in any order; holes stay holes)."""
        group_files = [DirectFile(tag, fd, entry, result, outcome, where)
                       for fd, entry, where, result, outcome, tag in files]
        group = _Group(group_files, read)
        requests = group_reads(group.targets, self.max_request).requests
        with self._cond:
            self._under_way += len(group_files)
            self._under_way_bytes += sum(work.entry.size for work in group_files)
            for request in requests:
                for work in group.files_of(request):
                    work.left += 1
                heapq.heappush(self._queue, (
                    len(requests), next(self._sequence), group, request,
                    request.length + max(ref.size for ref in request.chunks)))
            for work in group_files:
                self._end_if_done(work)
            self._cond.notify_all()
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._work, name="s3archive-write", daemon=True)
            thread.start()
            self._threads.append(thread)

    def finished(self, wait: bool = False) -> list[DirectFile[T]]:
        """The files whose GETs have all ended (``wait``: at least one, if any is
        under way).  A worker's unexpected exception is raised here."""
        with self._cond:
            while wait and not self._ended and self._under_way:
                self._cond.wait()
            done = list(self._ended)
            self._ended.clear()
            self._under_way -= len(done)
            self._under_way_bytes -= sum(work.entry.size for work in done)
        for work in done:
            if work.crash is not None:
                raise work.crash
        return done

    # --------------------------------------------------------------- the threads

    def _end_if_done(self, work: DirectFile[T]) -> None:
        """(under the lock) ``work`` is concluded once none of its GETs is left."""
        if not work.left:
            work.conclude()
            self._ended.append(work)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not (
                        self._queue and (not self._in_flight
                                         or self._in_flight + self._queue[0][4] <= self.window)):
                    self._cond.wait()
                if self._closing:
                    return
                _, _, group, request, cost = heapq.heappop(self._queue)
                self._in_flight += cost
            files = group.files_of(request)
            results: list[ChunkResult] = []
            crash: BaseException | None = None
            try:
                if any(work.error is None and work.crash is None for work in files):
                    results = self.reader.fetch(request, group.sink)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                crash = err
            with self._cond:
                for got in results:
                    if got.error is not None:
                        group.failures.setdefault(got.ref, got.error)
                        for work, _, _, _ in group.targets[got.ref]:
                            work.outcome.transport = work.outcome.transport or got.transport
                self._in_flight -= cost
                for work in files:
                    if crash is not None:
                        work.crash = work.crash or crash
                    work.left -= 1
                    self._end_if_done(work)
                self._cond.notify_all()
