"""The archive pipeline: pickers and snapshotters into locked packs and one manifest.

Commit protocol (docs/FORMAT.md): every pack a run references is uploaded
(or its lock extended) before the manifest is written; the manifest, locked,
is the commit point.  A run that fails before it leaves packs behind but no
manifest; the next run reuses those packs through the local cache.

The archiver returns an :class:`ArchiveSummary` and prints nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import IO, Any, Callable, Generic, TypeVar

from s3archive import __version__
from s3archive.archive.assembly import ManifestAssembler
from s3archive.archive.chunk_sources import SpoolSources
from s3archive.archive.chunk_writer import ChunkWriter, NewPack, WriterStats
from s3archive.archive.chunker import CHUNKER_PARAMS
from s3archive.archive.commit import commit_manifest
from s3archive.archive.content_workers import ContentWorkers, WorkerSettings
from s3archive.archive.file_stage import FileStage, FileTally
from s3archive.archive.local_cache import UNLOCKED_UNTIL, CachedPack, LocalCache, cache_path
from s3archive.archive.group_index import GroupIndex, UploadedBlobs, for_host
from s3archive.archive.pack_index import PackIndexWriter, cache_name, learn
from s3archive.archive.pack_lease import LeaseResult, NoSources, PackLease, PacksMissing
from s3archive.archive.packer import ChunkId, ChunkLocation
from s3archive.archive.run_index import PackRows
from s3archive.archive.encryption import RunEncryption
from s3archive.archive.encryption_rule import decide_encryption
from s3archive.archive.dir_cache import DirCache
from s3archive.archive.tree_builder import TreeBuilder, TreeResult, record_snapshot
from s3archive.archive.retention import (REUSE_MARGIN, RunRetention, check_retain_until,
                                        plan_run_retention)
from s3archive.archive.snapshot_stage import PendingSnapshot, run_snapshotters
from s3archive.archive.sources.pickers import PickResult, executables, run_pickers
from s3archive.archive.sources.walker import WalkOptions
from s3archive.clock import Clock, check_clock, isoformat, parse_iso, utc_now
from s3archive.config import Config
from s3archive.errors import (EXIT_OK, EXIT_PARTIAL, BucketNotLocked, ManifestError,
                              NothingToArchive, S3ArchiveError, StoreError)
from s3archive.format.chunk_codec import ChunkCodec, chunk_hash
from s3archive.format.limits import LIMITS
from s3archive.format import pack2
from s3archive.format import tree_codec as tc
from s3archive.format.manifest_codec import encode_snapshot, encode_warning
from s3archive.format.model import ChunkRef, Header, PackRef, Trailer, Warning_, run_key
from s3archive.format.run_root import ROOT_LIMITS, RunRoot, encode_root
from s3archive.format.run_id import new_run_id
from s3archive.progress import Progress
from s3archive.stats import RunStats, describe_warning
from s3archive.format import run_root
from s3archive.repo.catalog import (ROOT, RunRef, fetch_run_object, latest_run, list_runs,
                                   load_manifest, open_tree, peek_format, run_id_time)
from s3archive.store.base import ObjectLock, StoreWriter

log = logging.getLogger(__name__)


@dataclass
class ArchiveSummary:
    """The run as the archiver reports it; :attr:`stats` gives its figures as
    the one :class:`~s3archive.stats.RunStats` every reader shares."""

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
    bytes_snapshots: int = 0
    bytes_read: int = 0
    files_unchanged: int = 0
    chunks_new: int = 0
    chunks_reused: int = 0
    trees_new: int = 0
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

    @property
    def stats(self) -> RunStats:
        return RunStats(**{f.name: getattr(self, f.name) for f in fields(RunStats)
                           if f.name not in ("warnings", "requests")},
                        warnings=tuple(self.warnings), requests=dict(self.requests))

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "host": self.host, "started": self.started,
                "finished": self.finished, "tier": self.tier,
                "retain_until": self.retain_until, "manifest_key": self.manifest_key,
                "dry_run": self.dry_run, "exit_code": self.exit_code,
                **self.stats.to_json()}


class Archiver:
    def __init__(self, config: Config, store: StoreWriter, *, clock: Clock = utc_now,
                 progress: Progress | None = None, dry_run: bool = False,
                 reuse_margin: timedelta = REUSE_MARGIN, start_encryption: bool = False,
                 storage_format: int = 2):
        # format 1 is written only by tests (a bucket that also holds format-1 runs)
        if storage_format not in (1, 2):
            raise ValueError(f"unknown storage format {storage_format}")
        self.storage_format = storage_format
        self.config = config
        self.start_encryption = start_encryption  # archive --start-encryption (FORMAT2 11)
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
        locked, clock_offset = self._check_bucket()
        db_path = cache_path(cfg.local.cache_dir, cfg.s3.bucket, cfg.s3.prefix, cfg.host_name)
        with RunLock(db_path.with_suffix(".lock")):
            cache = LocalCache(db_path)
            try:
                runs = list_runs(self.store, cfg.host_name)
                encryption, encryption_started = self._encryption(runs)
                cache.use_cipher(encryption.file_cipher() if encryption else None)
                self._prepare_cache(cache, runs, locked, encryption is not None)
                started = self.clock()
                retention = plan_run_retention(cfg.retention, started,
                                               [_run_start(r) for r in runs])
                check_retain_until(retention, started - clock_offset)
                run_id = new_run_id(started, {r.run_id for r in runs})
                plan = RunPlan(cfg.host_name, run_id, started, retention, locked,
                               encryption, encryption_started)
                for attempt in (1, 2):
                    try:
                        return self._attempt(cache, plan, picking)
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
                # a picker forked while the lock is held keeps a copy of its descriptor
                # until it execs: the lock is released only once no picker can start
                picking.wait()

    def _attempt(self, cache: LocalCache, plan: RunPlan,
                 picking: "_Background[PickResult]") -> ArchiveSummary:
        cfg = self.config
        pack_lock = (ObjectLock(plan.retention.mode, plan.retention.pack_until)
                     if plan.locked else None)

        indexes = (PackIndexWriter(self.store, plan.host, plan.encryption.secret)
                   if plan.encryption is not None else None)

        uploaded = (UploadedBlobs() if _group_index(cfg, self.store, plan.encryption is not None)
                    else None)

        def record_pack(pack: NewPack, chunks: list[ChunkLocation], rows: PackRows) -> None:
            cache.add_pack(CachedPack(pack.key, pack.version_id, pack.size,
                                      pack_lock.mode if pack_lock else None,
                                      pack_lock.retain_until if pack_lock else UNLOCKED_UNTIL))
            cache.add_pack_rows(rows)
            if indexes is not None:  # what a lost cache learns again (archive/pack_index.py)
                version = indexes.write(pack.key, pack.version_id, pack.size, chunks, pack_lock)
                cache.set_meta(cache_name(pack.key), version)
            if uploaded is not None and pack.key.startswith("data/"):
                uploaded.add(pack.key, chunks)  # for the group index (FORMAT2 16)

        format2 = self.storage_format == 2
        # nothing to lease, no file-cache hit to locate: trees built while data uploads
        own_packs_only = cache.is_empty() and not cache.has_files()
        chunk_filter = cache.deferred_chunk_filter()  # (not read by a run that asks little)
        data_prefixes = ("data/", "packs/") if format2 else ("packs/",)

        def cached_in(prefixes: tuple[str, ...]) -> Callable[[str], ChunkLocation | None]:
            def lookup(digest: str) -> ChunkLocation | None:
                found = cache.get_chunk(digest)
                return found if found is not None and found.pack.startswith(prefixes) else None
            return lookup

        enc = plan.encryption
        if enc is not None:  # an encrypted run reuses no format-1 (plain) pack
            data_prefixes = ("data/",)
        writer = ChunkWriter(
            store=self.store, lookup_cached=cached_in(data_prefixes),
            reuse_prefixes=data_prefixes,
            may_be_cached=chunk_filter.may_contain, record_pack=record_pack,
            lookup_many=cache.get_chunks, cache_file=cache.path,
            codec=self.codec, pack_size=cfg.content.pack_size_mib << 20,
            lock=pack_lock, dry_run=self.dry_run, uploaders=cfg.s3.max_concurrency,
            prefix="data" if format2 else None,
            id_of=enc.data_id if enc else chunk_hash, sealer=enc)
        meta = None
        if format2:
            meta = ChunkWriter(
                store=self.store, lookup_cached=cached_in(("meta/",)),
                may_be_cached=chunk_filter.may_contain, record_pack=record_pack,
                codec=ChunkCodec(META_LEVEL),
                pack_size=min(cfg.content.pack_size_mib << 20, META_PACK_SIZE),
                lock=pack_lock, dry_run=self.dry_run, uploaders=cfg.s3.max_concurrency,
                prefix="meta", id_of=enc.meta_id if enc else chunk_hash, sealer=enc,
                # held packs wait there (a run's own state, on the disk sized for the
                # cache; not the temporary directory, which may be memory: tmpfs)
                spill_dir=cache.path.parent)
        run = _Run(RunContext(cfg, self.store, cache, writer, self.progress, self.clock,
                              self.dry_run, meta, uploaded, own_packs_only), plan)
        try:
            return run.execute(picking)
        finally:
            if uploaded is not None:
                uploaded.close()

    def _check_bucket(self) -> tuple[bool, timedelta]:
        """Whether the bucket locks, and how far this host's clock is ahead of the store's.

        Nothing is uploaded before both are known to be sane: a clock far off
        would lock too short or too long, and name the run wrongly.
        """
        lock = self.store.bucket_lock_config()
        host_now = self.clock()
        check_clock(host_now, lock.server_time)
        offset = host_now - lock.server_time if lock.server_time else timedelta(0)
        if lock.enabled:
            return True, offset
        if self.config.allow_unlocked_bucket:
            log.warning("bucket %s has no Object Lock: backups are NOT immutable "
                        "(allow_unlocked_bucket = true)", self.store.location)
            return False, offset
        raise BucketNotLocked(
            f"bucket {self.store.location} has no Object Lock enabled; refusing to archive "
            "(create it with `s3archive create-resources`, or set allow_unlocked_bucket = true "
            f"in {self.config.path})")

    def _encryption(self, runs: list[RunRef]) -> tuple[RunEncryption | None, bool]:
        """Whether this run encrypts, by the mixing rule (a host's runs are all plain or
        all encrypted but for one recorded switch), and whether it is that switch."""
        cfg = self.config
        # the newest readable run says; one that cannot be read (damaged, or planted by
        # whoever held this host's credentials: the store locks what s3archive wrote)
        # is named and passed over
        candidates, before, readable = list(runs), None, False
        while (latest := latest_run(candidates)) is not None:
            try:
                before = load_manifest(self.store, latest, part=ROOT).header.encryption
                readable = True
                break
            except ManifestError as err:
                log.warning("the mixing rule passes over %s: %s", latest.key, err)
                candidates = [r for r in candidates
                              if (r.host, r.run_id) != (latest.host, latest.run_id)]
        decision = decide_encryption(cfg.host_name, before, cfg.encryption,
                                     self.start_encryption, first_run=not readable)
        for note in decision.notes:
            log.warning("%s", note)
        if not decision.encrypt:
            return None, False
        assert cfg.encryption is not None
        if self.storage_format != 2:
            raise ValueError("format 1 has no encryption")
        return (RunEncryption(list(cfg.encryption.recipients), cfg.encryption.dedup_secret),
                decision.encryption_started)

    def _rebuild_cache(self, cache: LocalCache, run: RunRef) -> int:
        """Fill an empty cache from ``run``, streamed: a format-2 run's tree is walked
        (one node per level in memory, whole metadata packs read) and its rows go in
        in batches; a format-1 manifest is read whole, as it is stored."""
        blob, where = fetch_run_object(self.store, run)
        if peek_format(blob, where) != run_root.FORMAT:
            return cache.rebuild_from_manifest(load_manifest(self.store, run))
        tree = open_tree(self.store, run, blob, whole_packs=True)

        def metadata() -> list[ChunkRef]:  # the blobs read since the last batch
            blobs = list(tree.metadata.values())
            tree.metadata.clear()
            return blobs

        snapshots = tree.snapshots()
        return cache.rebuild(tree.root.header, tree.root.packs, tree.walk(),
                             [c for snap in snapshots for c in snap.chunks], metadata)

    def _prepare_cache(self, cache: LocalCache, runs: list[RunRef], locked: bool,
                       encrypting: bool = False) -> None:
        latest = latest_run(runs) if cache.is_empty() else None
        if latest is not None and encrypting:
            # the host cannot read its encrypted runs back (that is the point): it learns
            # its packs' keyed blob ids from its index objects, and reads every file again
            assert self.config.encryption is not None
            learned = learn(self.store, self.config.host_name,
                            self.config.encryption.dedup_secret, cache, locked)
            log.info("the local cache is empty: learned %d packs from this host's index "
                     "objects; every file is read again, stored data is reused", learned)
            latest = None
        if latest is not None:
            try:
                learned = self._rebuild_cache(cache, latest)
            except S3ArchiveError as err:  # the run goes on, reading and uploading afresh
                log.warning("cannot rebuild the cache from %s: %s", latest.key, err)
            else:
                log.info("rebuilt the local cache from run %s (%d files)", latest.run_id, learned)
        group = _group_index(self.config, self.store, encrypting)
        if group is not None:  # what the other hosts of the dedup group store (FORMAT2 16)
            try:
                report = group.refresh(cache, self.clock(), locked)
            except StoreError as err:  # the run goes on, deduplicating against its own data
                log.warning("cannot read the group index %s (%s): this run reuses only what "
                            "the local cache knew (a backup policy from before issue 13? "
                            "run create-resources again)", group.prefix, err)
            else:
                log.info("dedup group %s: %d list requests, %d index objects read (%d packs, "
                         "%d blobs), %d refused", group.directory, report.listed,
                         report.objects, report.packs, report.blobs, report.skipped)
        lapsing = cache.packs_lapsing_before(self.clock() + self.reuse_margin)
        if lapsing:
            log.info("forgetting %d cached packs whose lock lapses soon", len(lapsing))
            cache.begin()
            cache.forget_packs(lapsing)
            cache.commit()
        if locked and self.config.retention.mode == "COMPLIANCE":
            # S3 turns a GOVERNANCE lock into COMPLIANCE only with a governance bypass,
            # and the backup role cannot read packs/ to copy them: a COMPLIANCE run
            # reads the files of such packs again and writes their chunks anew
            weaker = cache.packs_not_locked_in("COMPLIANCE")
            if weaker:
                log.info("forgetting %d cached packs not locked in COMPLIANCE mode",
                         len(weaker))
                cache.begin()
                cache.forget_packs(weaker)
                cache.commit()


def _group_index(config: Config, store: StoreWriter, encrypting: bool) -> GroupIndex | None:
    secret = config.encryption.dedup_secret if encrypting and config.encryption else None
    return for_host(store, config.host_name, config.dedup_group, secret)


def _run_start(run: RunRef) -> datetime:
    return run_id_time(run.run_id) or run.last_modified


_T = TypeVar("_T")


class _Background(Generic[_T]):
    """Run a function in a daemon thread (pickers run while S3 is consulted)."""

    def __init__(self, function: Callable[..., _T], *args: Any, name: str = "pickers"):
        self._result: list[_T] = []
        self._error: list[BaseException] = []

        def target() -> None:
            try:
                self._result.append(function(*args))
            except BaseException as err:  # handed to the caller of result()
                self._error.append(err)

        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> _T:
        self._thread.join()
        if self._error:
            raise self._error[0]
        return self._result[0]


class _EarlyTrees:
    """The trees of a run that can reference only its own packs, built while the walk
    goes on (FileStage calls this between entries): the spooled lines are taken
    once every chunk they name is placed (its location final: such a run rewrites
    no pack).  The metadata packs they fill wait unsent until the data is secured,
    on disk (ChunkWriter.hold_uploads): the trees are built for the whole walk, the
    directories it has not left yet after it."""

    def __init__(self, builder: TreeBuilder, spool: IO[bytes], writer: ChunkWriter):
        self.builder = builder
        self._spool = spool
        self._writer = writer
        self._fed = 0  # the spool's bytes fed to the builder so far
        builder.start(spool)

    def __call__(self) -> None:
        end = self._spool.tell()
        if end < EARLY_AFTER_BYTES or end - self._fed < EARLY_FEED_BYTES:
            return
        if self._writer.all_placed():  # (asked after ``end``: those lines' chunks are)
            self._spool.flush()  # (the lines are read with pread)
            self.builder.feed(end)
            self._fed = end


class CacheInconsistent(Exception):
    """The local cache contradicts itself; the run starts over without its file rows."""


@dataclass(frozen=True)
class RunPlan:
    """What is decided about a run before it starts."""

    host: str
    run_id: str
    started: datetime
    retention: RunRetention
    locked: bool  # the bucket has Object Lock: packs and manifest are locked
    encryption: RunEncryption | None = None  # an encrypted run (format 2)
    encryption_started: bool = False  # the recorded switch from plain (archive --start-encryption)


@dataclass(frozen=True)
class RunContext:
    """What one attempt of a run works with, handed to it explicitly."""

    config: Config
    store: StoreWriter
    cache: LocalCache
    writer: ChunkWriter
    progress: Progress
    clock: Clock
    dry_run: bool
    meta: ChunkWriter | None = None  # format 2: the metadata packs' writer
    uploaded: UploadedBlobs | None = None  # the data blobs uploaded, for the group index
    # the cache knew no pack when the run began: it can reference only packs it writes,
    # so its trees are built while its last data packs upload (FORMAT.md part 2, 8.1)
    own_packs_only: bool = False


# Metadata packs are smaller than data packs: a reader of one directory fetches
# only the blobs it needs, but a whole-run walk reads whole metadata packs.
META_PACK_SIZE = 8 << 20
# zstd level of metadata blobs: nodes are mostly hex chunk ids and short names, which
# level 1 packs as small as 6 does (20,000 small files: meta/ 1277 kB at 1, 1311 at 3,
# 1357 at 6) at a fifth of the CPU, on the main thread (a node's place is known only
# once it is compressed)
META_LEVEL = 1
MAX_META_REBUILDS = 4
SPOOL_BUFFER = 64 << 10  # bytes of spooled lines buffered before a write
# Trees are built during the walk once this many bytes are spooled (~50,000 entries):
# a smaller run's trees are built after its walk (a fraction of a second), its
# metadata pack not alive during the walk, when the run's memory peaks (20,000
# files: +3 MiB measured)
EARLY_AFTER_BYTES = 8 << 20
# ... each time this many more are spooled: the spool is flushed (a write, the main
# thread's GIL handed over) once a buffer's worth, as without the trees
EARLY_FEED_BYTES = SPOOL_BUFFER


MAX_RECORDED_WARNINGS = 10_000  # in the manifest; the log has them all
_WARNING_TEXT = 4096  # characters of one recorded message


def _recordable(warning: Warning_) -> Warning_:
    """The warning within the manifest's bounds: a path longer than a reader
    accepts moves (escaped, clipped) into the message; long messages are clipped."""
    message, path = warning.message, warning.path
    if path is not None and len(path) > LIMITS.path_bytes:
        shown = path.decode("utf-8", "backslashreplace")
        message = f"{message} (path of {len(path)} bytes: {shown[:1024]}…)"
        path = None
    if len(message) > _WARNING_TEXT:
        message = message[:_WARNING_TEXT] + "…"
    if message is warning.message and path is warning.path:
        return warning
    return Warning_(warning.source, message, path)


class _Run:
    """One attempt of one run: files, snapshots, leases, then the manifest."""

    def __init__(self, ctx: RunContext, plan: RunPlan):
        self.ctx = ctx
        self.plan = plan
        self.warnings: list[Warning_] = []
        self.warnings_dropped = 0

    def warn(self, warning: Warning_) -> None:
        """Log every warning; record at most MAX_RECORDED_WARNINGS, each in a form
        the reader accepts (a writer never writes what its reader refuses)."""
        log.warning("%s", describe_warning(warning))
        if len(self.warnings) >= MAX_RECORDED_WARNINGS:
            self.warnings_dropped += 1
            return
        self.warnings.append(_recordable(warning))

    def recorded_warnings(self) -> list[Warning_]:
        if not self.warnings_dropped:
            return self.warnings
        return self.warnings + [Warning_("run", f"{self.warnings_dropped} more warnings were "
                                                "logged but not recorded in the manifest")]

    def execute(self, picking: "_Background[PickResult]") -> ArchiveSummary:
        ctx, cfg, progress = self.ctx, self.ctx.config, self.ctx.progress
        workers = self._content_workers()  # started by the file stage if it reads enough
        files = FileStage(WalkOptions(one_file_system=cfg.content.one_file_system,
                                      exclude=cfg.content.exclude),
                          ctx.cache, ctx.writer, progress, self.warn,
                          remember_files=not ctx.dry_run,
                          lock_timeout=cfg.sources.lock_timeout, workers=workers)
        lease = LeaseResult()
        snapshots: list[PendingSnapshot] = []
        try:
            # (a larger buffer: a write syscall, a GIL hand-over, per 64 KiB of lines,
            # not per 8 KiB; the trees built during the walk flush it before reading.
            # 1 MiB moved the run's heap peak into the walk, +480 KiB, where it then
            # grew with the file count up to the read blocks' bounds: test_archive_memory)
            with tempfile.TemporaryFile(prefix="s3archive-entries-",
                                        buffering=SPOOL_BUFFER) as spool:
                progress.phase("picking paths")
                picked = picking.result()
                if picked.all_failed and not executables(cfg.snapshots_dir):
                    raise NothingToArchive(
                        f"every picker in {cfg.pickers_dir} failed and no snapshotter "
                        f"is enabled; no manifest written ({_first_few(picked.failures)})")
                for warning in picked.warnings:
                    self.warn(warning)
                if picked.pickers_run == 0:
                    self.warn(Warning_("picker", f"no executable picker in {cfg.pickers_dir}"))
                progress.phase("archiving files")
                ctx.cache.discard_pending_files()
                ctx.cache.begin()
                early = None
                if ctx.meta is not None and ctx.own_packs_only:
                    # its metadata packs wait, unsent, until its data is secured
                    ctx.meta.hold_uploads()
                    early = _EarlyTrees(self._tree_builder(LeaseResult()), spool, ctx.writer)
                files.run(picked.paths, spool, spooled=early)
                if workers is not None:
                    workers.close()
                progress.phase("running snapshotters")
                snapshots = run_snapshotters(cfg.snapshots_dir, cfg.sources.snapshot_timeout,
                                             ctx.writer, progress, self.warn)
                if early is not None:
                    progress.phase("writing metadata")
                    key, lease = self._write_root(spool, snapshots, None, files.tally,
                                                  early.builder)
                elif ctx.meta is not None:
                    lease = self._secure_data(spool)
                    progress.phase("writing metadata")
                    key, lease = self._write_root(spool, snapshots, lease, files.tally)
                else:
                    lease = self._secure_data(spool)
                    progress.phase("writing manifest")
                    key = self._write_manifest(spool, snapshots, lease, files.tally)
        finally:
            if workers is not None:
                workers.close(kill=True)  # (stopped already unless the run failed)
            ctx.writer.close()
            ctx.writer.release()
            if ctx.meta is not None:
                ctx.meta.close()
                ctx.meta.release()
            ctx.cache.commit()
            progress.done()
        return self._summary(key, files.tally, snapshots, lease)

    def _secure_data(self, spool: IO[bytes] | None, shown: bool = True) -> LeaseResult:
        """Every data pack uploaded (FORMAT.md 8.1 step 1), then the leases of the
        data packs the run reuses (step 2); ``shown``: as the progress's phases.
        Without ``spool`` no pack is rewritten from the run's files (extended instead)."""
        ctx, cfg = self.ctx, self.ctx.config
        if shown:
            ctx.progress.phase("uploading")
        ctx.writer.drain()
        if ctx.writer.resolve_reused():
            raise CacheInconsistent("file cache rows point at chunks it does not know")
        if shown:
            ctx.progress.phase("securing retention")
        sources = SpoolSources(spool, ctx.writer.id_of) if spool is not None else NoSources()
        return PackLease(ctx.store, ctx.cache, ctx.writer, self.plan.retention,
                         cfg.retention.repack_below, self.plan.locked, sources, ctx.dry_run,
                         self._index_host()).secure()

    def _content_workers(self) -> ContentWorkers | None:
        """The worker processes that read small files (``[content] workers``)."""
        count = self.ctx.config.content.content_workers()
        if count == 0:
            return None
        enc = self.plan.encryption
        codec = self.ctx.writer.codec
        return ContentWorkers(count, WorkerSettings(
            codec.level, codec.min_saving, self.ctx.config.sources.lock_timeout,
            enc.data_id_key if enc is not None else None))

    # -- manifest: the commit point
    def _write_manifest(self, spool: IO[bytes], snapshots: list[PendingSnapshot],
                        lease: LeaseResult, tally: FileTally) -> str | None:
        ctx, plan, cfg = self.ctx, self.plan, self.ctx.config
        retention = plan.retention
        pack_lock = ObjectLock(retention.mode, retention.pack_until) if plan.locked else None
        assembler = ManifestAssembler(ctx.writer.locations, ctx.writer.new_packs, lease.packs,
                                      pack_lock)
        header = Header(host=plan.host, run_id=plan.run_id, started=plan.started,
                        lock_mode=retention.mode if plan.locked else None,
                        retain_until=retention.retain_until, tier=retention.tier,
                        tool=f"s3archive {__version__}",
                        legal_hold=cfg.retention.legal_hold, chunker=CHUNKER_PARAMS)

        def trailer() -> Trailer:
            counts, stats = run_figures(tally, snapshots,
                                        len(self.warnings) + self.warnings_dropped,
                                        ctx.writer.stats, lease)
            return Trailer(finished=ctx.clock(), counts=counts, stats=stats,
                           warnings=self.recorded_warnings())

        with tempfile.TemporaryFile(prefix="s3archive-manifest-") as out:
            assembler.write(out, header, spool, snapshots, trailer)
            out.seek(0)
            blob = out.read()
        if len(blob) > LIMITS.stored_bytes:  # refused by every reader: never commit it
            raise ManifestError(f"the manifest is {len(blob)} bytes compressed, more than a "
                                f"reader accepts ({LIMITS.stored_bytes})")
        if ctx.dry_run:
            return None
        key = run_key(plan.host, plan.run_id)
        hold = cfg.retention.legal_hold and plan.locked
        lock = ObjectLock(retention.mode, retention.retain_until) if plan.locked else None
        if hold:  # packs first: a held manifest never points at unheld packs
            for ref in assembler.table.values():
                ctx.store.set_legal_hold(ref.key, ref.version_id, True)
        commit_manifest(ctx.store, key, blob, lock, hold)
        ctx.cache.commit_pending_files()
        ctx.cache.set_meta("last_run_id", plan.run_id)
        return key

    def _index_host(self) -> str | None:
        return self.plan.host if self.plan.encryption is not None else None

    # -- format 2: trees, run record, leases of metadata, then the root object
    def _tree_builder(self, data_lease: LeaseResult) -> TreeBuilder:
        """A builder of the run's trees; an unchanged directory reuses its nodes
        (archive/dir_cache.py) when its data packs are in the table anyway: uploaded
        by this run or leased for it (``data_lease``)."""
        ctx, plan = self.ctx, self.plan
        assert ctx.meta is not None
        writer = ctx.writer
        window: dict[str, ChunkLocation] = {}

        def prefetch(digests: list[str]) -> dict[str, ChunkLocation]:  # a block of entries
            window.clear()
            window.update(writer.locate_many(digests))
            return window

        def locate(chunk: ChunkId) -> ChunkLocation:
            found = window.get(chunk.hash)
            return found if found is not None else writer.locations[chunk.hash]

        dirs = DirCache(ctx.cache, plan.encryption.secret.cache_key() if plan.encryption
                        else None, remember=not ctx.dry_run)

        def may_reference(pack: str) -> bool:
            return pack in writer.new_packs or pack in data_lease.packs

        return TreeBuilder(ctx.meta, locate, prefetch, dirs, may_reference)

    def _write_root(self, spool: IO[bytes], snapshots: list[PendingSnapshot],
                    secured: LeaseResult | None, tally: FileTally,
                    early: TreeBuilder | None = None) -> tuple[str | None, LeaseResult]:
        """``secured``: the data leases (steps 1 and 2 done); None: the run can reference
        only its own packs, and its trees are built while a thread does steps 1 and 2
        (metadata packs wait, unsent, until they are done: the commit order holds);
        ``early``: those trees begun during the walk (:class:`_EarlyTrees`)."""
        ctx, plan, cfg = self.ctx, self.plan, self.ctx.config
        meta = ctx.meta
        assert meta is not None
        retention = plan.retention
        writer = ctx.writer

        leasing = PackLease(ctx.store, ctx.cache, meta, retention, cfg.retention.repack_below,
                            plan.locked, NoSources(), ctx.dry_run, self._index_host())

        data_lease = secured if secured is not None else LeaseResult()

        def build(begun: TreeBuilder | None = None
                  ) -> tuple[TreeBuilder, TreeResult, tc.BlobRef]:
            if begun is not None:
                builder, trees = begun, begun.finish()
            else:
                builder = self._tree_builder(data_lease)
                trees = builder.build(spool)
            recorded_snaps = []
            for snap, chunks in sorted(snapshots, key=lambda s: s[0].name):
                recorded_snaps.append(record_snapshot(builder, encode_snapshot(snap), chunks))
            root_obj = tc.entry_object(trees.root, b"/") if trees.root is not None else None
            record = builder.store_blob(
                tc.encode_record(root_obj, trees.root_tree, recorded_snaps,
                                 _fitting([encode_warning(w) for w in self.recorded_warnings()])),
                pack2.KIND_RECORD, b"run record")
            return builder, trees, record

        if secured is not None:
            builder, trees, record = build()
        else:
            writer.encoded()  # where every chunk is, is known
            meta.hold_uploads()

            def secure_then_send() -> LeaseResult:
                # (not from the spool, which the trees are built from meanwhile: a run
                # that can reference only its own packs has none to rewrite)
                lease = self._secure_data(None, shown=False)
                meta.release_uploads()  # (a failure leaves them held: closing drops them)
                return lease

            securing = _Background(secure_then_send, name="securing")
            try:
                builder, trees, record = build(early)
            except BaseException:
                securing.result()  # its failure first (one the attempt handles, e.g. a
                raise  # pack gone); nothing touches the writer once the run is over
            data_lease = securing.result()
            if data_lease.packs:  # it does reference packs it did not write after all:
                log.info("the run reuses %d packs: building its trees again",
                         len(data_lease.packs))  # (as when the leases are known first)
                meta.start_over(set())
                builder, trees, record = build()
        if trees.entries > LIMITS.lines:  # a reader reads at most this many: never commit more
            raise ManifestError(f"the run has {trees.entries} entries, more than a reader "
                                f"accepts ({LIMITS.lines}); not committing it")
        # A reused metadata pack the run needs little of is written anew, like a data
        # pack: the nodes are built again with its blobs stored afresh (the run has
        # their bytes only while building them), and the old pack is left to lapse.
        # Rewriting a node changes its parents' bytes, so another pack may now be
        # needed less: decide again, a few times at most (then extend what is left).
        # The nodes of a pass given up are in the open metadata pack, dropped unsent
        # (only a pass that filled more than one pack leaves an unused one behind).
        doomed: set[str] = set()
        for _ in range(MAX_META_REBUILDS):
            more = leasing.doomed() - doomed
            if not more:
                break
            doomed |= more
            log.info("writing the metadata of %d little-used packs anew", len(more))
            meta.start_over(doomed)
            builder, trees, record = build()
        meta.drain()
        meta_lease = leasing.secure()
        meta_lease.rewritten = len(doomed)
        pack_lock = ObjectLock(retention.mode, retention.pack_until) if plan.locked else None
        table: list[PackRef] = []
        for number, pack_name in enumerate(sorted(builder.packs)):
            new = writer.new_packs.get(pack_name) or meta.new_packs.get(pack_name)
            if new is not None:
                table.append(PackRef(number, pack_name, new.version_id, new.size,
                                     pack_lock.retain_until if pack_lock else None,
                                     pack_lock.mode if pack_lock else None))
                continue
            leased = data_lease.packs.get(pack_name) or meta_lease.packs.get(pack_name)
            assert leased is not None, f"{pack_name} is neither new nor leased"
            table.append(PackRef(number, pack_name, leased.version_id, leased.size,
                                 leased.locked_until, leased.lock_mode))
        ids = {ref.key: ref.id for ref in table}
        header = Header(host=plan.host, run_id=plan.run_id, started=plan.started,
                        lock_mode=retention.mode if plan.locked else None,
                        retain_until=retention.retain_until, tier=retention.tier,
                        tool=f"s3archive {__version__}",
                        legal_hold=cfg.retention.legal_hold, chunker=CHUNKER_PARAMS,
                        format=2)
        if plan.encryption is not None:
            version, size = self._secure_dedup_secret(plan.encryption)
            header.encryption = plan.encryption.header(version, size, plan.encryption_started)
        lease = LeaseResult(packs={**data_lease.packs, **meta_lease.packs},
                            extended=data_lease.extended + meta_lease.extended,
                            rewritten=data_lease.rewritten + meta_lease.rewritten)
        counts, stats = run_figures(tally, snapshots, len(self.warnings) + self.warnings_dropped,
                                    writer.stats, lease)
        stats["trees_new"] = meta.stats.chunks_new
        stats["bytes_uploaded"] += meta.stats.bytes_uploaded
        stats["packs_uploaded"] += meta.stats.packs_uploaded
        root = RunRoot(header, table,
                       ChunkRef(record.id, record.size, ids[record.pack], record.offset,
                                record.stored, record.encoding),
                       trees.entries, Trailer(finished=ctx.clock(), counts=counts, stats=stats))
        with tempfile.TemporaryFile(prefix="s3archive-root-") as out:
            encode_root(root, out)
            out.seek(0)
            blob = out.read()
        if len(blob) > ROOT_LIMITS.stored_bytes:
            raise ManifestError(f"the run's root object is {len(blob)} bytes, more than a "
                                f"reader accepts ({ROOT_LIMITS.stored_bytes}); raise "
                                "pack_size_mib")
        if ctx.dry_run:
            return None, lease
        key = run_key(plan.host, plan.run_id)
        hold = cfg.retention.legal_hold and plan.locked
        lock = ObjectLock(retention.mode, retention.retain_until) if plan.locked else None
        if hold:  # packs first: a held run never points at unheld packs
            for ref in table:
                ctx.store.set_legal_hold(ref.key, ref.version_id, True)
        group = _group_index(cfg, ctx.store, plan.encryption is not None)
        publishing = None
        if group is not None and ctx.uploaded is not None and \
                (ctx.uploaded.counts or data_lease.extended):
            # the data this run uploaded and the locks it extended, for its group (FORMAT2 16)
            uploaded, written = ctx.uploaded, ctx.clock()
            publishing = _Background(lambda: group.publish(
                ctx.store, plan.run_id, written, table, uploaded, pack_lock), name="group-index")
        # meanwhile the file rows are copied (SQL), to count once the root is written
        staged = False
        try:
            ctx.cache.stage_pending_files()
            staged = True
            if publishing is not None:
                try:
                    publishing.result()
                except StoreError as err:  # an optimisation for the group, never the run's
                    log.warning("could not write the group index of this run: %s", err)
            commit_manifest(ctx.store, key, blob, lock, hold)
        except BaseException:
            if publishing is not None:
                publishing.wait()  # (nothing is written for the run once it has failed)
            if staged:
                ctx.cache.unstage_pending_files()
            raise
        ctx.cache.keep_pending_files()
        ctx.cache.set_meta("last_run_id", plan.run_id)
        return key, lease

    def _secure_dedup_secret(self, enc: RunEncryption) -> tuple[str, int]:
        """The bucket's copy of the dedup secret for this run's recipients: written
        once (locked like a pack), leased like a pack; its version is pinned by the run."""
        ctx, plan = self.ctx, self.plan
        retention = plan.retention
        lock = ObjectLock(retention.mode, retention.pack_until) if plan.locked else None
        known = ctx.cache.get_meta("dedup_secret_copy")
        if known:
            key, version, size, until = json.loads(known)
            if key == enc.secret_key:
                if not plan.locked or parse_iso(until) >= retention.retain_until:
                    return version, size
                if ctx.dry_run:
                    return version, size
                try:
                    ctx.store.extend_retention(key, version, lock)  # type: ignore[arg-type]
                    ctx.cache.set_meta("dedup_secret_copy", json.dumps(
                        [key, version, size, isoformat(retention.pack_until)]))
                    return version, size
                except StoreError as err:
                    # gone, or locked longer than the cache knew (the backup role cannot
                    # look): a new copy, locked for this run, is a few hundred bytes
                    log.info("the copy of the dedup secret %s@%s: %s; writing it again",
                             key, version, err)
        body = enc.sealed_secret()
        if ctx.dry_run:
            return "dry-run", len(body)
        put = ctx.store.put(enc.secret_key, body, lock)
        until = isoformat(retention.pack_until) if plan.locked else "9999-12-31T00:00:00Z"
        ctx.cache.set_meta("dedup_secret_copy", json.dumps([enc.secret_key, put.version_id,
                                                            len(body), until]))
        return put.version_id, len(body)

    def _summary(self, key: str | None, tally: FileTally, snapshots: list[PendingSnapshot],
                 lease: LeaseResult) -> ArchiveSummary:
        plan, stats = self.plan, self.ctx.writer.stats
        meta_stats = self.ctx.meta.stats if self.ctx.meta is not None else WriterStats()
        retention = plan.retention
        snapshot_bytes = sum(snapshot.size for snapshot, _ in snapshots)
        summary = ArchiveSummary(
            run_id=plan.run_id, host=plan.host, started=isoformat(plan.started),
            finished=isoformat(self.ctx.clock()), retain_until=isoformat(retention.retain_until),
            tier=retention.tier, files=tally.files, dirs=tally.dirs, symlinks=tally.symlinks,
            others=tally.others, bytes_total=tally.bytes_total,
            bytes_read=tally.bytes_read + snapshot_bytes, files_unchanged=tally.files_unchanged, chunks_new=stats.chunks_new,
            chunks_reused=stats.chunks_reused, trees_new=meta_stats.chunks_new,
            bytes_new=stats.bytes_new,
            bytes_uploaded=stats.bytes_uploaded + meta_stats.bytes_uploaded,
            packs_uploaded=stats.packs_uploaded + meta_stats.packs_uploaded,
            packs_extended=lease.extended, packs_rewritten=lease.rewritten,
            snapshots=len(snapshots), bytes_snapshots=snapshot_bytes,
            warnings=[describe_warning(w) for w in self.warnings],
            manifest_key=key, dry_run=self.ctx.dry_run,
            exit_code=EXIT_PARTIAL if self.warnings else EXIT_OK)
        usage = self.ctx.store.usage()
        if usage is not None:
            summary.requests = dict(sorted(usage.requests.items()))
        return summary


