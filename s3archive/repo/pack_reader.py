"""The one way to read chunks out of packs: merged ranged GETs of pinned versions.

Modelled on restic's ``LoadBlobsFromPack``.  Chunk references are grouped
into ranged GETs (:func:`merge_reads`, the only range merger), fetched in
parallel within a window of bytes in flight, and every reference is decoded
and checked against its *own* hash and size — two references that share a
(pack, offset) are each checked, so one reference's verified bytes are never
served for another.  A failed GET or a chunk that does not verify becomes a
:class:`ChunkResult` with an error: the caller decides what it damages and
goes on.  Restore, ``cat-snapshot`` and ``verify --read-data`` all read here.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from s3archive.errors import IntegrityError, NoSuchVersion, StoreError, TransportError
from s3archive.format.chunk_codec import decode_chunk
from s3archive.format.model import BlobOpener, ChunkRef, PackRef
from s3archive.store.base import StoreReader

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 8
# Bytes of chunk data in flight.  Measured on the benchmark tree: 32 MiB restores as
# fast as 128 MiB did (150-175 MB/s) with a peak RSS of 153 MiB instead of 234 MiB.
DEFAULT_WINDOW = 32 << 20
MAX_REQUEST = 8 << 20  # bytes of one ranged GET (a lone larger chunk gets a GET of its own)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One ranged GET of a pinned pack version, covering ``chunks`` (sorted by offset)."""

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


def merge_reads(chunks: Iterable[ChunkRef], max_request: int = MAX_REQUEST,
                max_gap: int = 0) -> Iterator[ReadRequest]:
    """Consecutive references into one pack that lie back to back (up to ``max_gap``
    apart, or overlapping) become one ranged GET of at most ``max_request`` bytes.

    Every reference stays in its request, duplicates and references that share
    an offset included: each is decoded and checked on its own.
    """
    pack = -1
    first = last = 0
    group: list[ChunkRef] = []
    for ref in chunks:
        end = ref.offset + ref.stored - 1
        if (group and ref.pack == pack and first <= ref.offset <= last + 1 + max_gap
                and max(end, last) - first + 1 <= max_request):
            group.append(ref)
            last = max(last, end)
            continue
        if group:
            yield ReadRequest(pack, first, last, tuple(group))
        pack, first, last, group = ref.pack, ref.offset, end, [ref]
    if group:
        yield ReadRequest(pack, first, last, tuple(group))


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """Chunks in the order the consumer needs them, and the GETs that fetch them.

    The archiver packs chunks in the order its workers finish them, which is
    close to, but not exactly, path order; and dedup points back to older
    packs.  Sorting a batch's distinct references by (pack, offset) before
    merging turns that into few large ranged GETs; the batch bounds what is held.
    """

    chunks: tuple[ChunkRef, ...]
    requests: tuple[ReadRequest, ...]
    held: int = 0  # bytes of the caller's own state the batch stands for (counted in the window)


def read_batch(chunks: Iterable[ChunkRef], held: int = 0, max_request: int = MAX_REQUEST,
               max_gap: int = 256 << 10) -> ReadBatch:
    """``chunks`` (in the consumer's order, repeats allowed) and the GETs that fetch
    each distinct reference once, sorted by (pack, offset) and merged."""
    ordered = tuple(chunks)
    distinct = sorted(dict.fromkeys(ordered), key=lambda c: (c.pack, c.offset, c.stored))
    return ReadBatch(ordered, tuple(merge_reads(distinct, max_request, max_gap)), held)


