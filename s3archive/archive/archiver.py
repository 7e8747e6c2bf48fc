"""The archive pipeline: pickers and snapshotters into locked packs and one manifest.

Commit protocol (docs/FORMAT.md): every pack a run references is uploaded
(or its lock extended) before the manifest is written; the manifest, locked,
is the commit point.  A run that fails before it leaves packs behind but no
manifest; the next run reuses those packs through the local cache.

The archiver returns an :class:`ArchiveSummary` and prints nothing.
"""

from __future__ import annotations

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
from s3archive.archive.file_stage import FileStage, FileTally
from s3archive.archive.local_cache import UNLOCKED_UNTIL, CachedPack, LocalCache, cache_path
from s3archive.archive.pack_lease import LeaseResult, PackLease, PacksMissing
from s3archive.archive.packer import ChunkLocation
from s3archive.archive.retention import (REUSE_MARGIN, RunRetention, check_retain_until,
                                        plan_run_retention)
from s3archive.archive.snapshot_stage import PendingSnapshot, run_snapshotters
from s3archive.archive.sources.pickers import PickResult, executables, run_pickers
from s3archive.archive.sources.walker import WalkOptions
from s3archive.clock import Clock, check_clock, isoformat, utc_now
from s3archive.config import Config
from s3archive.errors import (EXIT_OK, EXIT_PARTIAL, BucketNotLocked, ManifestError,
                              NoSuchVersion, NothingToArchive, StoreError)
from s3archive.format.chunk_codec import ChunkCodec
from s3archive.format.limits import LIMITS
from s3archive.format.model import Header, Trailer, Warning_, run_key
from s3archive.format.run_id import new_run_id
from s3archive.progress import Progress
from s3archive.stats import RunStats, describe_warning
from s3archive.repo.catalog import RunRef, latest_run, list_runs, load_manifest, run_id_time
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
                 reuse_margin: timedelta = REUSE_MARGIN, start_encryption: bool = False):
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
                self._prepare_cache(cache, runs, locked)
                started = self.clock()
                retention = plan_run_retention(cfg.retention, started,
                                               [_run_start(r) for r in runs])
                check_retain_until(retention, started - clock_offset)
                run_id = new_run_id(started, {r.run_id for r in runs})
                plan = RunPlan(cfg.host_name, run_id, started, retention, locked)
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

    def _attempt(self, cache: LocalCache, plan: RunPlan,
                 picking: "_Background[PickResult]") -> ArchiveSummary:
        cfg = self.config
        pack_lock = (ObjectLock(plan.retention.mode, plan.retention.pack_until)
                     if plan.locked else None)

        def record_pack(pack: NewPack, chunks: list[ChunkLocation]) -> None:
            cache.add_pack(CachedPack(pack.key, pack.version_id, pack.size,
                                      pack_lock.mode if pack_lock else None,
                                      pack_lock.retain_until if pack_lock else UNLOCKED_UNTIL))
            cache.add_chunks(chunks)

        writer = ChunkWriter(
            store=self.store, lookup_cached=cache.get_chunk,
            may_be_cached=cache.chunk_filter().may_contain, record_pack=record_pack,
            codec=self.codec, pack_size=cfg.content.pack_size_mib << 20,
            lock=pack_lock, dry_run=self.dry_run, uploaders=cfg.s3.max_concurrency)
        run = _Run(RunContext(cfg, self.store, cache, writer, self.progress, self.clock,
                              self.dry_run), plan)
        return run.execute(picking)

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

    def _prepare_cache(self, cache: LocalCache, runs: list[RunRef], locked: bool) -> None:
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


def _run_start(run: RunRef) -> datetime:
    return run_id_time(run.run_id) or run.last_modified


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


@dataclass(frozen=True)
class RunPlan:
    """What is decided about a run before it starts."""

    host: str
    run_id: str
    started: datetime
    retention: RunRetention
    locked: bool  # the bucket has Object Lock: packs and manifest are locked


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
        files = FileStage(WalkOptions(one_file_system=cfg.content.one_file_system,
                                      exclude=cfg.content.exclude),
                          ctx.cache, ctx.writer, progress, self.warn,
                          remember_files=not ctx.dry_run,
                          lock_timeout=cfg.sources.lock_timeout)
        lease = LeaseResult()
        snapshots: list[PendingSnapshot] = []
        try:
            with tempfile.TemporaryFile(prefix="s3archive-entries-") as spool:
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
                files.run(picked.paths, spool)
                progress.phase("running snapshotters")
                snapshots = run_snapshotters(cfg.snapshots_dir, cfg.sources.snapshot_timeout,
                                             ctx.writer, progress, self.warn)
                progress.phase("uploading")
                ctx.writer.drain()
                if ctx.writer.resolve_reused(ctx.cache.get_chunks):
                    raise CacheInconsistent("file cache rows point at chunks it does not know")
                progress.phase("securing retention")
                lease = PackLease(ctx.store, ctx.cache, ctx.writer, self.plan.retention,
                                  cfg.retention.repack_below, self.plan.locked,
                                  SpoolSources(spool), ctx.dry_run).secure()
                progress.phase("writing manifest")
                key = self._write_manifest(spool, snapshots, lease, files.tally)
        finally:
            ctx.writer.close()
            ctx.cache.commit()
            progress.done()
        return self._summary(key, files.tally, snapshots, lease)

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

    def _summary(self, key: str | None, tally: FileTally, snapshots: list[PendingSnapshot],
                 lease: LeaseResult) -> ArchiveSummary:
        plan, stats = self.plan, self.ctx.writer.stats
        retention = plan.retention
        snapshot_bytes = sum(snapshot.size for snapshot, _ in snapshots)
        summary = ArchiveSummary(
            run_id=plan.run_id, host=plan.host, started=isoformat(plan.started),
            finished=isoformat(self.ctx.clock()), retain_until=isoformat(retention.retain_until),
            tier=retention.tier, files=tally.files, dirs=tally.dirs, symlinks=tally.symlinks,
            others=tally.others, bytes_total=tally.bytes_total,
            bytes_read=tally.bytes_read + snapshot_bytes, files_unchanged=tally.files_unchanged, chunks_new=stats.chunks_new,
            chunks_reused=stats.chunks_reused, bytes_new=stats.bytes_new,
            bytes_uploaded=stats.bytes_uploaded, packs_uploaded=stats.packs_uploaded,
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


def _first_few(items: list[str], shown: int = 3) -> str:
    more = f"; and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more
