"""Worker processes that read files into encoded chunks (the initial run's per-byte
and per-chunk work, and as much of its per-file work as can leave it, off the main
process's GIL).

The main process walks, keeps the file cache, claims chunk ids and packs; a
worker takes a batch of small files and, for each, describes its entry from
the walk's stat (owners' names, ACLs, xattrs: :func:`describe_entry`), opens,
locks, checks and reads it (holes kept), cuts it into chunks, computes their
ids (keyed for an encrypted run) and compresses them, then finishes what the
main process writes of the file as it will be written: its spool line (the
manifest line without chunk locations, then its chunk ids: :func:`spool_file_line`)
and its file-cache row (the line split as the cache keeps it, the chunk list
packed).  It returns one :class:`BatchRead` per batch: a :class:`FileDone` per
file and the batch's encoded chunks; the main process claims the chunks in one
call, packs the new ones without encoding them again, spools the lines and
writes the rows as they came (per file it only counts and writes).

The archive command forks its workers at its opening (:func:`fork_workers`:
one thread, boto3 not loaded yet), so they share the main process's pages until
they write to them; a pool that finds none forked (a library caller, a process
with threads) starts ``python -m s3archive.archive.content_workers`` with
``subprocess`` (fork and exec at once: safe in a threaded process), which
imports only what reading needs (no boto3, not the caller's ``__main__``).
A frame on its stdin or stdout is a pickle (protocol 5) whose large buffers,
the encoded chunks, follow it out of band (no copy into or out of the pickle);
the first frame in is :class:`WorkerSettings` (the dedup id key travels there,
never in argv or the environment), then batches; one result frame per batch,
in order.
A file may come by name only (a run without a file cache to consult: the walk
did not stat it): the worker opens it and its ``fstat`` is the walk's stat; one it
does not read (more than one link, as large as a batch or larger, not a regular
file, not opened) it hands back with its stat (:class:`HandedBack`), and once a
batch has read its bytes the rest of it is handed back unread.
A worker runs nicer than the main process, as a batch job, or as an idle one
where the main process is too nice to leave room below it (:func:`_step_aside`).
A worker ignores SIGINT (the main process stops it) and exits at the end of
its stdin: when the main process ends, however it ends, its workers end too.
A worker that dies fails the run (:class:`ContentWorkerFailed`), never hangs it.
"""

from __future__ import annotations

import fcntl
import gc
import os
import pickle
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, NamedTuple, NoReturn

from s3archive.archive.chunker import Chunker
from s3archive.archive.frame_blocks import FrameBlocks
from s3archive.archive.fresh_memory import set_mmap_threshold
from s3archive.archive.local_cache import (FileKey, pack_chunk_list, plain_file_line,
                                              split_line)
from s3archive.archive.sources.entries import Unrecordable, Vanished, describe_entry
from s3archive.archive.sources.file_reader import (FileRead, Opened, Unreadable, open_checked,
                                                  open_for_reading, read_whole)
from s3archive.errors import S3ArchiveError
from s3archive.format import manifest_codec as codec
from s3archive.format.chunk_codec import ChunkCodec, EncodedChunk, chunk_hash
from s3archive.format.model import Entry


_HEAD = struct.Struct(">II")  # pickle length, number of out-of-band buffers
_SIZE = struct.Struct(">Q")
MAX_FRAME = 1 << 30  # a frame longer than this is a broken worker, not a batch
MAX_BUFFERS = 1 << 20
WORKER_NICE = 10  # a worker's nice value above the main process's (_step_aside)
# a chunk smaller than this crosses inside the pickle (one copy there and one back, like
# the block's; a buffer of its own costs a size, a write, a view and a slot more: most
# chunks of small files), a larger one (or a view) out of band
IN_BAND_BYTES = 64 << 10


class ContentWorkerFailed(S3ArchiveError):
    """A content worker died or broke its protocol: the run fails, nothing is committed."""