def batched_reads(chunks: Iterable[ChunkRef], batch_bytes: int = 32 << 20,
                  max_request: int = MAX_REQUEST,
                  max_gap: int = 256 << 10) -> Iterator[ReadBatch]:
    """``chunks`` in batches of about ``batch_bytes`` plain bytes, each with its GETs.

    A reference repeated within a batch (the same file twice) is fetched once;
    references that merely share a (pack, offset) are distinct and each checked.
    """
    batch: list[ChunkRef] = []
    distinct: dict[ChunkRef, None] = {}
    held = 0

    def flush() -> ReadBatch:
        return read_batch(batch, 0, max_request, max_gap)

    for ref in chunks:
        batch.append(ref)
        if ref not in distinct:
            distinct[ref] = None
            held += ref.size
        if held >= batch_bytes:
            yield flush()
            batch, distinct, held = [], {}, 0
    if batch:
        yield flush()


@dataclass(frozen=True, slots=True)
class ChunkResult:
    ref: ChunkRef
    data: bytes | memoryview | None  # the plain bytes, verified; None when ``error``
    # (or when the reader keeps no data)
    error: str | None = None
    pack_missing: bool = False  # the error is that the pack version does not exist
    transport: bool = False  # the bytes could not be read: says nothing about the data


class PackReader:
    """Reads chunk references of one manifest's pack table."""

    def __init__(self, store: StoreReader, packs: list[PackRef],
                 workers: int = DEFAULT_WORKERS, window: int = DEFAULT_WINDOW,
                 opener: BlobOpener | None = None, keep_data: bool = True):
        self.store = store
        self.packs = packs
        self.opener = opener  # an encrypted run's blobs are opened before decoding
        # False: a chunk's plain bytes are checked and dropped (``verify``: a request's
        # results held no copy of its plain bytes, ~twice the stored bytes for text)
        self.keep_data = keep_data
        self.workers = workers
        self.window = window

    def fetch(self, request: ReadRequest,
              sink: Callable[[ChunkResult], ChunkResult] | None = None) -> list[ChunkResult]:
        """One ranged GET; every reference in it decoded and checked against its hash.

        ``sink`` (called on the fetching thread) takes each verified result as it
        is decoded, before the next is, and returns what to keep of it (a restore
        writes the bytes and keeps none): the plain bytes of a request are then
        never all held at once.

        A range with a reference that does not verify is read a second time:
        the store returns only whole bodies, but a body can still be garbled
        on the way (plain HTTP, a broken middlebox); a second read that
        verifies shows the fault was the wire's, one that fails again is bad data.
        """
        pack = self.packs[request.pack]
        try:
            results = self._decode(request, self._get(request), sink)
            if any(r.error is not None for r in results):
                log.info("pack %s: %s; reading it again", pack.key,
                         next(r.error for r in results if r.error is not None))
                results = self._decode(request, self._get(request), sink)
        except TransportError as err:
            return [ChunkResult(ref, None, f"could not read pack {pack.key}@{pack.version_id}: "
                                f"{err}", transport=True) for ref in request.chunks]
        except StoreError as err:
            return [ChunkResult(ref, None, f"pack {pack.key}@{pack.version_id}: {err}",
                                isinstance(err, NoSuchVersion)) for ref in request.chunks]
        return results

    def _get(self, request: ReadRequest) -> bytes:
        pack = self.packs[request.pack]
        return self.store.get(pack.key, pack.version_id, (request.first, request.last))

    def _decode(self, request: ReadRequest, blob: bytes,
                sink: Callable[[ChunkResult], ChunkResult] | None = None) -> list[ChunkResult]:
        pack = self.packs[request.pack]
        if len(blob) != request.length:
            why = (f"pack {pack.key}@{pack.version_id}: short read "
                   f"({len(blob)} of {request.length} bytes at {request.first})")
            return [ChunkResult(ref, None, why) for ref in request.chunks]
        view = memoryview(blob)
        results = []
        for ref in request.chunks:
            start = ref.offset - request.first
            stored = view[start:start + ref.stored]
            try:
                if self.opener is None:
                    # raw chunks stay views into the response body (no copy)
                    plain = decode_chunk(stored, ref.encoding, ref.size, ref.hash)
                else:
                    opened = self.opener.open(pack, ref, stored, b"D")
                    plain = decode_chunk(opened, ref.encoding, ref.size, ref.hash,
                                         self.opener.data_id)
            except IntegrityError as err:
                results.append(ChunkResult(ref, None, f"pack {pack.key}: {err}"))
                continue
            if sink is not None:
                results.append(sink(ChunkResult(ref, plain)))
            elif self.keep_data:
                results.append(ChunkResult(ref, plain))
            else:  # nothing of the response is held: it is freed before the next one comes
                results.append(ChunkResult(ref, None))
        return results

    def results(self, requests: Iterable[ReadRequest]) -> Iterator[ChunkResult]:
        """Every reference of ``requests``, in order, fetched ahead within the window."""
        for result in self._results(requests):
            assert isinstance(result, ChunkResult)
            yield result

    def _results(self, requests: Iterable["ReadRequest | _BatchEnd"]
                 ) -> Iterator["ChunkResult | _BatchEnd"]:
        """``results``, with the ends of batches passed through in order (no GET;
        a batch's ``held`` bytes count in the window until its end is consumed)."""
        pending: deque[tuple[Future[list[Any]], int]] = deque()
        in_flight = 0
        source = iter(requests)
        upcoming: ReadRequest | _BatchEnd | None = next(source, None)
        with ThreadPoolExecutor(max_workers=self.workers,
                                thread_name_prefix="s3archive-get") as pool:
            try:
                while upcoming is not None or pending:
                    while upcoming is not None and (
                            not pending or in_flight + _cost(upcoming) <= self.window):
                        cost = _cost(upcoming)
                        if isinstance(upcoming, _BatchEnd):
                            done: Future[list[Any]] = Future()
                            done.set_result([upcoming])
                            pending.append((done, cost))
                        else:
                            pending.append((pool.submit(self.fetch, upcoming), cost))
                        in_flight += cost
                        upcoming = next(source, None)
                    future, cost = pending.popleft()
                    chunk_results = future.result()
                    in_flight -= cost
                    yield from chunk_results
            finally:
                for future, _ in pending:
                    future.cancel()

    def batches(self, batches: Iterable[ReadBatch]
                ) -> Iterator[tuple[ReadBatch, list[ChunkResult]]]:
        """Each batch, in order, with the results of its chunks in the batch's own
        order (duplicates included).

        The GETs of later batches are issued while earlier ones are consumed; a
        batch's results are held until it is handed out.  A batch without chunks
        passes through (its ``held`` bytes still count in the window, so a long
        stretch of them is not read ahead without bound).  Results are matched to
        the references by the whole reference (hash, size, pack, offset, stored,
        encoding), never by position alone.
        """
        def requests() -> Iterator[ReadRequest | _BatchEnd]:
            for batch in batches:
                yield from batch.requests
                yield _BatchEnd(batch)

        got: dict[ChunkRef, ChunkResult] = {}
        for result in self._results(requests()):
            if isinstance(result, _BatchEnd):
                yield result.batch, [got[ref] for ref in result.batch.chunks]
                got = {}
            else:
                got[result.ref] = result

    def ordered(self, batches: Iterable[ReadBatch]) -> Iterator[ChunkResult]:
        """Every chunk of every batch in the batch's own order (see :meth:`batches`)."""
        for _, results in self.batches(batches):
            yield from results

    def chunks(self, refs: Iterable[ChunkRef]) -> Iterator[ChunkResult]:
        """Every reference of ``refs`` in order, verified (or with its error)."""
        return self.ordered(batched_reads(refs))


@dataclass(frozen=True, slots=True)
class _BatchEnd:
    """In a request stream: the end of ``batch`` (no GET)."""

    batch: ReadBatch


def _cost(request: "ReadRequest | _BatchEnd") -> int:
    """Memory a request holds until consumed: the stored bytes plus the plain ones
    (a batch's end: what the caller holds for it)."""
    if isinstance(request, _BatchEnd):
        return request.batch.held
    return request.length + request.plain
