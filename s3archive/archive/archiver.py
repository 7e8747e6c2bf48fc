"""The archive pipeline: pickers and snapshotters into locked packs and one manifest.

Commit protocol (docs/FORMAT.md): every pack a run references is uploaded
(or its lock extended) before the manifest is written; the manifest, locked,
is the commit point.  A run that fails before it leaves packs behind but no
manifest; the next run reuses those packs through the local cache.

The archiver returns an :class:`ArchiveSummary` and prints nothing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any, BinaryIO, Callable, Generic, TypeVar

from s3archive import __version__
from s3archive.repo.catalog import RunRef, latest_run, list_runs, load_manifest
from s3archive.clock import Clock, isoformat, utc_now
from s3archive.config import Config
from s3archive.format.chunk_codec import ChunkCodec
from s3archive.archive.chunk_writer import ChunkWriter
from s3archive.archive.chunker import CHUNKER_PARAMS, Chunker
from s3archive.errors import (EXIT_OK, EXIT_PARTIAL, BucketNotLocked, ManifestError,
                              NoSuchVersion, StoreError)
from s3archive.archive.local_cache import CachedChunk, CachedPack, FileKey, LocalCache, cache_path
from s3archive.format import manifest_codec as codec
from s3archive.archive.assembly import ManifestAssembler
from s3archive.format.model import (FILE, HARDLINK, SYMLINK, Entry, Header, Snapshot, Trailer,
                                      Warning_, run_key)
from s3archive.archive.pack_lease import PackLease, PacksMissing
from s3archive.progress import Progress
from s3archive.archive.retention import REUSE_MARGIN, RunRetention, plan_run_retention
from s3archive.archive.sources import fs_metadata
from s3archive.archive.sources.entries import Unrecordable, Vanished, describe_entry
from s3archive.archive.sources.file_reader import Unreadable, read_file
from s3archive.archive.sources.pickers import PickResult, executables, run_pickers
from s3archive.archive.sources.snapshotters import run_snapshotter
from s3archive.archive.sources.walker import WalkItem, Walker, WalkOptions
from s3archive.store.base import ObjectLock, ObjectStore

log = logging.getLogger(__name__)
RUN_ID_FORMAT = "%Y%m%dT%H%M%SZ"
READERS = 2  # file reader threads: reading, chunking and hashing release the GIL
MAX_PENDING = 1024  # entries waiting for their file to be read before the walk waits


@dataclass
class ArchiveSummary:
    run_id: str
    host: str
    started: str
    finished: str = ""
    retain_until: str = ""
    tier: str = ""
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    others: int = 0
    bytes_total: int = 0  # logical size of the files
    bytes_read: int = 0
    files_unchanged: int = 0
    chunks_new: int = 0
    chunks_reused: int = 0
    bytes_new: int = 0
    bytes_uploaded: int = 0
    packs_uploaded: int = 0
    packs_extended: int = 0
    packs_rewritten: int = 0
    snapshots: int = 0
    warnings: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    manifest_key: str | None = None
    dry_run: bool = False
    exit_code: int = EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def describe_warning(warning: Warning_) -> str:
    where = f"{warning.path.decode('utf-8', 'backslashreplace')}: " if warning.path else ""
    return f"{warning.source}: {where}{warning.message}"


class Archiver:
    def __init__(self, config: Config, store: ObjectStore, *, clock: Clock = utc_now,
                 progress: Progress | None = None, dry_run: bool = False,
                 reuse_margin: timedelta = REUSE_MARGIN):
        self.config = config
        self.reuse_margin = reuse_margin
        self.store = store
        self.clock = clock
        self.progress = progress or Progress()
        self.dry_run = dry_run
        self.codec = ChunkCodec(config.content.compression_level)

    # ------------------------------------------------------------ the run
    def run(self) -> ArchiveSummary:
        from s3archive.archive.run_lock import RunLock

        cfg = self.config
        picking = _Background(run_pickers, cfg.pickers_dir, cfg.sources.picker_timeout)
        locked = self._check_bucket()
        db_path = cache_path(cfg.local.cache_dir, cfg.s3.bucket, cfg.s3.prefix, cfg.host_name)
        with RunLock(db_path.with_suffix(".lock")):
            cache = LocalCache(db_path)
            try:
                runs = list_runs(self.store, cfg.host_name)
                self._prepare_cache(cache, runs)
                started = self.clock()
                retention = plan_run_retention(cfg.retention, started,
                                               [_run_start(r) for r in runs])
                run_id = new_run_id(started, {r.run_id for r in runs})
                for attempt in (1, 2):
                    try:
                        return _Run(self, cache, run_id, started, retention, locked,
                                    picking).execute()
                    except CacheInconsistent as problem:
                        if attempt == 2:
                            raise StoreError(f"local cache {db_path}: {problem}") from None
                        log.warning("local cache: %s; reading every file again", problem)
                        cache.forget_files()
                    except PacksMissing as missing:
                        if attempt == 2:
                            raise StoreError(f"pack versions vanished twice: {missing}") from None
                        log.warning("packs known to the cache are gone (%s); forgetting them "
                                    "and starting over", missing)
                        cache.begin()
                        cache.forget_packs(missing.keys)
                        cache.commit()
                raise AssertionError("unreachable")
            finally:
                cache.close()

    def _check_bucket(self) -> bool:
        lock = self.store.bucket_lock_config()
        if lock.enabled:
            return True
        if self.config.allow_unlocked_bucket:
            log.warning("bucket %s has no Object Lock: backups are NOT immutable "
                        "(allow_unlocked_bucket = true)", self.store.location)
            return False
        raise BucketNotLocked(
            f"bucket {self.store.location} has no Object Lock enabled; refusing to archive "
            "(create it with `s3archive create-resources`, or set allow_unlocked_bucket = true "
            f"in {self.config.path})")

    def _prepare_cache(self, cache: LocalCache, runs: list[RunRef]) -> None:
        latest = latest_run(runs) if cache.is_empty() else None
        if latest is not None:
            try:
                manifest = load_manifest(self.store, latest)
            except (ManifestError, NoSuchVersion) as err:
                log.warning("cannot rebuild the cache from %s: %s", latest.key, err)
            else:
                learned = cache.rebuild_from_manifest(manifest)
                log.info("rebuilt the local cache from run %s (%d files)", latest.run_id, learned)
        lapsing = cache.packs_lapsing_before(self.clock() + self.reuse_margin)
        if lapsing:
            log.info("forgetting %d cached packs whose lock lapses soon", len(lapsing))
            cache.begin()
            cache.forget_packs(lapsing)
            cache.commit()


def new_run_id(started: datetime, taken: set[str]) -> str:
    """``20261121T235800Z``, with ``-1``, ``-2`` … if runs share the second."""
    base = started.strftime(RUN_ID_FORMAT)
    candidate, number = base, 0
    while candidate in taken:
        number += 1
        candidate = f"{base}-{number}"
    return candidate


def _run_start(run: RunRef) -> datetime:
    try:
        return datetime.strptime(run.run_id[:16], RUN_ID_FORMAT).replace(
            tzinfo=run.last_modified.tzinfo)
    except ValueError:
        return run.last_modified


_T = TypeVar("_T")


class _Background(Generic[_T]):
    """Run a function in a daemon thread (pickers run while S3 is consulted)."""

    def __init__(self, function: Callable[..., _T], *args: Any):
        self._result: list[_T] = []
        self._error: list[BaseException] = []

        def target() -> None:
            try:
                self._result.append(function(*args))
            except BaseException as err:  # handed to the caller of result()
                self._error.append(err)

        self._thread = threading.Thread(target=target, name="pickers", daemon=True)
        self._thread.start()

    def result(self) -> _T:
        self._thread.join()
        if self._error:
            raise self._error[0]
        return self._result[0]


class CacheInconsistent(Exception):
    """The local cache contradicts itself; the run starts over without its file rows."""


@dataclass
class _ReadOutcome:
    ok: bool = True
    bytes_read: int = 0
    warnings: list[Warning_] = field(default_factory=list)
    cache_key: FileKey | None = None  # set when the file did not change while read


@dataclass
class _Queued:
    """An entry waiting to be spooled in walk order.

    Either an ``entry`` (its file maybe still being read by ``job``) or, for a
    file-cache hit, its cached ``line`` and ``chunks``.
    """

    entry: Entry | None
    job: Future[_ReadOutcome] | None = None
    cache_key: FileKey | None = None
    cacheable: bool = True
    path: bytes = b""
    size: int = 0
    line: bytes = b""
    chunks: list[tuple[str, int]] = field(default_factory=list)


class _Run:
    """One attempt of one run."""

    def __init__(self, archiver: Archiver, cache: LocalCache, run_id: str, started: datetime,
                 retention: RunRetention, locked: bool, picking: "_Background[PickResult]"):
        self.a = archiver
        self.picking = picking
        self.cfg = archiver.config
        self.cache = cache
        self.started = started
        self.retention = retention
        self.locked = locked
        self.run_id = run_id
        self.warnings: list[Warning_] = []
        self.notes: dict[str, int] = {}
        self.summary = ArchiveSummary(run_id=self.run_id, host=self.cfg.host_name,
                                      started=isoformat(started), tier=retention.tier,
                                      retain_until=isoformat(retention.retain_until),
                                      dry_run=archiver.dry_run)
        self.pack_lock = ObjectLock(retention.mode, retention.pack_until) if locked else None
        self.writer = ChunkWriter(
            store=archiver.store, lookup_cached=cache.get_chunk,
            may_be_cached=cache.chunk_filter().may_contain, record_pack=self._record_pack,
            codec=archiver.codec, pack_size=self.cfg.content.pack_size_mib << 20,
            lock=self.pack_lock, dry_run=archiver.dry_run)
        self._chunkers = threading.local()
        self._file_rows: list[tuple[bytes, FileKey, bytes, list[tuple[str, int]]]] = []
        self.hardlinks: dict[tuple[int, int], bytes] = {}

    def _record_pack(self, pack: CachedPack, chunks: list[CachedChunk]) -> None:
        self.cache.add_pack(pack)
        self.cache.add_chunks(chunks)

    def warn(self, warning: Warning_) -> None:
        log.warning("%s", describe_warning(warning))
        self.warnings.append(warning)

    # -- the attempt
    def execute(self) -> ArchiveSummary:
        progress = self.a.progress
        try:
            with tempfile.TemporaryFile(prefix="s3archive-entries-") as spool:
                progress.phase("picking paths")
                picked = self.picking.result()
                for warning in picked.warnings:
                    self.warn(warning)
                if picked.pickers_run == 0:
                    self.warn(Warning_("picker", f"no executable picker in {self.cfg.pickers_dir}"))
                progress.phase("archiving files")
                self.cache.discard_pending_files()
                self.cache.begin()
                self._walk(picked.paths, spool)
                progress.phase("running snapshotters")
                snapshots = self._snapshots()
                progress.phase("uploading")
                self.writer.drain()
                if self.writer.resolve_reused(self.cache.get_chunks):
                    raise CacheInconsistent("file cache rows point at chunks it does not know")
                progress.phase("securing retention")
                lease = PackLease(self.a.store, self.cache, self.writer, self.retention,
                                  self.cfg.retention.repack_below, self.locked,
                                  self.a.dry_run).secure()
                self.summary.packs_extended = lease.extended
                self.summary.packs_rewritten = lease.rewritten
                progress.phase("writing manifest")
                key = self._write_manifest(spool, snapshots, lease.packs)
        finally:
            self.writer.close()
            self.cache.commit()
            progress.done()
        return self._finish(key)

    # -- files
    def _walk(self, paths: list[bytes], spool: IO[bytes]) -> None:
        """Walk in order; files are read by a pool, entries spooled in walk order."""
        options = WalkOptions(one_file_system=self.cfg.content.one_file_system,
                              exclude=self.cfg.content.exclude)
        pending: deque[_Queued] = deque()
        with ThreadPoolExecutor(READERS, thread_name_prefix="read") as readers:
            try:
                for item in Walker(options, self.warn).walk(paths):
                    queued = self._entry(item, readers)
                    if queued is not None:
                        pending.append(queued)
                        self._spool_ready(pending, spool, wait=len(pending) > MAX_PENDING)
                self._spool_ready(pending, spool, wait=True)
                self.cache.put_files(self._file_rows, pending=True)
                self._file_rows = []
            except BaseException:
                readers.shutdown(wait=True, cancel_futures=True)  # do not read the queue
                raise

    def _spool_ready(self, pending: deque[_Queued], spool: IO[bytes], wait: bool) -> None:
        while pending:
            queued = pending[0]
            if queued.job is not None:
                if not (wait or queued.job.done()):
                    return
                outcome = queued.job.result()
                for warning in outcome.warnings:
                    self.warn(warning)
                self.summary.bytes_read += outcome.bytes_read
                if not outcome.ok:
                    pending.popleft()
                    continue
                queued.cache_key = outcome.cache_key
            pending.popleft()
            entry = queued.entry
            if entry is not None:
                queued.path, queued.size = entry.path, entry.size
                queued.chunks = entry.chunks  # type: ignore[assignment]
                queued.line = codec.dumps(codec.encode_entry(entry, with_chunks=False))[:-1]
                if entry.kind != FILE:
                    spool.write(queued.line + b"\n")
                    self.a.progress.file(queued.path, 0)
                    continue
            self.summary.files += 1
            self.summary.bytes_total += queued.size
            self.a.progress.file(queued.path, queued.size)
            spool.write(_spool_file_line(queued.line, queued.chunks))
            if (queued.cache_key is not None and queued.cacheable and entry is not None
                    and not self.a.dry_run):
                self._file_rows.append((queued.path, queued.cache_key, queued.line,
                                        queued.chunks))
                if len(self._file_rows) >= 512:
                    self.cache.put_files(self._file_rows, pending=True)
                    self._file_rows = []

    def _entry(self, item: WalkItem, readers: ThreadPoolExecutor) -> _Queued | None:
        st = item.st
        kind = fs_metadata.kind_of(st.st_mode)
        if kind is None:
            self.notes["sockets_skipped"] = self.notes.get("sockets_skipped", 0) + 1
            log.info("skipping socket %s", item.path.decode("utf-8", "backslashreplace"))
            return None
        if kind == FILE:
            unchanged = self._unchanged(item.path, st)
            if unchanged is not None:
                return unchanged
        try:
            entry, problem = describe_entry(item.path, st)
        except Vanished:
            self.warn(Warning_("file", "vanished during the walk", item.path))
            return None
        except Unrecordable as left_out:
            self.warn(left_out.warning)
            return None
        if problem is not None:
            self.warn(problem)
        if kind == FILE:
            queued = self._file(entry, st, readers)
            if queued is not None and problem is not None:
                queued.cacheable = False  # next run: read the metadata again
            return queued
        if kind == "dir":
            self.summary.dirs += 1
        elif kind == SYMLINK:
            self.summary.symlinks += 1
        else:
            self.summary.others += 1
        return _Queued(entry)

    def _file(self, entry: Entry, st: os.stat_result, readers: ThreadPoolExecutor
              ) -> _Queued | None:
        link_key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and link_key in self.hardlinks:
            entry.kind = HARDLINK
            entry.target = self.hardlinks[link_key]
            self.summary.others += 1
            return _Queued(entry)
        if st.st_nlink > 1:
            # read now: later names of the group must know whether this one made it
            outcome = self._read(entry, st)
            for warning in outcome.warnings:
                self.warn(warning)
            self.summary.bytes_read += outcome.bytes_read
            if not outcome.ok:
                return None
            self.hardlinks[link_key] = entry.path
            return _Queued(entry, cache_key=outcome.cache_key)
        return _Queued(entry, job=readers.submit(self._read, entry, st))

    def _unchanged(self, path: bytes, st: os.stat_result) -> _Queued | None:
        """A file the cache knows, unchanged since (same inode, size, mtime, ctime).

        Its manifest line is reused as it was: a changed owner, mode, ACL or
        xattr would have changed its ctime.
        """
        link_key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and link_key in self.hardlinks:
            return None  # a later name of a hardlink group: a hardlink entry
        key = FileKey(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hit = self.cache.get_file(path, key)
        if hit is None:
            return None
        for digest, _ in hit.chunks:
            self.writer.reuse(digest)
        if st.st_nlink > 1:
            self.hardlinks[link_key] = path
        self.summary.files_unchanged += 1
        return _Queued(None, path=path, size=st.st_size, line=hit.line, chunks=hit.chunks)

    def _read(self, entry: Entry, st: os.stat_result) -> _ReadOutcome:
        """Read a file (in a reader thread), once more if it changed meanwhile."""
        outcome = _ReadOutcome()
        for attempt in (1, 2):
            try:
                content = read_file(entry.path, st.st_ino, self._chunker(), self.writer.add,
                                    self.a.progress.read)
            except Unreadable as problem:
                outcome.warnings.append(Warning_("file", str(problem), entry.path))
                outcome.ok = False
                return outcome
            outcome.bytes_read += content.bytes_read
            if not content.changed:
                break
            if attempt == 2:
                outcome.warnings.append(Warning_(
                    "file", "changed while being read (read twice); stored as read the "
                    "second time", entry.path))
        after = content.after
        entry.size, entry.extents = content.size, content.extents
        entry.chunks = content.chunks  # type: ignore[assignment]
        entry.mtime_ns, entry.ino, entry.ctime_ns = after.st_mtime_ns, after.st_ino, after.st_ctime_ns
        if not content.changed and after.st_ctime_ns == st.st_ctime_ns:
            # (a ctime that moved since the walk may hide a metadata change
            # the entry does not have: such a file is described afresh next time)
            outcome.cache_key = FileKey(after.st_dev, after.st_ino, after.st_size,
                                        after.st_mtime_ns, after.st_ctime_ns)
        return outcome

    def _chunker(self) -> Chunker:
        """pyfastcdc is not thread-safe: one chunker per thread."""
        chunker = getattr(self._chunkers, "chunker", None)
        if chunker is None:
            chunker = self._chunkers.chunker = Chunker()
        return chunker

    # -- snapshots
    def _snapshots(self) -> list[Snapshot]:
        snapshots = []
        for path in executables(self.cfg.snapshots_dir):
            chunks: list[tuple[str, int]] = []

            def consume(reader: BinaryIO) -> int:
                total = 0
                for plain in self._chunker().stream(reader):
                    chunks.append(self.writer.add(plain))
                    total += len(plain)
                    self.a.progress.read(len(plain))
                return total

            self.a.progress.phase(f"snapshot {path.name}")
            outcome = run_snapshotter(path, self.cfg.sources.snapshot_timeout, consume)
            if outcome.problem:
                self.warn(Warning_("snapshot", f"{path.name}: {outcome.problem}"))
            size = sum(s for _, s in chunks)
            self.summary.bytes_read += size
            snapshots.append(Snapshot(
                name=outcome.name, status=outcome.status, exit_status=outcome.exit_status,
                size=size, started=outcome.started, duration_s=outcome.duration_s,
                description=outcome.description, restore_through=outcome.restore_through,
                chunks=chunks))  # type: ignore[arg-type]
        self.summary.snapshots = len(snapshots)
        return snapshots

    # -- manifest: the commit point
    def _write_manifest(self, spool: IO[bytes], snapshots: list[Snapshot],
                        reused: dict) -> str | None:
        assembler = ManifestAssembler(self.writer.locations, reused, self.pack_lock)
        header = Header(host=self.cfg.host_name, run_id=self.run_id, started=self.started,
                        lock_mode=self.retention.mode if self.locked else None,
                        retain_until=self.retention.retain_until, tier=self.retention.tier,
                        tool=f"s3archive {__version__}",
                        legal_hold=self.cfg.retention.legal_hold, chunker=CHUNKER_PARAMS)

        def trailer() -> Trailer:
            self._fill_counts()
            return Trailer(finished=self.a.clock(), counts=self._counts(), stats=self._stats(),
                           warnings=self.warnings)

        with tempfile.TemporaryFile(prefix="s3archive-manifest-") as out:
            assembler.write(out, header, spool, snapshots, trailer)
            out.seek(0)
            blob = out.read()
        if self.a.dry_run:
            return None
        key = run_key(self.cfg.host_name, self.run_id)
        hold = self.cfg.retention.legal_hold and self.locked
        lock = ObjectLock(self.retention.mode, self.retention.retain_until) if self.locked else None
        if hold:  # packs first: a held manifest never points at unheld packs
            for ref in assembler.table.values():
                self.a.store.set_legal_hold(ref.key, ref.version_id, True)
        self.a.store.put(key, blob, lock, legal_hold=hold)
        self.cache.commit_pending_files()
        self.cache.set_meta("last_run_id", self.run_id)
        return key

    def _fill_counts(self) -> None:
        stats = self.writer.stats
        s = self.summary
        s.chunks_new, s.chunks_reused, s.bytes_new = stats.chunks_new, stats.chunks_reused, stats.bytes_new
        s.bytes_uploaded, s.packs_uploaded = stats.bytes_uploaded, stats.packs_uploaded

    def _counts(self) -> dict[str, int]:
        s = self.summary
        counts = {"files": s.files, "dirs": s.dirs, "symlinks": s.symlinks, "others": s.others,
                  "snapshots": s.snapshots, "warnings": len(self.warnings)}
        counts.update(self.notes)
        return counts

    def _stats(self) -> dict[str, int]:
        s = self.summary
        return {"bytes_total": s.bytes_total, "bytes_read": s.bytes_read,
                "files_unchanged": s.files_unchanged, "chunks_new": s.chunks_new,
                "chunks_reused": s.chunks_reused, "bytes_new": s.bytes_new,
                "bytes_uploaded": s.bytes_uploaded, "packs_uploaded": s.packs_uploaded,
                "packs_extended": s.packs_extended, "packs_rewritten": s.packs_rewritten}

    def _finish(self, key: str | None) -> ArchiveSummary:
        self._fill_counts()
        s = self.summary
        s.finished = isoformat(self.a.clock())
        s.manifest_key = key
        s.warnings = [describe_warning(w) for w in self.warnings]
        s.exit_code = EXIT_PARTIAL if self.warnings else EXIT_OK
        counter = getattr(self.a.store, "snapshot", None)
        if callable(counter):
            s.requests = counter()["requests"]
        return s


def _spool_file_line(line: bytes, chunks: list[tuple[str, int]]) -> bytes:
    """A file's line without chunks, then a TAB and its ``hash:size`` list.

    Chunk locations are known only at assembly (manifest/assembly.py); JSON
    never contains a raw TAB, so the split there is unambiguous.
    """
    listed = ",".join(f"{digest}:{size}" for digest, size in chunks)
    return line + b"\t" + listed.encode("ascii") + b"\n"
