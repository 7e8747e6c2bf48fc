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

from s3archive.format.chunk_codec import decode_chunk
from s3archive.archive.chunk_writer import ChunkWriter
from s3archive.errors import NoSuchVersion, StoreError
from s3archive.archive.local_cache import CachedChunk, CachedPack, LocalCache
from s3archive.archive.retention import RunRetention, decide_pack, stronger_mode
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
            if isinstance(location, CachedChunk):
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
        by_pack: dict[str, list[tuple[str, CachedChunk]]] = {}
        for digest, location in list(self.writer.locations.items()):
            if isinstance(location, CachedChunk) and location.pack in wanted:
                by_pack.setdefault(location.pack, []).append((digest, location))
        missing = set()
        rewritten = 0
        for key in keys:
            pack = self.cache.get_pack(key)
            assert pack is not None
            items = sorted(by_pack.get(key, []), key=lambda item: item[1].offset)
            try:
                for start, end, group in merged_ranges(items):
                    blob = self.store.get(key, pack.version_id, (start, end))
                    for digest, chunk in group:
                        stored = blob[chunk.offset - start: chunk.offset - start + chunk.stored]
                        decode_chunk(stored, chunk.encoding, chunk.size, digest)
                        self.writer.add_stored(digest, chunk.size, chunk.encoding, stored)
            except NoSuchVersion:
                missing.add(key)
                continue
            rewritten += 1
        if missing:
            raise PacksMissing(missing)
        self.writer.drain()
        return rewritten


def merged_ranges(items: list[tuple[str, CachedChunk]], gap: int = MERGE_GAP
                  ) -> list[tuple[int, int, list[tuple[str, CachedChunk]]]]:
    """Group chunks sorted by offset into ranged GETs (inclusive end)."""
    groups: list[tuple[int, int, list[tuple[str, CachedChunk]]]] = []
    for digest, chunk in items:
        end = chunk.offset + chunk.stored - 1
        if groups and chunk.offset - groups[-1][1] <= gap:
            start, last, members = groups[-1]
            groups[-1] = (start, max(last, end), members + [(digest, chunk)])
        else:
            groups.append((chunk.offset, end, [(digest, chunk)]))
    return groups
