"""Large files written by the GET workers themselves, in parallel.

The restore's main path hands every chunk to the writer in file order, so
the bytes of each GET wait in memory until the writer reaches them, and the
read window (stored plus plain bytes) lets only one or two GETs of a large
compressible file run at once.  A large file instead is opened by the writer,
then its chunks are fetched as ranged GETs of at most ``max_request`` bytes,
``workers`` at a time: the thread that fetched a GET decodes each chunk,
checks its hash (:meth:`PackReader.fetch`: never unverified bytes) and
``pwrite``s it at its offsets before decoding the next, so no more than one
plain chunk per thread is held.  The window counts each GET's stored bytes
plus its largest chunk.  Nothing returns before every GET of the file has
finished: no thread writes to the descriptor once the writer closes it.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

from s3archive.format.model import ChunkRef, Entry
from s3archive.repo.pack_reader import ChunkResult, PackReader, read_batch
from s3archive.restore.tree import FileResult, chunk_spans, pwrite_all

DIRECT_BYTES = 8 << 20  # a file with at least this many bytes to fetch is written directly
DIRECT_REQUEST = 4 << 20  # bytes of one ranged GET of a directly written file
_WRITTEN = b""  # a result whose bytes were written (and dropped) by the fetching thread


@dataclass
class DirectOutcome:
    """What the GETs of one file did, beyond ``FileResult``."""

    transport: bool = False  # some bytes could not be read (says nothing about the data)


class DirectWriter:
    """Writes large files' chunks from the GET threads (one pool for the restore)."""

    def __init__(self, reader: PackReader, workers: int, window: int,
                 max_request: int = DIRECT_REQUEST):
        self.reader = reader
        self.workers = max(1, workers)
        self.window = window
        self.max_request = max_request
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "DirectWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fill(self, fd: int, entry: Entry, kept: frozenset[int], result: FileResult,
             outcome: DirectOutcome, read: Callable[[int], None] | None = None) -> None:
        """Write ``entry``'s chunks (but ``kept``) into ``fd``; say in ``result`` what was
        written, kept and damaged.  Returns (or raises) only after every GET ended."""
        spans = chunk_spans(entry)
        where: dict[ChunkRef, list[tuple[int, int, int]]] = {}
        for index, ref in enumerate(entry.chunks):
            if index in kept:
                result.kept += ref.size
            else:
                where.setdefault(ref, []).extend(spans[index])
        # the file's size first: the GETs land in any order (holes stay holes)
        os.ftruncate(fd, entry.size)

        def sink(got: ChunkResult) -> ChunkResult:
            assert got.data is not None
            view = memoryview(got.data)
            for offset, start, length in where[got.ref]:
                pwrite_all(fd, view[start:start + length], offset)
            return ChunkResult(got.ref, _WRITTEN)

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers,
                                            thread_name_prefix="s3archive-write")
        requests = list(read_batch(where, max_request=self.max_request, max_gap=0).requests)
        pending: dict[Future[list[ChunkResult]], int] = {}
        in_flight = 0
        failures: dict[ChunkRef, str] = {}
        try:
            for request in requests:
                cost = request.length + max(ref.size for ref in request.chunks)
                while pending and in_flight + cost > self.window:
                    in_flight -= self._collect(pending, failures, outcome, read)
                pending[self._pool.submit(self.reader.fetch, request, sink)] = cost
                in_flight += cost
            while pending:
                in_flight -= self._collect(pending, failures, outcome, read)
        finally:
            for future in pending:
                future.cancel()
            wait(pending)  # nothing may write to fd once this returns
        damage: list[tuple[int, str]] = []
        for ref, pieces in where.items():
            if ref in failures:
                damage.extend((offset, f"bytes {offset}-{offset + length - 1}: {failures[ref]}")
                              for offset, _, length in pieces)
            else:
                result.written += sum(length for _, _, length in pieces)
        result.damage.extend(text for _, text in sorted(damage))

    @staticmethod
    def _collect(pending: dict[Future[list[ChunkResult]], int], failures: dict[ChunkRef, str],
                 outcome: DirectOutcome, read: Callable[[int], None] | None) -> int:
        """Wait for one GET or more to end; the window they freed."""
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        freed = 0
        for future in done:
            freed += pending.pop(future)
            for got in future.result():  # an OSError from pwrite is raised here
                if got.error is not None:
                    failures.setdefault(got.ref, got.error)
                    outcome.transport = outcome.transport or got.transport
                elif read is not None:
                    read(got.ref.size)
        return freed

