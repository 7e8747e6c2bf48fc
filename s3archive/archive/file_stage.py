"""The files of a run: walk the picked paths, read what changed, spool entry lines.

Entries are spooled in walk order (sorted) as their manifest line without
chunks, files followed by a TAB and their chunk ids (``hash:size,...``); the
chunk locations are filled in at assembly, once every pack is secured.  A
file the local cache knows unchanged (same inode, size, mtime, ctime) is
not read: its cached line and chunk ids are reused.  Files are read by a
small pool of threads, small files in batches (one task for up to
``BATCH_FILES`` files or ``BATCH_BYTES`` bytes: a task per file cost more than
reading it); entries wait in a bounded queue for their file.

With content workers (archive/content_workers.py, ``[content] workers``) the
batches of small files are described, read, chunked, hashed and compressed by
worker processes instead, which also make each file's spool line and file-cache
row; at most ``BATCHES_PER_WORKER`` per worker are in flight, of
``BYTES_PER_WORKER`` bytes.  The main process
claims a batch's chunk ids at once, packs the new chunks as encoded, and spools
the lines and writes the rows as they came.
The workers are started once the walk has handed ``WORKERS_AFTER_FILES``
files or ``WORKERS_AFTER_BYTES`` bytes to be read (threads read those): a run
that reads little (an unchanged host, a small tree) does not pay their start.
A file with more than one link (its hardlink group is settled here, in walk
order), every other kind of entry, and the files threads read are described
here.
A file of ``BATCH_BYTES`` or more is still read by a thread here (its work is
per byte, in C, without the GIL), streamed chunk by chunk.

A run without a file cache to consult (a first run, a lost cache) does not stat
the regular files the listings of large directories of small files name (the
walker's rule: archive/sources/walker.py) once the workers run: a worker
gets such a file by name, opens it and takes its ``fstat`` as the walk's stat.
A file that is not one a worker reads (more than one link, ``BATCH_BYTES`` or
larger, not a regular file any more, one that did not open) it hands back with
its stat, and it is taken here in walk order, when its turn to be spooled comes
(a later name of a hardlink group is a hardlink entry to the first name *in walk
order*: in such a run every file with more than one link waits for its turn).
A batch of named files is cut by their mean size so far (sizes are unknown
before they are read); a worker stops reading a batch at ``BATCH_BYTES`` and the
rest of it is handed to a worker again when the batch is claimed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Callable, NamedTuple

from s3archive.archive.chunk_writer import ChunkWriter
from s3archive.archive.content_workers import (BatchRead, ContentWorkers, FileDone, FileToRead,
                                                Walked, spool_file_line)
from s3archive.archive.chunker import Chunker
from s3archive.archive.local_cache import FileKey, LocalCache, pack_chunk_list, split_line
from s3archive.archive.packer import ChunkId
from s3archive.archive.sources import fs_metadata
from s3archive.archive.sources.entries import Unrecordable, Vanished, describe_entry
from s3archive.archive.sources.file_reader import FLOCK_WAIT_S, FileRead, read_whole
from s3archive.archive.sources.walker import WalkItem, Walker, WalkOptions
from s3archive.format import manifest_codec as codec
from s3archive.format.model import FILE, HARDLINK, SYMLINK, Entry, Warning_
from s3archive.progress import Progress

log = logging.getLogger(__name__)
READERS = 2  # file reader threads: reading, chunking and hashing release the GIL
MAX_PENDING = 1024  # entries waiting for their file to be read before the walk waits
# file-cache hits queued behind them, in bytes of their paths and spool lines (each kept
# with HIT_OVERHEAD bytes of Python objects: a 3-tuple, two bytes headers, a deque slot):
# the walk goes on past a large file being read, by up to this much, before it waits
MAX_QUEUED_HIT_BYTES = 8 << 20
HIT_OVERHEAD = 140
BATCH_FILES = 64  # small files read by one task, at most ...
BATCH_BYTES = 4 << 20  # ... and bytes; a file this large or larger is a task of its own
FILE_ROWS_BATCH = 512  # file-cache rows written at once
SPOOLED_EVERY = 512  # entries walked between calls of FileStage.run's ``spooled``
# batches handed to content workers and not yet spooled, per worker, and their files'
# bytes (a named file's guessed): four batches of small files keep a worker fed while
# the main thread waits for the GIL, their bytes bounded as two full batches were
BATCHES_PER_WORKER = 4
BYTES_PER_WORKER = 2 * BATCH_BYTES
WORKERS_AFTER_FILES = 256  # content workers start once this many files are to be read ...
WORKERS_AFTER_BYTES = 16 << 20  # ... or this many bytes (threads read the first ones)
HIT_CHUNKS_BYTES = 64 << 10  # file-cache hits' chunk lists handed to the writer at once


@dataclass
class FileTally:
    """What the walk found (the run's summary and trailer are made from it)."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    others: int = 0
    bytes_total: int = 0  # logical size of the files
    bytes_read: int = 0
    files_unchanged: int = 0
    sockets_skipped: int = 0


@dataclass
class _ReadOutcome:
    ok: bool = True
    bytes_read: int = 0
    chunks: list[ChunkId] = field(default_factory=list)
    warnings: list[Warning_] = field(default_factory=list)
    cache_key: FileKey | None = None  # set when the file did not change while read


@dataclass
class _Batch:
    """Files read one after the other by one reader task; ``job`` is set once submitted."""

    files: list[tuple[Entry, os.stat_result]] = field(default_factory=list)
    # or (only these) files a content worker describes and reads
    walked: list[FileToRead] = field(default_factory=list)
    size: int = 0
    job: Future[list[_ReadOutcome]] | None = None
    # read by a content worker: its files finished, their chunks claimed when the
    # first of them is spooled (``done`` then); ``left`` files not spooled yet
    remote: Future[BatchRead] | None = None
    done: list[FileDone] | None = None
    left: int = 0
    # the files from ``again_from`` on were not read (the batch's bytes were): ``again``
    again: _Batch | None = None
    again_from: int = 0


@dataclass
class _Queued:
    """An entry waiting to be spooled in walk order.

    An ``entry`` (its file maybe still being read, the ``index``-th of ``batch``);
    a file-cache hit waits as a lighter :class:`_QueuedHit`.
    """

    entry: Entry | None
    batch: _Batch | None = None
    index: int = 0
    cache_key: FileKey | None = None
    cacheable: bool = True
    path: bytes = b""
    size: int = 0
    line: bytes = b""
    chunks: list[ChunkId] = field(default_factory=list)


class _QueuedHit(NamedTuple):
    """A file-cache hit waiting to be spooled in walk order: its whole spool line."""

    path: bytes
    size: int
    spooled: bytes

    def held(self) -> int:
        """Its bytes counted against MAX_QUEUED_HIT_BYTES."""
        return len(self.path) + len(self.spooled) + HIT_OVERHEAD


_SPOOLED = _Queued(None)  # a file-cache hit spooled at once: nothing was waiting before it


class _WorkerFile(NamedTuple):
    """A file waiting to be spooled in walk order, the ``index``-th of a content
    worker's ``batch`` (lighter than a :class:`_Queued`: most files of a first run)."""

    batch: _Batch
    index: int
    path: bytes


class _InOrder(NamedTuple):
    """A path whose entry is made when its turn to be spooled comes, from ``st``: a
    file with more than one link in a run that stats files by name (its group is
    settled in walk order), or a file a content worker handed back."""

    path: bytes
    st: os.stat_result


_Pending = _Queued | _WorkerFile | _QueuedHit | _InOrder


class ThreadChunkers:
    """pyfastcdc is not thread-safe: one chunker per thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self) -> Chunker:
        chunker = getattr(self._local, "chunker", None)
        if chunker is None:
            chunker = self._local.chunker = Chunker()
        return chunker


class FileStage:
    """Walks ``paths`` into ``spool``; new chunks go to ``writer``.

    File-cache rows of the files read are written as *pending*: they count
    only once the run's manifest is written (``remember_files`` off in a dry
    run: nothing is remembered).
    """

    def __init__(self, options: WalkOptions, cache: LocalCache, writer: ChunkWriter,
                 progress: Progress, warn: Callable[[Warning_], None], remember_files: bool,
                 lock_timeout: float = FLOCK_WAIT_S, workers: ContentWorkers | None = None):
        self.options = options
        self.workers = workers
        self.lock_timeout = lock_timeout
        self.cache = cache
        self.writer = writer
        self.progress = progress
        self.warn = warn
        self.remember_files = remember_files
        self.tally = FileTally()
        self._chunkers = ThreadChunkers()
        # split as the cache keeps them (LocalCache.put_split_files)
        self._file_rows: list[tuple[bytes, tuple[int, int, int, int, int], bytes, bytes]] = []
        self._hardlinks: dict[tuple[int, int], bytes] = {}
        self._to_read = 0  # bytes of the files the walk handed to be read (progress totals)
        self._files_to_read = 0  # small files (and their bytes below), for the workers' start
        self._small_to_read = 0
        self._batch = _Batch()  # small files not yet handed to a reader
        self._readers: ThreadPoolExecutor | None = None
        self._cache_has_files = True
        self._remote_batches = 0  # handed to content workers, not all spooled yet
        self._remote_bytes = 0  # ... and their files' bytes (BYTES_PER_WORKER)
        self._pending: deque[_Pending] = deque()
        self._walker: Walker | None = None
        self._links_in_order = False  # settle hardlink groups at spool time (files by name)
        self._named_files = 0  # files read by name by the workers, and their bytes: the
        self._named_bytes = 0  # estimate of a named file's size (batches of them are cut by)
        self._queued_hits = 0  # of the pending entries, file-cache hits ...
        self._queued_hit_bytes = 0  # ... and their bytes (MAX_QUEUED_HIT_BYTES)
        self._spool: IO[bytes] | None = None
        self._hits: list[bytes] = []  # file-cache hits' chunk lists not handed over yet
        self._hits_bytes = 0

    def run(self, paths: list[bytes], spool: IO[bytes],
            spooled: Callable[[], None] | None = None) -> FileTally:
        """Walk in order; files are read by a pool, entries spooled in walk order;
        ``spooled`` is called every SPOOLED_EVERY entries walked (trees begun)."""
        pending = self._pending
        self._spool = spool
        walked = 0
        told = SPOOLED_EVERY
        # a cache without file rows (a first run) answers no lookup: ask it once
        self._cache_has_files = self.cache.has_files()
        # ... and then the files the workers read need no stat here
        by_name = not self._cache_has_files and self.workers is not None
        self._links_in_order = by_name
        walker = self._walker = Walker(self.options, self.warn, stat_files=not by_name)
        with ThreadPoolExecutor(READERS, thread_name_prefix="read") as readers:
            self._readers = readers
            try:
                for item in walker.walk(paths):
                    queued = self._entry(item)
                    if queued is not None:
                        walked += 1
                        if queued is _SPOOLED:
                            continue
                        pending.append(queued)
                        self._spool_ready(pending, spool, wait=self._walk_waits())
                        if spooled is not None and walked >= told:
                            told = walked + SPOOLED_EVERY
                            spooled()
                self._reuse_hits()
                self.progress.totals(walked, self._to_read)  # the walk is over: now known
                self._spool_ready(pending, spool, wait=True)
                self.progress.totals(walked, self._to_read)  # with the sizes of named files
                self.cache.put_split_files(self._file_rows, pending=True)
                self._file_rows = []
            except BaseException:
                readers.shutdown(wait=True, cancel_futures=True)  # do not read the queue
                raise
            finally:
                self._readers = None
        return self.tally

    def _walk_waits(self) -> bool:
        """Whether the walk waits for the entries ahead to be read (bounded memory)."""
        return (len(self._pending) - self._queued_hits > MAX_PENDING
                or self._queued_hit_bytes > MAX_QUEUED_HIT_BYTES)

    def _submit(self) -> None:
        """Hand the open batch to a content worker (files it describes) or to a
        reader thread (files described here)."""
        batch = self._batch
        if not (batch.files or batch.walked):
            return
        self._batch = _Batch()
        if not batch.walked:
            assert self._readers is not None
            batch.job = self._readers.submit(self._read_batch, batch.files)
            return
        assert self.workers is not None
        limit = BATCHES_PER_WORKER * self.workers.count
        byte_limit = BYTES_PER_WORKER * self.workers.count
        while self._remote_batches and (self._remote_batches >= limit
                                        or self._remote_bytes + batch.size > byte_limit):
            assert self._spool is not None  # bounded: spool what the workers returned
            self._spool_ready(self._pending, self._spool, wait=True,
                              until_batches=self._remote_batches - 1)
        self._send(batch)

    def _send(self, batch: _Batch) -> None:
        assert self.workers is not None
        batch.left = len(batch.walked)
        batch.remote = self.workers.submit(batch.walked, BATCH_BYTES)
        self._remote_batches += 1
        self._remote_bytes += batch.size

    def _to_workers(self, st: os.stat_result) -> bool:
        """Whether a file goes to a content worker (started here once the run reads
        enough to pay for them): a single-link file smaller than a batch."""
        workers = self.workers
        if workers is None or st.st_nlink > 1 or st.st_size >= BATCH_BYTES:
            return False
        if not workers.started:
            if (self._files_to_read + 1 < WORKERS_AFTER_FILES
                    and self._small_to_read + st.st_size < WORKERS_AFTER_BYTES):
                return False
            self._submit()  # files described here so far: read by a thread
            workers.start()
        return True

    def _worker_file(self, path: bytes, st: os.stat_result | None) -> _WorkerFile:
        """A file a content worker describes and reads, in the open batch (``st``
        None: by name, the worker stats it)."""
        if self._batch.files:  # (never both kinds in one batch)
            self._submit()
        batch = self._batch
        if st is None:
            batch.walked.append(FileToRead(path))
            batch.size += self._named_bytes // self._named_files if self._named_files else 0
        else:
            self._to_read += st.st_size
            self._files_to_read += 1
            self._small_to_read += st.st_size
            batch.walked.append(FileToRead(path, st.st_ino, st.st_ctime_ns,
                                           Walked(st.st_mode, st.st_uid, st.st_gid,
                                                  st.st_mtime_ns)))
            batch.size += st.st_size
        queued = _WorkerFile(batch, len(batch.walked) - 1, path)
        if len(batch.walked) >= BATCH_FILES or batch.size >= BATCH_BYTES:
            self._submit()
        return queued

    def _read_batch(self, files: list[tuple[Entry, os.stat_result]]) -> list[_ReadOutcome]:
        return [self._read(entry, st) for entry, st in files]

    def _spool_ready(self, pending: deque[_Pending], spool: IO[bytes],
                     wait: bool, until_batches: int = -1) -> None:
        """Spool the entries whose files are read (all of them: ``wait``; or until
        no more than ``until_batches`` batches are with content workers)."""
        tally = self.tally
        while pending and self._remote_batches > until_batches:
            queued = pending[0]
            if type(queued) is _QueuedHit:
                pending.popleft()
                self._queued_hits -= 1
                self._queued_hit_bytes -= queued.held()
                self._spool_file(*queued)
                continue
            if type(queued) is _InOrder:  # its turn: its entry is made now
                pending.popleft()
                made = self._in_order(queued.path, queued.st)
                if made is not None:
                    pending.appendleft(made)
                continue
            assert not isinstance(queued, (_QueuedHit, _InOrder))
            batch = queued.batch
            index = queued.index
            if type(queued) is _WorkerFile:
                batch, index = self._follow(queued.batch, queued.index)
            if batch is not None:
                if batch is self._batch:  # the open batch: read it now
                    if not wait:
                        return
                    self._submit()
                job = batch.job or batch.remote
                assert job is not None
                # (a claimed batch is done: each of its files asks no Future, and its lock)
                if not (wait or batch.done is not None or job.done()):
                    return
                if type(queued) is _WorkerFile:  # a content worker's: finished there
                    done = self._claim_read(batch, index)
                    if done is None:  # not read: handed to a worker again
                        continue
                    pending.popleft()
                    if done.back is not None:  # handed back: taken here, now
                        assert done.back.st is not None
                        made = self._in_order(queued.path, done.back.st)
                        if made is not None:
                            pending.appendleft(made)
                        continue
                    if batch.walked[index].walked is None:  # its size is known now
                        self._to_read += done.size
                        self._named_files += 1
                        self._named_bytes += done.size
                    self._spool_done(done, queued.path)
                    continue
                assert isinstance(queued, _Queued) and batch.job is not None
                outcome = batch.job.result()[queued.index]
                for warning in outcome.warnings:
                    self.warn(warning)
                tally.bytes_read += outcome.bytes_read
                if not outcome.ok:
                    pending.popleft()
                    continue
                queued.cache_key = outcome.cache_key
                queued.chunks = outcome.chunks
            assert isinstance(queued, _Queued)
            pending.popleft()
            entry = queued.entry
            if entry is not None:
                queued.path, queued.size = entry.path, entry.size
                queued.line = codec.dumps(codec.encode_entry(entry, with_chunks=False))[:-1]
                if entry.kind != FILE:
                    spool.write(queued.line + b"\n")
                    self.progress.entry(entry.kind, queued.path)
                    continue
            self._spool_file(queued.path, queued.size, spool_file_line(queued.line, queued.chunks))
            if (queued.cache_key is not None and queued.cacheable and self.remember_files
                    and entry is not None):  # read, not a cache hit
                key = queued.cache_key
                self._add_row((queued.path, (key.dev, key.ino, key.size, key.mtime_ns,
                                             key.ctime_ns),
                               split_line(queued.path, key, queued.line),
                               pack_chunk_list(queued.chunks)))

    def _spool_done(self, done: FileDone, path: bytes) -> None:
        """Spool a file a content worker finished, as it came."""
        ok, bytes_read, size, problems, spooled, row, _ = done
        for problem in problems:
            self.warn(Warning_("file", problem, path))
        self.tally.bytes_read += bytes_read
        self.progress.read(bytes_read)
        if not ok:
            return
        self._spool_file(path, size, spooled)
        if row is not None and self.remember_files:
            self._add_row((path, *row))

    def _spool_file(self, path: bytes, size: int, spooled: bytes) -> None:
        """Spool a file's line (with its chunks), counted and shown."""
        assert self._spool is not None
        self.tally.files += 1
        self.tally.bytes_total += size
        self.progress.file(path, size)
        self._spool.write(spooled)

    def _add_row(self, row: tuple[bytes, tuple[int, int, int, int, int], bytes, bytes]
                 ) -> None:
        self._file_rows.append(row)
        if len(self._file_rows) >= FILE_ROWS_BATCH:
            self.cache.put_split_files(self._file_rows, pending=True)
            self._file_rows = []

    def _entry(self, item: WalkItem) -> _Pending | None:
        path, st = item
        if st is None:  # a regular file as listed, by name
            assert self.workers is not None and self._walker is not None
            if self.workers.started:
                return self._worker_file(path, None)
            st = self._walker.lstat(path)  # the first files: read here, stat'ed
            if st is None:
                return None
        kind = fs_metadata.kind_of(st.st_mode)
        if kind is None:
            self._socket(path)
            return None
        if kind == FILE and self._cache_has_files:
            unchanged = self._unchanged(path, st)
            if unchanged is not None:
                return unchanged
        if kind == FILE and st.st_nlink > 1 and self._links_in_order:
            return _InOrder(path, st)
        if kind == FILE and self._to_workers(st):
            return self._worker_file(path, st)
        return self._described(path, st, kind, in_order=False)

    def _socket(self, path: bytes) -> None:
        self.tally.sockets_skipped += 1
        log.info("skipping socket %s", path.decode("utf-8", "backslashreplace"))

    def _in_order(self, path: bytes, st: os.stat_result) -> _Queued | None:
        """The entry of a path taken in walk order (:class:`_InOrder`, a file a worker
        handed back): its file, if any, read by a thread, or here if it has links."""
        kind = fs_metadata.kind_of(st.st_mode)
        if kind is None:
            self._socket(path)
            return None
        if kind == "dir":  # listed as a file: the walk is past where its tree would go
            self.warn(Warning_("file", "was replaced while being read; skipped", path))
            return None
        return self._described(path, st, kind, in_order=True)

    def _described(self, path: bytes, st: os.stat_result, kind: str, in_order: bool
                   ) -> _Queued | None:
        """The entry described here (``in_order``: at its turn to be spooled)."""
        try:
            entry, problem = describe_entry(path, st)
        except Vanished:
            self.warn(Warning_("file", "vanished during the walk", path))
            return None
        except Unrecordable as left_out:
            self.warn(left_out.warning)
            return None
        if problem is not None:
            self.warn(problem)
        if kind == FILE:
            queued = self._file(entry, st, in_order)
            if queued is not None and problem is not None:
                queued.cacheable = False  # next run: read the metadata again
            return queued
        if kind == "dir":
            self.tally.dirs += 1
        elif kind == SYMLINK:
            self.tally.symlinks += 1
        else:
            self.tally.others += 1
        return _Queued(entry)

    def _file(self, entry: Entry, st: os.stat_result, in_order: bool = False
              ) -> _Queued | None:
        link_key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and link_key in self._hardlinks:
            entry.kind = HARDLINK
            entry.target = self._hardlinks[link_key]
            self.tally.others += 1
            return _Queued(entry)
        if st.st_nlink > 1:
            # read now: later names of the group must know whether this one made it
            self._to_read += st.st_size
            outcome = self._read(entry, st)
            for warning in outcome.warnings:
                self.warn(warning)
            self.tally.bytes_read += outcome.bytes_read
            if not outcome.ok:
                return None
            self._hardlinks[link_key] = entry.path
            return _Queued(entry, cache_key=outcome.cache_key, chunks=outcome.chunks)
        self._to_read += st.st_size
        if in_order:  # (spooling: the open batch is the walk's) a task of its own
            assert self._readers is not None
            alone = _Batch(files=[(entry, st)], size=st.st_size)
            alone.job = self._readers.submit(self._read_batch, alone.files)
            return _Queued(entry, batch=alone)
        if st.st_size >= BATCH_BYTES:  # a large file: a task of its own, read at once
            self._submit()
            self._batch.files.append((entry, st))
            queued = _Queued(entry, batch=self._batch)
            self._submit()
            return queued
        # only small files count towards starting the workers: they read no large one
        self._files_to_read += 1
        self._small_to_read += st.st_size
        if self._batch.walked:  # (never both kinds in one batch)
            self._submit()
        batch = self._batch
        batch.files.append((entry, st))
        batch.size += st.st_size
        queued = _Queued(entry, batch=batch, index=len(batch.files) - 1)
        if len(batch.files) >= BATCH_FILES or batch.size >= BATCH_BYTES:
            self._submit()
        return queued

    def _unchanged(self, path: bytes, st: os.stat_result) -> _Queued | _QueuedHit | None:
        """A file the cache knows, unchanged since (same inode, size, mtime, ctime).

        Its manifest line is reused as it was: a changed owner, mode, ACL or
        xattr would have changed its ctime.
        """
        if st.st_nlink > 1 and (st.st_dev, st.st_ino) in self._hardlinks:
            return None  # a later name of a hardlink group: a hardlink entry
        key = FileKey(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hit = self.cache.get_file(path, key)
        if hit is None:
            return None
        self._hits.append(hit.listed)
        self._hits_bytes += len(hit.listed)
        if self._hits_bytes >= HIT_CHUNKS_BYTES:
            self._reuse_hits()
        if st.st_nlink > 1:
            self._hardlinks[(st.st_dev, st.st_ino)] = path
        self.tally.files_unchanged += 1
        spooled = b"%s\t%s\n" % (hit.line, hit.spooled_chunks())
        if self._pending or self._spool is None:  # after entries still waiting: queued
            hit_queued = _QueuedHit(path, st.st_size, spooled)
            self._queued_hits += 1
            self._queued_hit_bytes += hit_queued.held()
            return hit_queued
        self._spool_file(path, st.st_size, spooled)
        return _SPOOLED

    def _reuse_hits(self) -> None:
        """Hand the hits' chunks to the writer (their locations are found in batches)."""
        if self._hits:
            self.writer.reuse_listed(b"".join(self._hits))
            self._hits, self._hits_bytes = [], 0

    @staticmethod
    def _follow(batch: _Batch, index: int) -> tuple[_Batch, int]:
        """Where the ``index``-th file of ``batch`` is read: its batch or the one its
        unread files were handed to again."""
        while batch.again is not None and index >= batch.again_from:
            batch, index = batch.again, index - batch.again_from
        return batch, index

    def _claim_read(self, batch: _Batch, index: int) -> FileDone | None:
        """A file a content worker finished; the first of its batch claims the batch's
        chunks (new ones packed as the worker encoded them), and hands the files it
        did not read (the batch's bytes were read) to a worker again: None if this
        file is one of them."""
        assert batch.remote is not None
        if batch.done is None:
            result = batch.remote.result()
            self.writer.add_encoded_many(result.pieces)
            batch.done = result.files
            last = result.files[-1].back if result.files else None
            unread = None if last is None or last.st is not None else next(
                i for i, done in enumerate(result.files)
                if done.back is not None and done.back.st is None)
            if unread is not None:  # (the rest of the batch: a worker reads in order)
                again = _Batch(walked=batch.walked[unread:])
                batch.again, batch.again_from = again, unread
                batch.left -= len(again.walked)
                self._send(again)  # (one batch over the bound, until this one is spooled)
                if index >= unread:
                    return None
        done = batch.done[index]
        batch.left -= 1
        if batch.left == 0:  # every file of the batch is spooled: let its bytes go
            batch.remote = batch.done = None
            self._remote_batches -= 1
            self._remote_bytes -= batch.size
        return done

    def _read(self, entry: Entry, st: os.stat_result) -> _ReadOutcome:
        """Read a file (in a reader thread); progress shows it while it is read."""
        self.progress.begin(entry.path)
        try:
            return self._read_file(entry, st)
        finally:
            self.progress.end(entry.path)

    def _read_file(self, entry: Entry, st: os.stat_result) -> _ReadOutcome:
        """Read a file here, once more if it changed meanwhile."""
        read = read_whole(entry.path, st.st_ino, st.st_ctime_ns, self._chunkers.get(),
                          self.writer.add, self.progress.read, self.lock_timeout)
        return self._outcome(entry, read)

    @staticmethod
    def _outcome(entry: Entry, read: FileRead) -> _ReadOutcome:
        """Complete ``entry`` from what reading its file found."""
        outcome = _ReadOutcome(ok=read.ok, bytes_read=read.bytes_read,
                               warnings=[Warning_("file", problem, entry.path)
                                         for problem in read.problems])
        if not read.ok:
            return outcome
        entry.size, entry.extents = read.size, read.extents
        outcome.chunks = [ChunkId(*chunk) for chunk in read.chunks]
        entry.mtime_ns, entry.ino, entry.ctime_ns = read.mtime_ns, read.ino, read.ctime_ns
        if read.cache_key is not None:
            outcome.cache_key = FileKey(*read.cache_key)
        return outcome