def run_figures(tally: FileTally, snapshots: list[PendingSnapshot], warnings: int,
                stats: WriterStats, lease: LeaseResult) -> tuple[dict[str, int], dict[str, int]]:
    """The trailer's ``counts`` and ``stats`` (docs/FORMAT.md)."""
    counts = {"files": tally.files, "dirs": tally.dirs, "symlinks": tally.symlinks,
              "others": tally.others, "snapshots": len(snapshots), "warnings": warnings}
    if tally.sockets_skipped:
        counts["sockets_skipped"] = tally.sockets_skipped
    bytes_read = tally.bytes_read + sum(snapshot.size for snapshot, _ in snapshots)
    figures = {"bytes_total": tally.bytes_total, "bytes_read": bytes_read,
               "files_unchanged": tally.files_unchanged, "chunks_new": stats.chunks_new,
               "chunks_reused": stats.chunks_reused, "bytes_new": stats.bytes_new,
               "bytes_uploaded": stats.bytes_uploaded, "packs_uploaded": stats.packs_uploaded,
               "packs_extended": lease.extended, "packs_rewritten": lease.rewritten}
    return counts, figures


WARNINGS_IN_RECORD = 4 << 20  # bytes of warnings a run record holds (a blob is <= 8 MiB)


def _fitting(warnings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recorded warnings that fit in the run record; the rest counted in one
    (the log has them all)."""
    kept, used = [], 0
    for number, warning in enumerate(warnings):
        used += len(tc.dumps(warning)) + 1
        if used > WARNINGS_IN_RECORD:
            kept.append(encode_warning(Warning_(
                "run", f"{len(warnings) - number} more warnings were logged but not recorded "
                       "in the run")))
            return kept
        kept.append(warning)
    return kept


def _first_few(items: list[str], shown: int = 3) -> str:
    more = f"; and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more