@dataclass(frozen=True)
class WorkerSettings:
    compression_level: int
    min_saving: float
    lock_timeout: float
    id_key: bytes | None = field(default=None, repr=False)  # encrypted runs: keyed data ids


class Walked(NamedTuple):
    """The walk's stat of a file, as much as its entry is described from
    (:class:`~archive.sources.entries.StatFields`)."""

    st_mode: int
    st_uid: int
    st_gid: int
    st_mtime_ns: int
    st_rdev: int = 0


class FileToRead(NamedTuple):
    """A file for a worker: as the walk stat'ed it, or by its name only (``walked``
    None: the worker's ``fstat`` of the file it opens is the walk's stat)."""

    path: bytes
    ino: int = 0  # as the walk saw it: another inode is a replaced file
    ctime_ns: int = 0  # as the walk saw it: a moved ctime keeps the file out of the cache
    walked: Walked | None = None  # what the worker describes the entry from


class FileRow(NamedTuple):
    """A file-cache row as :meth:`LocalCache.put_split_files` takes it (what the
    main process alone knows, the directory's number, it adds)."""

    key: tuple[int, int, int, int, int]  # (dev, ino, size, mtime_ns, ctime_ns)
    rest: bytes  # local_cache.split_line of the file's line
    chunks: bytes  # local_cache.pack_chunk_list of its chunk ids


class HandedBack(NamedTuple):
    """A file given by name that a worker does not read (:func:`_open_named`): the
    main process takes it in walk order.  ``st`` is its stat (a file with more than
    one link, as large as a batch or larger, not a regular file any more, one that
    did not open); None: not opened, the batch had read its bytes — to be handed
    to a worker again."""

    st: os.stat_result | None


class FileDone(NamedTuple):
    """A file as a worker finished it: what the main process spools and remembers."""

    ok: bool  # False: left out (vanished, cannot be recorded, unreadable): see problems
    bytes_read: int
    size: int
    problems: list[str]  # warnings about the file (its metadata's, then its reading's)
    spooled: bytes  # its spool line (b"" when not ok)
    row: FileRow | None  # its file-cache row; None: not to be cached (changed while
    # read, or metadata incomplete: described afresh next run)
    back: HandedBack | None = None  # not read here: the main process's (ok False)


class BatchRead(NamedTuple):
    files: list[FileDone]  # in the batch's order
    pieces: list[EncodedChunk]  # the chunks of the files read whole, in file order


def spool_file_line(line: bytes, chunks: list[tuple[str, int]]) -> bytes:
    """A file's spool line: its line without chunks, then a TAB and its ``hash:size``
    list (archive/file_stage.py; JSON never contains a raw TAB)."""
    listed = ",".join([f"{digest}:{size}" for digest, size in chunks])
    return line + b"\t" + listed.encode("ascii") + b"\n"


# What crosses the pipe is plain tuples: a dataclass costs ~60 us a file to pickle
# and unpickle, a tuple ~7 (200,000 files: 11 CPU s).  Per batch: (the fields of a
# FileDone per file, its row a tuple too; the chunks as (id, plain size, encoding,
# stored bytes)).
_LEFT_OUT: tuple[object, ...] = (False, 0, 0)
_AGAIN = (False, 0, 0, [], b"", None, (None,))  # a file not opened: the batch's bytes are read


def _describe(path: bytes, walked: tuple[int, int, int, int, int], opened: Opened | None
              ) -> tuple[Entry | None, list[str], bool]:
    """The file's entry (None: left out), what was wrong with its metadata, and
    whether its row may go to the file cache (as the main process does it).
    Its ACLs and xattrs are read through ``opened`` if given (the file as it
    is read), else by its path."""
    try:
        entry, problem = describe_entry(path, Walked(*walked),
                                        None if opened is None else opened.fd)
    except Vanished:
        return None, ["vanished during the walk"], False
    except Unrecordable as left_out:
        return None, [left_out.warning.message], False
    if problem is None:
        return entry, [], True
    return entry, [problem.message], False


