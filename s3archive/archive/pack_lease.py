"""Renew the lease of the old packs a run reuses, before its manifest is written.

For each reused pack (decided by ``retention.decide_pack``): keep it when its
known lock already covers the run, extend the lock to ``retain_until + slack``,
or — when the run needs only a small share of it, or it is locked in a weaker
mode than the run — write the needed chunks into new packs and let it lapse.
Those chunks are read again from the files being backed up
(archive/chunk_sources.py), never from the bucket: the backup role cannot
read ``packs/``.  A pack holding a chunk that cannot be read again (only a
snapshot stream had it, or its file changed since the walk) is extended
instead.  (Packs in a weaker mode never get this far: the archiver forgets
them before the walk, so their files are read and their chunks written anew.)
A pack version that turns out to be gone raises :class:`PacksMissing`: the
archiver forgets it and runs again, so its chunks are written anew.

A pack another host of the dedup group uploaded (archive/group_index.py) is
leased the same way; when its extension is refused (its lock is already later
than this host knew, which S3 refuses as a shortening, and the backup role
cannot look; or a policy) the run does not reference it: the chunks it needs
are written anew from its own files (docs/FORMAT.md part 2, 16.4).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Protocol

from s3archive.archive.chunk_writer import ChunkWriter
from s3archive.archive.local_cache import CachedPack, LocalCache
from s3archive.archive.pack_index import cache_name, index_key
from s3archive.archive.retention import RunRetention, decide_pack, stronger_mode
from s3archive.errors import NoSuchVersion, StoreError
from s3archive.store.base import ObjectLock, StoreWriter

log = logging.getLogger(__name__)


class ChunkSources(Protocol):
    """Where a run can read chunks again (archive/chunk_sources.py)."""

    def locate(self, wanted: set[str]) -> set[str]: ...

    def read(self, digests: set[str], sink: Callable[[str, bytes], None]) -> set[str]: ...


class NoSources:
    """Chunks that cannot be read again (a metadata pack's blobs: the run holds
    no copy once they are packed), so packs holding them are extended, never
    rewritten."""

    def locate(self, wanted: set[str]) -> set[str]:
        return set()

    def read(self, digests: set[str], sink: Callable[[str, bytes], None]) -> set[str]:
        return set()


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
    store: StoreWriter
    cache: LocalCache
    writer: ChunkWriter
    retention: RunRetention
    repack_below: float
    locked: bool
    sources: ChunkSources
    dry_run: bool = False
    # an encrypting host's index objects (archive/pack_index.py) live as long as their packs
    index_host: str | None = None

    def _used(self) -> dict[str, int]:
        """Bytes this run needs of each reused pack."""
        return self.writer.reused_bytes()

    def doomed(self) -> set[str]:
        """The reused packs :meth:`secure` would rewrite (the run needs little of
        them), decided without touching the store; packs it does not know are left
        for :meth:`secure` to report."""
        if not self.locked:
            return set()
        found = set()
        for key, used in self._used().items():
            cached = self.cache.get_pack(key)
            if cached is None:
                continue
            decision = decide_pack(key, cached.retain_until, cached.size, used,
                                   self.retention.retain_until, self.repack_below)
            if decision.action == "rewrite":
                found.add(key)
        return found

    def secure(self) -> LeaseResult:
        used = self._used()
        result = LeaseResult()
        rewrite: list[str] = []
        missing: set[str] = set()
        refused: set[str] = set()  # another host's packs whose lease this host cannot take
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
            # bypass: a COMPLIANCE run writes what it needs into COMPLIANCE packs instead
            weaker = self.retention.mode == "COMPLIANCE" and cached.lock_mode != "COMPLIANCE"
            if decision.action == "keep" and not weaker:
                result.packs[key] = LeasedPack(cached.version_id, cached.size,
                                               cached.retain_until, cached.lock_mode)
            elif decision.action == "rewrite" or weaker:
                rewrite.append(key)
            else:
                lock = self._extend(cached, missing, refused)
                if lock is not None:
                    result.packs[key] = LeasedPack(cached.version_id, cached.size, *lock)
                    result.extended += 1
        if missing:
            raise PacksMissing(missing)
        if refused:
            kept = self._rewrite(sorted(refused))
            if kept:  # some chunks cannot be read again: forget the packs, start over
                raise PacksMissing(set(kept))
            result.rewritten += len(refused)
        if rewrite:
            for key in self._rewrite(rewrite):  # could not be read again: extend
                cached = self.cache.get_pack(key)
                assert cached is not None
                lock = self._extend(cached, missing, missing)
                if lock is not None:
                    result.packs[key] = LeasedPack(cached.version_id, cached.size, *lock)
                    result.extended += 1
                rewrite.remove(key)
            if missing:
                raise PacksMissing(missing)
            result.rewritten += len(rewrite)
        return result

    def _extend(self, pack: CachedPack, missing: set[str],
                refused: set[str]) -> tuple[datetime, str] | None:
        """Lengthen a pack's lock; None when it is gone (``missing``) or, for another
        host's pack, when the store refuses and the lock cannot be seen (``refused``)."""
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
            foreign = self.cache.group_pack_host(pack.key)
            try:
                info = self.store.head(pack.key, pack.version_id)
            except NoSuchVersion:
                missing.add(pack.key)
                return None
            except StoreError:
                if foreign is None:
                    raise
                info = None
            if info is None or info.retain_until is None \
                    or info.retain_until < self.retention.retain_until:
                if foreign is not None:
                    log.info("%s (uploaded by %s): the lock cannot be extended (%s); its "
                             "chunks are written anew", pack.key, foreign, err)
                    refused.add(pack.key)
                    return None
                raise StoreError(f"cannot extend the lock of {pack.key}: {err}") from None
            target, mode = info.retain_until, info.lock_mode or mode
        self.cache.add_pack(CachedPack(pack.key, pack.version_id, pack.size, mode, target))
        self._extend_index(pack.key, ObjectLock(mode, target))
        return target, mode

    def _extend_index(self, key: str, lock: ObjectLock) -> None:
        version = self.cache.get_meta(cache_name(key)) if self.index_host else None
        if version is None or self.index_host is None:
            return
        try:
            self.store.extend_retention(index_key(self.index_host, key), version, lock)
        except StoreError as err:  # an optimisation for a lost cache, never the run's data
            log.warning("could not extend the lock of the index object of %s: %s", key, err)

    def _rewrite(self, keys: list[str]) -> list[str]:
        """Write the chunks this run needs out of ``keys`` into new packs, read
        again from the run's files; returns the packs that must be kept instead."""
        doomed = set(keys)
        wanted: dict[str, set[str]] = {key: set() for key in keys}
        for location in self.writer.chunks_in(doomed):
            wanted[location.pack].add(location.hash)
        found = self.sources.locate(set().union(*wanted.values()))
        kept = [key for key in keys if not wanted[key] <= found]
        readable = set().union(*(wanted[key] for key in keys if key not in kept))
        delivered = self.sources.read(readable, self.writer.rewrite)
        self.writer.drain()
        kept += [key for key in keys if key not in kept and not wanted[key] <= delivered]
        for key in kept:
            log.info("%s: %d of the chunks this run needs cannot be read again (a snapshot "
                     "stream, or a file changed since the walk): extending it instead",
                     key, len(wanted[key] - delivered))
        return kept
