"""Renew the lease of the old packs a run reuses, before its manifest is written.

For each reused pack (decided by ``retention.decide_pack``): keep it when its
known lock already covers the run, extend the lock to ``retain_until + slack``,
or — when the run needs only a small share of it, or it is locked in a weaker
mode than the run — copy the needed chunks into new packs and let it lapse.
A pack version that turns out to be gone raises :class:`PacksMissing`: the
archiver forgets it and runs again, so its chunks are written anew.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from s3archive.archive.chunk_writer import ChunkWriter
from s3archive.errors import IntegrityError, NoSuchVersion, StoreError
from s3archive.format.model import ChunkRef, PackRef
from s3archive.archive.local_cache import CachedPack, LocalCache
from s3archive.archive.packer import ChunkLocation
from s3archive.archive.retention import RunRetention, decide_pack, stronger_mode
from s3archive.repo.pack_reader import PackReader, merge_reads
from s3archive.store.base import ObjectLock, ObjectStore

log = logging.getLogger(__name__)
MERGE_GAP = 1 << 20  # read across gaps up to this size rather than issue another GET


class PacksMissing(Exception):
    """Pack versions the cache believed in are gone."""

    def __init__(self, keys: set[str]):
        super().__init__(", ".join(sorted(keys)))
        self.keys = keys


@dataclass(frozen=True)
class LeasedPack:
    version_id: str
    size: int
    locked_until: datetime | None  # None in a bucket without Object Lock
    lock_mode: str | None


@dataclass
class LeaseResult:
    packs: dict[str, LeasedPack] = field(default_factory=dict)
    extended: int = 0
    rewritten: int = 0


@dataclass
class PackLease:
    store: ObjectStore
    cache: LocalCache
    writer: ChunkWriter
    retention: RunRetention
    repack_below: float
    locked: bool
    dry_run: bool = False

    def secure(self) -> LeaseResult:
        used: dict[str, int] = {}
        for location in self.writer.locations.values():
            if location.pack not in self.writer.new_packs:
                used[location.pack] = used.get(location.pack, 0) + location.stored
        result = LeaseResult()
        rewrite: list[str] = []
        missing: set[str] = set()
        for key in sorted(used):
            cached = self.cache.get_pack(key)
            if cached is None:
                missing.add(key)
                continue
            if not self.locked:
                result.packs[key] = LeasedPack(cached.version_id, cached.size, None, None)
                continue
            decision = decide_pack(key, cached.retain_until, cached.size, used[key],
                                   self.retention.retain_until, self.repack_below)
            # S3 turns a GOVERNANCE lock in force into COMPLIANCE only with a governance
            # bypass: a COMPLIANCE run copies what it needs into COMPLIANCE packs instead
            weaker = self.retention.mode == "COMPLIANCE" and cached.lock_mode != "COMPLIANCE"
            if decision.action == "keep" and not weaker:
                result.packs[key] = LeasedPack(cached.version_id, cached.size,
                                               cached.retain_until, cached.lock_mode)
            elif decision.action == "rewrite" or weaker:
                rewrite.append(key)
            else:
                lock = self._extend(cached, missing)
                if lock is not None:
                    result.packs[key] = LeasedPack(cached.version_id, cached.size, *lock)
                    result.extended += 1
        if missing:
            raise PacksMissing(missing)
        if rewrite:
            result.rewritten = self._rewrite(rewrite)
        return result

    def _extend(self, pack: CachedPack, missing: set[str]) -> tuple[datetime, str] | None:
        mode = stronger_mode(pack.lock_mode, self.retention.mode)
        target = self.retention.pack_until
        if self.dry_run:
            return target, mode
        try:
            self.store.extend_retention(pack.key, pack.version_id, ObjectLock(mode, target))
        except NoSuchVersion:
            missing.add(pack.key)
            return None
        except StoreError as err:
            # The lock may already be later than we knew (never shorten): look.
            try:
                info = self.store.head(pack.key, pack.version_id)
            except NoSuchVersion:
                missing.add(pack.key)
                return None
            if info.retain_until is None or info.retain_until < self.retention.retain_until:
                raise StoreError(f"cannot extend the lock of {pack.key}: {err}") from None
            target, mode = info.retain_until, info.lock_mode or mode
        self.cache.add_pack(CachedPack(pack.key, pack.version_id, pack.size, mode, target))
        return target, mode

    def _rewrite(self, keys: list[str]) -> int:
        """Copy the chunks this run needs out of packs not worth extending."""
        wanted = set(keys)
        by_pack: dict[str, list[tuple[str, ChunkLocation]]] = {}
        for digest, location in list(self.writer.locations.items()):
            if location.pack in wanted:
                by_pack.setdefault(location.pack, []).append((digest, location))
        missing = set()
        rewritten = 0
        for key in keys:
            pack = self.cache.get_pack(key)
            assert pack is not None
            refs = sorted((ChunkRef(digest, chunk.size, 0, chunk.offset, chunk.stored,
                                    chunk.encoding) for digest, chunk in by_pack.get(key, [])),
                          key=lambda ref: ref.offset)
            reader = PackReader(self.store, [PackRef(0, key, pack.version_id, pack.size)])
            for result in reader.results(merge_reads(refs, max_gap=MERGE_GAP)):
                if result.pack_missing:
                    missing.add(key)
                    break
                if result.data is None or result.stored is None:
                    raise IntegrityError(f"cannot copy a chunk out of {key}: {result.error}")
                ref = result.ref  # verified: copy the stored bytes as they are
                self.writer.add_stored(ref.hash, ref.size, ref.encoding, bytes(result.stored))
            else:
                rewritten += 1
        if missing:
            raise PacksMissing(missing)
        self.writer.drain()
        return rewritten