def _line_and_rest(entry: Entry, read: FileRead, key: FileKey | None
                   ) -> tuple[bytes, bytes | None]:
    """The spool line of ``entry`` completed from what reading its file found
    (as ``FileStage`` completes one it described itself), without chunks, and
    with ``key`` its file-cache row's rest (local_cache.split_line of the line)."""
    entry.size, entry.extents = read.size, read.extents
    entry.mtime_ns, entry.ino, entry.ctime_ns = read.mtime_ns, read.ino, read.ctime_ns
    plain = plain_file_line(entry, key)  # most files: made as bytes
    if plain is not None:
        return plain
    line = codec.dumps(codec.encode_entry(entry, with_chunks=False))[:-1]
    return line, None if key is None else split_line(entry.path, key, line)


def _finish(path: bytes, entry: Entry, read: FileRead, problems: list[str],
            cacheable: bool) -> tuple[object, ...]:
    """The fields of the :class:`FileDone` of a file described and read."""
    problems = problems + read.problems
    if not read.ok:
        return (False, read.bytes_read, 0, problems, b"", None)
    key = FileKey(*read.cache_key) if cacheable and read.cache_key is not None else None
    line, rest = _line_and_rest(entry, read, key)
    row = None
    if key is not None:
        row = (read.cache_key, rest, pack_chunk_list(read.chunks))
    return (True, read.bytes_read, read.size, problems, spool_file_line(line, read.chunks),
            row, None)


def _open_named(path: bytes, read_below: int) -> Opened | tuple[object, ...]:
    """A file given by name only, opened (as :func:`open_checked` opens) if it is one
    a worker reads: a regular file of one link, smaller than ``read_below``.  Else
    the fields of its :class:`FileDone`: left out with the walk's warning (vanished,
    cannot be stat'ed), or handed back with its stat."""
    try:
        fd = open_for_reading(path)
    except FileNotFoundError:
        return (*_LEFT_OUT, ["vanished during the walk"], b"", None, None)
    except OSError:  # a symlink now (ELOOP), no permission ...: as the walk would stat it
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return (*_LEFT_OUT, ["vanished during the walk"], b"", None, None)
        except OSError as err:
            return (*_LEFT_OUT, [f"cannot stat: {err.strerror}"], b"", None, None)
        return (*_LEFT_OUT, [], b"", None, (st,))
    try:
        st = os.fstat(fd)
    except OSError as err:
        os.close(fd)
        return (*_LEFT_OUT, [f"cannot stat: {err.strerror}"], b"", None, None)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1 or st.st_size >= read_below:
        os.close(fd)
        return (*_LEFT_OUT, [], b"", None, (st,))
    return Opened(fd, st)


# ---------------------------------------------------------------- the worker side
class _EndOfStream(Exception):
    pass


class _WorkerError(Exception):
    """What a worker said went wrong in it."""


def _read_exactly(stream: BinaryIO, length: int) -> bytes:
    data = stream.read(length)
    if len(data) < length:
        raise _EndOfStream()
    return data


def _read_frame(stream: BinaryIO, blocks: FrameBlocks | None = None) -> object:
    """The next frame's object (its out-of-band buffers as views of one block, from
    ``blocks`` if given); _EndOfStream at the end of the stream."""
    length, count = _HEAD.unpack(_read_exactly(stream, _HEAD.size))
    if length > MAX_FRAME or count > MAX_BUFFERS:
        raise ValueError(f"a frame of {length} bytes and {count} buffers")
    sizes = struct.unpack(f">{count}Q", _read_exactly(stream, _SIZE.size * count))
    if sum(sizes) > MAX_FRAME:
        raise ValueError(f"a frame of {sum(sizes)} bytes of buffers")
    body = _read_exactly(stream, length)
    block = memoryview(bytearray(sum(sizes))) if blocks is None else blocks.take(sum(sizes))
    filled = 0
    while filled < len(block):
        count = stream.readinto(block[filled:])  # type: ignore[attr-defined]
        if not count:
            raise _EndOfStream()
        filled += count
    buffers, offset = [], 0
    for size in sizes:
        buffers.append(block[offset:offset + size])
        offset += size
    return pickle.loads(body, buffers=buffers)


