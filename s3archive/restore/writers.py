"""The smaller files created, written and closed by writer threads, in batches.

The restore's main thread plans the entries in path order, creates the
directories and takes each smaller file's chunks from the ordered stream;
creating, writing, timing and closing each file (``openat``, ``pwrite``,
``utimensat``, ``close``: ~30 µs of kernel time a file) is the work handed
here (:meth:`FileWriters.add`), a batch of up to ``BATCH_FILES`` files at a
time, so that the system calls of one thread run while another runs its
Python.  The caller has placed each file (its directory held, so the
directory's metadata waits for it, see ``tree``) and takes each back on its
own thread once written (:meth:`FileWriters.finished`); what a job raised
comes back with it (``EntryFailed``, ``OSError``), anything else is raised
there.  Memory is bounded: at most ``max_files`` files, ``max_bytes`` of their
chunks, are handed over and not yet taken back (:attr:`FileWriters.full`).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Generic, TypeVar

from s3archive.restore.tree import EntryFailed

T = TypeVar("T")

BATCH_FILES = 32  # files handed to a writer at once (one lock round trip each way)
WRITER_THREADS = 2


class FileWriters(Generic[T]):
    """Writer threads running ``write(job)`` for the jobs added; use as a context
    manager (leaving it stops the threads after the job each is running)."""

    def __init__(self, write: Callable[[T], object], threads: int = WRITER_THREADS,
                 max_files: int = 256, max_bytes: int = 1 << 20):
        self._write = write
        self._threads_wanted = max(1, threads)
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._batch: list[tuple[T, int]] = []
        self._queue: deque[list[tuple[T, int]]] = deque()
        self._done: deque[tuple[T, BaseException | None]] = deque()
        self._under_way = 0  # jobs added and not yet taken back
        self._under_way_bytes = 0
        self._crash: BaseException | None = None
        self._dropped: list[T] = []  # (after a crash) the rest of its batch, never begun
        self._closing = False
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "FileWriters[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> list[T]:
        """Stop: the jobs not begun are dropped, running ones end; returns, after every
        thread has stopped, every job not taken back (begun or not)."""
        with self._cond:
            self._closing = True
            dropped = [job for batch in self._queue for job, _ in batch]
            dropped += [job for job, _ in self._batch]
            self._queue.clear()
            self._batch = []
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        self._threads = []
        dropped += self._dropped + [job for job, _ in self._done]
        self._dropped = []
        self._done.clear()
        return dropped

    @property
    def under_way(self) -> int:
        return self._under_way

    @property
    def any_finished(self) -> bool:
        """A hint (no lock): some job may be ready for :meth:`finished`."""
        return bool(self._done)

    @property
    def full(self) -> bool:
        return self._under_way >= self.max_files or self._under_way_bytes >= self.max_bytes

    def add(self, job: T, size: int) -> None:
        """Hand ``job`` over (``size``: the bytes it holds); it starts with its batch."""
        self._batch.append((job, size))
        self._under_way += 1
        self._under_way_bytes += size
        if len(self._batch) >= BATCH_FILES:
            self.flush()

    def flush(self) -> None:
        """Start the jobs added so far."""
        if not self._batch:
            return
        with self._cond:
            self._queue.append(self._batch)
            self._cond.notify()
        self._batch = []
        if len(self._threads) < self._threads_wanted:
            thread = threading.Thread(target=self._work, name="s3archive-restore-write",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def finished(self, wait: bool = False) -> list[tuple[T, BaseException | None]]:
        """The jobs written, each with what it raised (``wait``: at least one, if any
        is under way; the jobs added are started first)."""
        if wait:
            self.flush()
        with self._cond:
            while wait and not self._done and self._under_way and self._crash is None:
                self._cond.wait()
            if self._crash is not None:
                raise self._crash
            done = list(self._done)
            self._done.clear()
        return done

    def taken(self, size: int) -> None:
        """A job of ``size`` bytes handed back by :meth:`finished` is dealt with."""
        self._under_way -= 1
        self._under_way_bytes -= size

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                batch = self._queue.popleft()
            for index, (job, _) in enumerate(batch):
                try:
                    self._write(job)
                    outcome: BaseException | None = None
                except (EntryFailed, OSError) as err:
                    outcome = err
                except BaseException as err:  # noqa: BLE001 - a bug: raised by finished()
                    with self._cond:
                        self._crash = err
                        # it and the rest of its batch (never begun) are handed back by close
                        self._dropped.extend(rest for rest, _ in batch[index:])
                        self._cond.notify_all()
                    return
                with self._cond:
                    self._done.append((job, outcome))
                    if len(self._done) == 1:
                        self._cond.notify_all()