def _write_frame(stream: BinaryIO, obj: object) -> None:
    buffers: list[pickle.PickleBuffer] = []
    body = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    stream.write(_HEAD.pack(len(body), len(raws)) +
                 b"".join(_SIZE.pack(raw.nbytes) for raw in raws) + body)
    for raw in raws:
        stream.write(raw)
    stream.flush()


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The worker's loop: settings, then batch after batch until end of input."""
    try:
        settings: WorkerSettings = _read_frame(inp)  # type: ignore[assignment]
    except _EndOfStream:
        return
    codec = ChunkCodec(settings.compression_level, settings.min_saving)
    id_of: Callable[[bytes | memoryview], str] = chunk_hash
    if settings.id_key is not None:  # an encrypted run: ids keyed with the dedup key
        from s3archive.crypto.dedup import HmacSha256
        mac = HmacSha256(settings.id_key)
        id_of = lambda plain: mac.digest(plain).hex()  # noqa: E731
    chunker = Chunker()
    while True:
        try:
            read_below, batch = _read_frame(inp)  # type: ignore[misc]
        except _EndOfStream:
            return
        files: list[tuple[object, ...]] = []
        pieces: list[tuple[str, int, str, pickle.PickleBuffer]] = []
        batch_bytes = 0
        for path, ino, ctime_ns, walked in batch:
            if batch_bytes >= read_below:  # bounded: the rest goes to a worker again
                files.append(_AGAIN)
                continue
            opened: Opened | None
            if walked is None:  # by name: its fstat is the walk's stat
                named = _open_named(path, read_below)
                if type(named) is tuple:
                    files.append(named)
                    continue
                opened = named  # type: ignore[assignment]
                assert opened is not None
                st = opened.before
                ino, ctime_ns = st.st_ino, st.st_ctime_ns
                walked = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, 0)
            else:
                # opened first: its metadata and content are then those of one inode,
                # with one lookup of its path; a file that does not open as the walk
                # saw it is described by its path and read as before (the same warnings)
                try:
                    opened = open_checked(path, ino)
                except Unreadable:
                    opened = None
            entry, problems, cacheable = _describe(path, walked, opened)
            if entry is None:  # vanished, or a path the manifest cannot hold
                if opened is not None:
                    os.close(opened.fd)
                files.append((*_LEFT_OUT, problems, b"", None, None))
                continue
            first = len(pieces)

            def add(plain: bytes | memoryview) -> tuple[str, int]:
                encoded = codec.encode(plain, id_of(plain))
                data = encoded.data
                pieces.append((encoded.hash, encoded.size, encoded.encoding,
                               data if type(data) is bytes and len(data) < IN_BAND_BYTES
                               else pickle.PickleBuffer(data)))
                return encoded.hash, encoded.size

            read = read_whole(path, ino, ctime_ns, chunker, add,
                              lock_timeout=settings.lock_timeout, opened=opened)
            batch_bytes += read.bytes_read
            if not read.ok:  # its chunks are not the run's
                del pieces[first:]
            files.append(_finish(path, entry, read, problems, cacheable))
        _write_frame(out, (files, pieces))


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the main process ends, however it ends (Linux): a worker waiting
    on a file (a writer's lock, a slow disk) does not outlive it until its batch is
    done.  The thread that started the workers is the run's, which outlives them."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the end of stdin stops it
        pass
    if os.getppid() != parent:  # it ended before the above
        os._exit(1)


def _step_aside() -> None:
    """Run below the main process: ``WORKER_NICE`` nicer and as a batch job
    (``SCHED_BATCH``: a woken worker does not preempt a running thread).

    The main process walks, claims, packs and spools for every worker, its
    threads sharing one GIL: a thread of it the kernel deschedules for a worker
    while it holds the GIL stalls all the others, and the workers then wait for
    batches.  A worker has slack (it waits for batches most of a small-file run),
    the main process has none.  On a host whose cores are all busy the workers get
    less of them, as a backup's bulk work should; on an idle one nothing changes.
    (1M small files, 2 cores: 71.5-73.0 s -> 64.2-65.8 s.)  A main process too nice
    already to leave room below it (the shipped unit runs at ``Nice=19``) gets
    ``SCHED_IDLE`` workers instead: below every nice value."""
    try:
        before = os.getpriority(os.PRIO_PROCESS, 0)  # (the main process's, forked or spawned)
        after = os.nice(WORKER_NICE)
    except OSError:
        before = after = 0
    try:
        policy = os.SCHED_BATCH if after - before >= WORKER_NICE // 2 else os.SCHED_IDLE
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except (OSError, AttributeError):  # (not Linux)
        pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the main process stops us
    _die_with_parent(int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid())
    _step_aside()
    out = sys.stdout.buffer
    try:
        serve(sys.stdin.buffer, out)
    except BrokenPipeError:  # the main process is gone
        pass
    except BaseException as err:  # a bug or no memory: one line for the main process
        try:
            _write_frame(out, f"{type(err).__name__}: {err}")
        except OSError:
            pass
        sys.exit(1)


# ---------------------------------------------------------------- the main side
PIPE_BYTES = 1 << 20  # a worker's results pipe (Linux's default: 64 KiB)


def _widen_pipe(fd: int) -> None:
    """Room for a whole chunk in the pipe: a 1 MiB chunk crosses in one write and
    one read instead of 16 of each, with as many wake-ups of the collector thread
    (each one a GIL hand-over).  Where Linux refuses (a user's pipe memory limit,
    not Linux), the pipe stays as it is."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is None:
        return
    try:
        fcntl.fcntl(fd, setpipe, PIPE_BYTES)
    except OSError:
        pass


# ---------------------------------------------------------------- forked workers
# A spawned worker is a fresh interpreter: its imports (the interpreter, the
# reading modules, zstandard, sqlite3: ~11.5 MiB of private memory each) are its
# own.  A worker forked from the main process before its threads and before boto3
# shares those pages with it (copy-on-write) and starts in milliseconds.  Forking
# is only safe while the process has one thread: the archive command forks at
# its opening (:func:`fork_workers`), and the pool takes those workers first.
WORKER_NAME = b"content_workers"  # a forked worker's name (/proc/PID/comm)


class _Forked:
    """A worker forked by :func:`fork_workers`, with what the pool uses of a
    :class:`subprocess.Popen` (``pid``, ``stdin``, ``stdout``, ``wait``, ``kill``)."""

    def __init__(self, pid: int, stdin: BinaryIO, stdout: BinaryIO):
        self.pid = pid
        self.stdin, self.stdout = stdin, stdout
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:  # reaped elsewhere: nothing more to learn
                    self.returncode = -signal.SIGKILL
                else:
                    if pid:
                        self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0005
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"content worker {self.pid}", timeout or 0)
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return code

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


_forked: list[_Forked] = []  # forked by fork_workers, not yet taken by a pool


def fork_workers(count: int) -> int:
    """Fork ``count`` content workers now, for the pool this process makes later
    (:class:`ContentWorkers` takes them before spawning any).  Only while this
    process has a single thread (fork copies no other thread, and a lock another
    thread held would stay locked in the child); returns how many were forked.

    A forked worker is the main process's copy up to here: ``gc.freeze()`` first,
    so that neither process's collector writes to the objects they share.  It
    keeps only its two pipes (as stdin and stdout) and stderr, ignores SIGINT,
    dies with its parent (PR_SET_PDEATHSIG) and ends with ``os._exit``: nothing of
    the parent's (atexit handlers, buffered output) runs or is written twice."""
    if count <= 0 or not hasattr(os, "fork") or threading.active_count() != 1:
        return 0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    gc.freeze()
    parent = os.getpid()
    made = 0
    for _ in range(count):
        pipes: list[int] = []
        try:
            to_worker, worker_in = os.pipe()[::-1]  # (write end, read end)
            pipes += (to_worker, worker_in)
            worker_out, from_worker = os.pipe()[::-1]
            pipes += (worker_out, from_worker)
            pid = os.fork()
        except OSError:  # no more processes or descriptors: the pool spawns the rest
            for fd in pipes:
                os.close(fd)
            break
        if pid == 0:  # the worker: never returns
            _serve_forked(worker_in, worker_out, parent)
        os.close(worker_in)
        os.close(worker_out)
        _widen_pipe(from_worker)
        _forked.append(_Forked(pid, os.fdopen(to_worker, "wb"), os.fdopen(from_worker, "rb")))
        made += 1
    return made


def _serve_forked(worker_in: int, worker_out: int, parent: int) -> NoReturn:
    code = 1
    try:
        os.dup2(worker_in, 0)
        os.dup2(worker_out, 1)
        _close_all_but_stdio()
        _malloc_as_spawned()
        _name_process(WORKER_NAME)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the main process stops us
        _die_with_parent(parent)
        _step_aside()
        out = os.fdopen(1, "wb")
        try:
            serve(os.fdopen(0, "rb"), out)
            code = 0
        except BrokenPipeError:  # the main process is gone
            code = 0
        except BaseException as err:  # a bug or no memory: one line for the main process
            try:
                _write_frame(out, f"{type(err).__name__}: {err}")
            except OSError:
                pass
    finally:
        os._exit(code)


def _close_all_but_stdio() -> None:
    """Close every descriptor above 2 (the parent's files, sockets, other workers'
    pipes: a worker holding another's pipe would keep it from seeing its end)."""
    try:
        open_fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: every possible descriptor
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        return
    for fd in open_fds:
        if fd > 2:
            try:
                os.close(fd)
            except OSError:  # (the listing's own descriptor, closed already)
                pass


# The largest buffer a worker makes: a file read whole (below a batch, 4 MiB) or a
# zstd frame of its largest chunk (the bound's few KiB over it).
LARGEST_BUFFER = (4 << 20) + (256 << 10)


def _malloc_as_spawned() -> None:
    """The main process serves allocations of 1 MiB and more with ``mmap``, fixed
    (cli/main.py), which a forked worker inherits.  A spawned worker has glibc's
    dynamic threshold: it settles at the largest buffer freed, and the heap keeps
    twice that free at its top, so a worker's buffers for files of a few MiB are
    used again, not faulted in afresh for every file (~4 us a 4 KiB page).  A
    forked worker is given the same."""
    set_mmap_threshold(LARGEST_BUFFER, keep_free=2 * LARGEST_BUFFER)


def _name_process(name: bytes) -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def release_forked() -> None:
    """End the forked workers no pool took (a run that read no small files)."""
    while _forked:
        worker = _forked.pop()
        for stream in (worker.stdin, worker.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


class _Worker:
    def __init__(self, settings: WorkerSettings, on_dead: Callable[["_Worker"], None]):
        self.process: subprocess.Popen[bytes] | _Forked
        if _forked:
            self.process = _forked.pop(0)
        else:
            env = dict(os.environ)
            here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
            self.process = subprocess.Popen(
                # -P: the working directory is not on the path (a root process imports
                # nothing from wherever the run was started)
                [sys.executable, "-P", "-m", "s3archive.archive.content_workers",
                 str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
            assert self.process.stdin is not None and self.process.stdout is not None
            _widen_pipe(self.process.stdout.fileno())
        self._in, self._out = self.process.stdin, self.process.stdout
        self._lock = threading.Lock()
        self.waiting: deque[Future[BatchRead]] = deque()
        self._on_dead = on_dead
        self.closing = False
        self.broken: str | None = None  # what was wrong with a frame it sent
        # the chunk bytes of its results: the frames of the batches in flight (four,
        # file_stage.BATCHES_PER_WORKER) and the one being read
        self._blocks = FrameBlocks(keep=5)
        self._send(settings)
        self._collector = threading.Thread(target=self._collect, daemon=True,
                                           name=f"content-worker-{self.process.pid}")
        self._collector.start()

    def _send(self, obj: object) -> None:
        try:
            _write_frame(self._in, obj)
        except (BrokenPipeError, OSError, ValueError):
            raise ContentWorkerFailed(self.death()) from None

    def submit(self, batch: list[FileToRead], read_below: int) -> Future[BatchRead]:
        job: Future[BatchRead] = Future()
        with self._lock:
            self.waiting.append(job)
        self._send((read_below, [(path, ino, ctime_ns, None if walked is None else tuple(walked))
                                 for path, ino, ctime_ns, walked in batch]))
        return job

    def _collect(self) -> None:
        try:
            while True:
                results = _read_frame(self._out, self._blocks)
                if isinstance(results, str):  # the worker failed: why
                    raise _WorkerError(results)
                files, pieces = results  # type: ignore[misc]
                done = BatchRead([FileDone(ok, read, size, problems, spooled,
                                           None if row is None else FileRow(*row),
                                           None if back is None else HandedBack(*back))
                                  for ok, read, size, problems, spooled, row, back in files],
                                 [EncodedChunk(*piece) for piece in pieces])
                with self._lock:
                    job = self.waiting.popleft()
                job.set_result(done)
        except _EndOfStream:
            pass
        except _WorkerError as err:
            self.broken = str(err)
            self.process.kill()
        except Exception as err:  # a broken frame: the worker is as good as dead
            self.broken = f"a frame that could not be read ({type(err).__name__}: {err})"
            self.process.kill()
        if self.closing:
            return
        message = self.death()
        with self._lock:
            jobs, self.waiting = list(self.waiting), deque()
        for job in jobs:
            job.set_exception(ContentWorkerFailed(message))
        self._on_dead(self)

    def death(self) -> str:
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        if self.broken is not None:
            how = f"failed: {self.broken}"
        return (f"a content worker (pid {self.process.pid}) {how} while reading files; "
                "the run was stopped and nothing was committed")

    def stop(self, kill: bool) -> None:
        self.closing = True
        if kill:  # first: closing its input flushes, which waits on a worker that reads no more
            self.process.kill()
        try:
            self._in.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._collector.join(timeout=10)
        self._out.close()


class ContentWorkers:
    """A pool of content worker processes; :meth:`submit` hands a batch to the
    least busy one.  Use as a context manager: workers stop on every path."""

    def __init__(self, count: int, settings: WorkerSettings):
        self.count = count
        self.settings = settings
        self._workers: list[_Worker] = []
        self._failure: str | None = None

    @property
    def started(self) -> bool:
        return bool(self._workers)

    def start(self) -> "ContentWorkers":
        if not self._workers:
            self._workers = [_Worker(self.settings, self._dead) for _ in range(self.count)]
        return self

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    def _dead(self, worker: _Worker) -> None:
        if self._failure is None:
            self._failure = worker.death()

    def submit(self, batch: list[FileToRead], read_below: int = 4 << 20
               ) -> Future[BatchRead]:
        """Describe and read ``batch`` in a worker: each file finished, and the chunks.
        Files given by name that are ``read_below`` bytes or larger are handed back,
        and so are the files after the batch has read that many bytes."""
        if self._failure is not None:
            raise ContentWorkerFailed(self._failure)
        worker = min(self._workers, key=lambda w: len(w.waiting))
        return worker.submit(batch, read_below)

    def close(self, kill: bool = False) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop(kill)

    def __enter__(self) -> "ContentWorkers":
        return self.start()

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        self.close(kill=value is not None)


if __name__ == "__main__":
    # by its own name: what is pickled here must unpickle there (not as __main__.X)
    from s3archive.archive.content_workers import main as _main
    _main()
