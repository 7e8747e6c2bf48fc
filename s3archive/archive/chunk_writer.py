"""Deduplicate, encode, pack and upload chunks, keeping both cores busy.

Producers (the archiver's file readers, thread-safe) hash each chunk and ask the index;
a new chunk goes to an encoder pool (zstd releases the GIL), the packer, and
when a pack is full, to an uploader pool.  Bytes in flight are bounded, so
memory stays flat however much data passes.

Where each chunk the run references is (in a pack this run uploaded, or one
the local cache knows) lives on disk, in a :class:`~archive.run_index.RunIndex`;
memory holds only what is in flight (chunks reserved until their pack is
stored, metadata blobs in unsent packs) and a batch of file-cache hits still
to be located.  Packs sealed while uploads are held (:meth:`ChunkWriter.hold_uploads`:
metadata waiting until the data is secured) wait on disk too, in a
:class:`SpillFile`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from s3archive.format.chunk_codec import ChunkCodec, EncodedChunk, chunk_hash
from s3archive.archive.packer import ChunkId, ChunkLocation, Pack, Packer, Sealer
from s3archive.archive.local_cache import CHUNK_ITEM
from s3archive.archive.run_index import PackRows, RunIndex
from s3archive.errors import S3ArchiveError
from s3archive.store.base import ObjectLock, StoreWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewPack:
    """A pack this run uploaded (``version_id`` is ``dry-run`` in a dry run)."""

    key: str
    version_id: str
    size: int


@dataclass
class WriterStats:
    chunks_new: int = 0
    chunks_reused: int = 0
    bytes_new: int = 0  # plain bytes of new chunks
    bytes_uploaded: int = 0
    packs_uploaded: int = 0


# Chunks up to this size are encoded by the thread that read them: handing a
# small chunk to the encoder pool costs more (locks, wake-ups) than zstd does.
INLINE_BYTES = 256 * 1024
REUSE_BATCH = 16384  # chunks of file-cache hits located at once (one SQL join)


class Locations(Mapping[str, ChunkLocation]):
    """A read-only view of where the run's chunks are (in flight, then on disk)."""

    def __init__(self, writer: "ChunkWriter"):
        self._writer = writer

    def get(self, digest: str) -> ChunkLocation | None:
        return self._writer.location(digest)

    def __getitem__(self, digest: str) -> ChunkLocation:
        found = self._writer.location(digest)
        if found is None:
            raise KeyError(digest)
        return found

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and self._writer.location(digest) is not None

    def __len__(self) -> int:
        return len(self._writer.index)

    def __iter__(self) -> Iterator[str]:
        return (location.hash for location in self._writer.index)

    def values(self) -> Iterator[ChunkLocation]:
        return iter(self._writer.index)

    def items(self) -> Iterator[tuple[str, ChunkLocation]]:
        return ((location.hash, location) for location in self._writer.index)


class _Tasks:
    """Counts submitted tasks until they finish; ``wait`` blocks until none is left."""

    def __init__(self) -> None:
        self.pending = 0
        self._cond = threading.Condition()

    def started(self) -> None:
        with self._cond:
            self.pending += 1

    def finished(self) -> None:
        with self._cond:
            self.pending -= 1
            if self.pending == 0:
                self._cond.notify_all()

    def wait(self) -> None:
        with self._cond:
            while self.pending:
                self._cond.wait()


class SpillFailed(S3ArchiveError):
    """A sealed pack held on local disk could not be written there or read back intact."""


@dataclass(frozen=True)
class SpilledBody:
    """A sealed pack's body waiting in a :class:`SpillFile`: ``size`` bytes at ``offset``,
    their CRC-32 ``crc``."""

    pack: Pack
    offset: int
    size: int
    crc: int


class SpillFile:
    """Sealed pack bodies held, unsent, on disk rather than in memory: appended to one
    unlinked temporary file in ``directory`` (opened at the first body; gone once
    closed, or with the process however it ends) and read back, each once, by the
    thread that uploads it.  Appended by one thread at a time; read by any.

    A body read back is checked against its length and CRC-32 as sealed: the file is
    the run's own and unlinked, so no one else writes it, but a short read, a
    bookkeeping slip (the wrong offset) or a bad disk would otherwise store, locked,
    a pack under a key whose bytes it is not.  A CRC (~4 GB/s) is enough for that;
    SHA-256 (~1.6 GB/s here) would guard against nothing more."""

    def __init__(self, directory: Path | None):
        self.directory = directory  # None: the system's temporary directory
        self._file: IO[bytes] | None = None
        self._end = 0
        self.bodies = 0  # bodies written so far

    def _where(self) -> str:
        return str(self.directory) if self.directory is not None else tempfile.gettempdir()

    def put(self, pack: Pack, body: bytearray) -> SpilledBody:
        """Append ``body`` (sealed ``pack``'s); where it is, to :meth:`get` it back."""
        offset, size = self._end, len(body)
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="s3archive-spill-",
                                                    dir=self.directory, buffering=0)
            fd = self._file.fileno()
            with memoryview(body) as view:
                done = 0
                while done < size:
                    done += os.pwrite(fd, view[done:], offset + done)
        except OSError as err:
            raise SpillFailed(f"{pack.key}: cannot hold the sealed pack on disk in "
                              f"{self._where()}: {err.strerror or err}") from err
        self._end += size
        self.bodies += 1
        return SpilledBody(pack, offset, size, zlib.crc32(body))

    def get(self, spilled: SpilledBody) -> bytes:
        """The body as :meth:`put` took it (:class:`SpillFailed` when it is not)."""
        key = spilled.pack.key
        if self._file is None:
            raise SpillFailed(f"{key}: the spill file is closed")
        try:
            body = os.pread(self._file.fileno(), spilled.size, spilled.offset)
            while len(body) < spilled.size:  # (a short read: once more, from where it ended)
                more = os.pread(self._file.fileno(), spilled.size - len(body),
                                spilled.offset + len(body))
                if not more:
                    break
                body += more
        except OSError as err:
            raise SpillFailed(f"{key}: cannot read the sealed pack back from its spill file "
                              f"in {self._where()}: {err.strerror or err}") from err
        if len(body) != spilled.size:
            raise SpillFailed(f"{key}: {len(body)} bytes read back from its spill file in "
                              f"{self._where()}, {spilled.size} were sealed; not uploaded")
        if zlib.crc32(body) != spilled.crc:
            raise SpillFailed(f"{key}: the pack read back from its spill file in "
                              f"{self._where()} is not the one sealed (CRC-32); not uploaded")
        return body

    def close(self) -> None:
        """Drop the file (its bodies with it)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class _Budget:
    """A byte budget: producers wait while too much is in flight."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def take(self, amount: int) -> None:
        with self._cond:
            while self.used > 0 and self.used + amount > self.limit:
                self._cond.wait()
            self.used += amount

    def give(self, amount: int) -> None:
        with self._cond:
            self.used -= amount
            self._cond.notify_all()


@dataclass
class ChunkWriter:
    store: StoreWriter
    lookup_cached: Callable[[str], ChunkLocation | None]
    may_be_cached: Callable[[str], bool]  # cheap pre-check, False means surely not
    # once stored: its chunks, as listed and as rows for SQL
    record_pack: Callable[[NewPack, list[ChunkLocation], PackRows], None]
    codec: ChunkCodec
    pack_size: int
    lock: ObjectLock | None
    dry_run: bool = False
    encoders: int = 2
    uploaders: int = 3
    inflight_bytes: int = 12 << 20
    prefix: str | None = None  # format 2: "data" or "meta" packs; None: format 1 packs
    # encrypted runs: blob ids keyed with the dedup secret, packs sealed
    id_of: Callable[[bytes | memoryview], str] = chunk_hash
    sealer: Sealer | None = None
    # packs whose blobs this writer may reuse, by key prefix (None: any): data blobs
    # never come from metadata packs, an encrypted run's never from plain ones
    reuse_prefixes: tuple[str, ...] | None = None

    # many lookups at once in the local cache (file-cache hits); None: one by one
    lookup_many: Callable[[list[str]], dict[str, ChunkLocation]] | None = None
    # the local cache's file: file-cache hits are located by the run index reading it
    # in SQL (RunIndex.put_listed_from_cache); the few it does not find, by ``lookup_many``
    cache_file: Path | None = None
    # where packs sealed while uploads are held wait (SpillFile; the local cache's
    # directory); None: the system's temporary directory
    spill_dir: Path | None = None
    new_packs: dict[str, NewPack] = field(default_factory=dict)
    stats: WriterStats = field(default_factory=WriterStats)

    def reusable(self, location: ChunkLocation) -> bool:
        return self.reuse_prefixes is None or location.pack.startswith(self.reuse_prefixes)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        # where each chunk the run references is: in a pack this run stored, or in a
        # pack the local cache knows (on disk; a chunk in an unsealed or uploading
        # pack is only reserved, or, a metadata blob, pending, until its pack is stored)
        self.index = RunIndex()
        if self.cache_file is not None:
            self.index.attach_cache(self.cache_file)
        self.locations = Locations(self)
        self._reserved: set[str] = set()  # claimed: being encoded, packed or uploaded
        self._unplaced = 0  # claimed and not yet in a pack (placed: its location known)
        # in a pack not yet stored: metadata blobs (add_blob) and, format 2, data chunks
        # (their pack's key is known when packed: a tree can be built while they upload)
        self._pending: dict[str, ChunkLocation] = {}
        self._stored = 0  # packs stored so far (a claim looks again when it moved)
        self._reused: list[bytes] = []  # file-cache hits' chunk lists not located yet
        self._reused_bytes = 0
        self._unknown: set[str] = set()  # file-cache hits nothing knows (few, or a bug)
        self._excluded: set[str] = set()  # packs whose blobs are not reused (add_blob)
        # file-cache hits' chunks are located by a thread of their own: the run index's
        # SQL (RunIndex.put_listed_from_cache) runs without the GIL, beside the walk;
        # one batch at a time (the next waits for it)
        self._locate_pool = ThreadPoolExecutor(1, thread_name_prefix="locate")
        self._locating: Future[None] | None = None
        self._encode_pool = ThreadPoolExecutor(self.encoders, thread_name_prefix="encode")
        self._upload_pool = ThreadPoolExecutor(self.uploaders, thread_name_prefix="upload")
        self._budget = _Budget(self.inflight_bytes)
        # pack bodies alive: the open one and those uploading (taken by the packer
        # when it opens a pack, given back once the body is stored)
        self._pack_slots = threading.BoundedSemaphore(self.uploaders + 1)
        self._encoding = _Tasks()
        self._uploading = _Tasks()
        self._may_upload = threading.Event()  # cleared: sealed packs wait (hold_uploads)
        self._may_upload.set()
        # packs sealed while uploads are held: their bodies on disk, in sealed order,
        # until release_uploads (the hold and the spilled list change under _hold)
        self._hold = threading.Lock()
        self._spill = SpillFile(self.spill_dir)
        self._spilled: list[SpilledBody] = []
        self._abandoned = False
        self._error: BaseException | None = None
        self.packer = Packer(self.pack_size, self._sealed, self.prefix, self.sealer,
                             bodies=self._pack_slots)

    # ---------------------------------------------------------- producing
    def add(self, plain: bytes) -> ChunkId:
        """Store ``plain`` once; returns its id."""
        self._raise_failure()
        digest = self.id_of(plain)
        if not self._claim(digest):
            return ChunkId(digest, len(plain))
        if len(plain) <= INLINE_BYTES:
            # small: encoding here is cheaper than handing it over to a thread
            self._store_encoded(self.codec.encode(plain, digest), len(plain))
            return ChunkId(digest, len(plain))
        self._budget.take(len(plain))
        self._encoding.started()
        self._encode_pool.submit(self._encode, plain, digest)
        return ChunkId(digest, len(plain))

    def add_encoded(self, encoded: EncodedChunk) -> ChunkId:
        """Store a chunk a content worker already identified and encoded, once
        (a duplicate is dropped); returns its id."""
        self._raise_failure()
        if self._claim(encoded.hash):
            self._store_encoded(encoded, encoded.size)
        return ChunkId(encoded.hash, encoded.size)

    def add_encoded_many(self, pieces: Sequence[EncodedChunk]) -> None:
        """:meth:`add_encoded` of a content worker's batch of chunks, claimed at once."""
        self._raise_failure()
        new = self._claim_many(pieces)
        if new:
            self._placed(self.packer.add_many(new), sum([encoded.size for encoded in new]))

    def add_blob(self, plain: bytes, kind: bytes) -> ChunkLocation:
        """Store a metadata blob once and return where it is, at once (format 2:
        a pack's key is known while it is open, so a parent node can reference
        its child's place).  Called from one thread."""
        assert self.prefix is not None, "only format-2 packs place blobs at once"
        self._raise_failure()
        digest = self.id_of(plain)
        known = self.location(digest)
        if known is not None:
            self.stats.chunks_reused += 1
            return known
        cached = self.lookup_cached(digest) if self.may_be_cached(digest) else None
        if cached is not None and cached.pack not in self._excluded:
            self.index.put([cached])
            self.stats.chunks_reused += 1
            return cached
        location = self.packer.add(self.codec.encode(plain, digest), kind)
        self.stats.chunks_new += 1
        self.stats.bytes_new += len(plain)
        with self._lock:
            if location.pack in self.new_packs:  # stored already (a pack of one blob)
                self.index.put([location])
            else:
                self._pending[digest] = location
        return location

    def adopt_blobs(self, blobs: Sequence[ChunkLocation]) -> bool:
        """Reference metadata blobs an earlier run stored (format 2: the nodes of an
        unchanged directory, archive/dir_cache.py) without encoding them again: all
        of them, each only where :meth:`add_blob` would find it, or none (False)."""
        adopted = []
        for blob in blobs:
            known = self.location(blob.hash)
            if known is None:
                if blob.pack in self._excluded or self.lookup_cached(blob.hash) != blob:
                    return False
                adopted.append(blob)
            elif known != blob:
                return False
        self.index.put(adopted)
        self.stats.chunks_reused += len(blobs)
        return True

    def location(self, digest: str) -> ChunkLocation | None:
        """Where a chunk of this run is: in a pack not yet stored, or (on disk) stored."""
        with self._lock:
            pending = self._pending.get(digest)
        return pending if pending is not None else self.index.get(digest)

    def locate_many(self, digests: Sequence[str]) -> dict[str, ChunkLocation]:
        """Where many chunks of this run are, at once (a block of entries)."""
        with self._lock:  # (most, while the trees are built during the walk)
            pending = self._pending.get
            found = {d: location for d in digests if (location := pending(d)) is not None}
        missing = [d for d in digests if d not in found]
        if missing:
            found.update(self.index.get_many(missing))
        return found

    def all_placed(self) -> bool:
        """Whether every chunk claimed so far is in a pack: where each chunk of an
        entry spooled before this call is, is known (:meth:`location`)."""
        with self._lock:
            return self._unplaced == 0

    def reused_bytes(self) -> dict[str, int]:
        """Stored bytes the run references in each pack it did not write."""
        return {key: used for key, used in self.index.bytes_by_pack().items()
                if key not in self.new_packs}

    def chunks_in(self, packs: set[str]) -> list[ChunkLocation]:
        """The run's chunks inside ``packs``."""
        return self.index.in_packs(packs)

    def start_over(self, excluded: set[str]) -> None:
        """Forget what was reused (the blobs are added again) and the open pack (never
        uploaded), and from now on reuse nothing of the packs ``excluded``; blobs of
        this run's packs already sealed stay."""
        dropped = self.packer.discard_open()
        kept = set(self.packer.created) - ({dropped.key} if dropped is not None else set())
        self.index.keep_only(kept)
        with self._lock:
            self._pending = {digest: location for digest, location in self._pending.items()
                             if location.pack in kept}
            self._excluded |= excluded
            if dropped is not None:  # not stored after all
                self.stats.chunks_new -= len(dropped.chunks)
                self.stats.bytes_new -= sum(c.size for c in dropped.chunks)

    def rewrite(self, digest: str, plain: bytes) -> None:
        """Write a chunk the run already references into a new pack (its old
        pack is left to lapse); ``plain`` is verified against ``digest``."""
        self._raise_failure()
        self.index.delete(digest)
        with self._lock:
            self._reserved.add(digest)
        self.packer.add(self.codec.encode(plain, digest))

    def _claim(self, digest: str) -> bool:
        """True when the chunk is new and this caller must encode it.

        Exact under concurrency: a chunk reserved by another thread is reused;
        one whose pack was stored meanwhile is looked up again (the index gets a
        pack's rows before its chunks leave the reserved set)."""
        while True:
            with self._lock:
                if digest in self._reserved:
                    self.stats.chunks_reused += 1
                    return False
                stored = self._stored
            if self.index.get(digest) is not None:
                with self._lock:
                    self.stats.chunks_reused += 1
                return False
            cached = self.lookup_cached(digest) if self.may_be_cached(digest) else None
            if cached is not None:
                self.index.put([cached], replace=False)
                with self._lock:
                    self.stats.chunks_reused += 1
                return False
            with self._lock:
                if digest in self._reserved:
                    self.stats.chunks_reused += 1
                    return False
                if stored != self._stored:
                    continue  # a pack was stored meanwhile: it may hold this chunk
                self._reserved.add(digest)
                self._unplaced += 1
                return True

    def _claim_many(self, pieces: Sequence[EncodedChunk]) -> list[EncodedChunk]:
        """The pieces new to the run, now reserved for the caller to store: as
        :meth:`_claim` of each in order (a piece repeated is claimed once), with the
        index and the lock asked once a batch rather than a chunk."""
        new: list[EncodedChunk] = []
        left = list(pieces)
        while left:
            with self._lock:
                stored = self._stored
                fresh = [piece for piece in left if piece.hash not in self._reserved]
                self.stats.chunks_reused += len(left) - len(fresh)
            maybe = [piece.hash for piece in fresh if self.index.may_contain(piece.hash)]
            known = self.index.get_many(maybe) if maybe else {}  # (a first run: none asked)
            cached = [found for piece in fresh if piece.hash not in known
                      and self.may_be_cached(piece.hash)
                      and (found := self.lookup_cached(piece.hash)) is not None]
            if cached:
                self.index.put(cached, replace=False)
            settled = known.keys() | {location.hash for location in cached}
            with self._lock:
                self.stats.chunks_reused += sum(1 for p in fresh if p.hash in settled)
                left = [piece for piece in fresh if piece.hash not in settled]
                if stored != self._stored:
                    continue  # a pack was stored meanwhile: it may hold these chunks
                for piece in left:
                    if piece.hash in self._reserved:  # (an earlier piece of the batch)
                        self.stats.chunks_reused += 1
                    else:
                        self._reserved.add(piece.hash)
                        self._unplaced += 1
                        new.append(piece)
                left = []
        return new

    def reuse_listed(self, listed: bytes) -> None:
        """Reference the chunks of file cache hits, as their rows list them (the
        local cache's packed chunk lists): located later, in batches, in SQL, by the
        locating thread (``resolve_reused`` waits for it and locates the last ones)."""
        item = CHUNK_ITEM.size
        with self._lock:
            self.stats.chunks_reused += len(listed) // item
            self._reused.append(listed)
            self._reused_bytes += len(listed)
            if self._reused_bytes < REUSE_BATCH * item:
                return
            batch, self._reused, self._reused_bytes = b"".join(self._reused), [], 0
        self._located()
        self._locating = self._locate_pool.submit(self._locate_reused, batch)

    def _located(self) -> None:
        """Wait for the batch being located, if any (its error raised here)."""
        locating, self._locating = self._locating, None
        if locating is not None:
            locating.result()

    def _locate_reused(self, listed: bytes) -> None:
        item = CHUNK_ITEM.size
        if self.cache_file is not None:
            wanted = self.index.put_listed_from_cache(listed, item, self.reuse_prefixes)
            if not wanted:
                return
        else:
            wanted = {listed[at:at + 32].hex() for at in range(0, len(listed), item)}
        if self.lookup_many is not None:
            cached = self.lookup_many(list(wanted))
        else:
            cached = {d: found for d in wanted if (found := self.lookup_cached(d)) is not None}
        found = [location for location in cached.values() if self.reusable(location)]
        self.index.put(found, replace=False)
        missing = wanted - {location.hash for location in found}
        if not missing:
            return
        # being stored by this run (indexed when its pack is), stored by it since, or
        # unknown (a cache that contradicts itself); reserved ones are taken first: a
        # chunk leaves the reserved set only once the index has it.  (Run by the
        # locating thread, a chunk may be claimed between the two looks: it is then
        # unknown, as it was when claimed after a batch located on the walk's thread)
        with self._lock:
            missing -= self._reserved
        missing -= self.index.get_many(missing).keys()
        with self._lock:
            self._unknown |= missing

    def resolve_reused(self, lookup_many: Callable[[set[str]], dict[str, ChunkLocation]]
                       | None = None) -> set[str]:
        """Locate the chunks referenced through the file cache not located yet;
        returns those nothing knows (the file cache contradicts the chunk index)."""
        self._located()
        if lookup_many is not None and self.lookup_many is None:
            self.lookup_many = lambda digests: lookup_many(set(digests))
        with self._lock:
            batch, self._reused, self._reused_bytes = b"".join(self._reused), [], 0
        if batch:
            self._locate_reused(batch)
        with self._lock:
            unknown, self._unknown = self._unknown, set()
        return unknown

    def _store_encoded(self, encoded: EncodedChunk, plain_size: int) -> None:
        self._placed([self.packer.add(encoded)], plain_size)

    def _placed(self, locations: list[ChunkLocation], plain_bytes: int) -> None:
        """Claimed chunks now packed at ``locations`` (of ``plain_bytes`` in all)."""
        with self._lock:
            self._unplaced -= len(locations)
            if self.prefix is not None:
                reserved, pending = self._reserved, self._pending
                for location in locations:
                    # (not stored yet, or just now: then _upload found nothing to drop
                    # and this entry says what the index says)
                    if location.hash in reserved:
                        pending[location.hash] = location
            self.stats.chunks_new += len(locations)
            self.stats.bytes_new += plain_bytes

    def _encode(self, plain: bytes, digest: str) -> None:
        try:
            # (a big chunk: random-looking data is not compressed, chunk_codec.PROBE_BYTES)
            self._store_encoded(self.codec.encode_probed(plain, digest), len(plain))
        except BaseException as err:  # surfaced to the producer by _raise_failure
            self._fail(err)
        finally:
            self._budget.give(len(plain))
            self._encoding.finished()

    # ---------------------------------------------------------- uploading
    def _sealed(self, pack: Pack, body: bytearray) -> None:
        with self._hold:
            if not self._may_upload.is_set():
                # held: the body waits on disk, its slot free at once (the packer never
                # waits for a body that only release_uploads would free)
                try:
                    self._spilled.append(self._spill.put(pack, body))
                except BaseException as err:
                    self._fail(err)
                    raise
                finally:
                    self._pack_slots.release()
                return
            self._uploading.started()
        # (in a list the task does not keep: the body is freed once stored)
        self._upload_pool.submit(self._upload, pack, [body])

    def _upload(self, pack: Pack, handed: list[bytearray]) -> None:
        slot_held = True
        body = handed.pop()
        try:
            assert pack.key is not None
            located = pack.located()
            size = len(body)
            self._may_upload.wait()
            if self._abandoned:
                raise RuntimeError(f"{pack.key}: not uploaded, the run stopped first")
            version_id = self._put(pack.key, body)
            # the body is stored: the next pack may be sealed while this one is recorded
            # (an encrypted run PUTs the pack's index object there)
            del body
            self._pack_slots.release()
            slot_held = False
            self._stored_pack(pack, located, version_id, size)
        except BaseException as err:
            self._fail(err)
        finally:
            if slot_held:
                self._pack_slots.release()
            self._uploading.finished()

    def _upload_spilled(self, spilled: SpilledBody) -> None:
        """Upload a pack sealed while uploads were held, read back from the spill
        file (bodies alive: one an upload thread; none once a run has failed)."""
        try:
            pack = spilled.pack
            assert pack.key is not None
            if self._error is not None:  # (the run has failed: nothing more is sent)
                return
            located = pack.located()
            body = self._spill.get(spilled)
            version_id = self._put(pack.key, body)
            del body
            self._stored_pack(pack, located, version_id, spilled.size)
        except BaseException as err:
            self._fail(err)
        finally:
            self._uploading.finished()

    def _put(self, key: str, body: bytes | bytearray) -> str:
        """Store a sealed pack's body; its version id."""
        if self.dry_run:
            return "dry-run"
        return self.store.put(key, body, self.lock).version_id

    def _stored_pack(self, pack: Pack, located: list[ChunkLocation], version_id: str,
                     size: int) -> None:
        """Record a pack once its body is stored: in the local cache, then in the index,
        then its chunks leave the reserved set."""
        assert pack.key is not None
        rows = PackRows(pack.key, located)  # (for the index and the cache alike)
        if not self.dry_run:
            self.record_pack(NewPack(pack.key, version_id, size), located, rows)
        self.index.put_pack(rows)  # before the chunks leave the reserved set (_claim)
        with self._lock:
            self.new_packs[pack.key] = NewPack(pack.key, version_id, pack.size)
            for location in located:
                self._reserved.discard(location.hash)
                if self._pending.get(location.hash) == location:
                    del self._pending[location.hash]
            self._stored += 1
            self.stats.bytes_uploaded += pack.size
            self.stats.packs_uploaded += 1
        log.debug("uploaded %s (%d bytes, %d chunks)", pack.key, pack.size, len(pack.chunks))

    # ---------------------------------------------------------- finishing
    def _fail(self, err: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = err

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def encoded(self) -> None:
        """Wait until every chunk so far is encoded and packed: with format 2, where
        each one is is known from then on (:meth:`location`), uploaded or not."""
        self._encoding.wait()
        self._raise_failure()

    def drain(self) -> None:
        """Wait until every chunk so far is encoded, packed and uploaded."""
        if not self._may_upload.is_set():  # (they would never be sent)
            raise RuntimeError("drained while uploads are held")
        self.encoded()
        self.packer.flush()
        self._uploading.wait()
        self._raise_failure()

    def hold_uploads(self) -> None:
        """Sealed packs wait, unsent, until :meth:`release_uploads` (metadata built
        while the data it references is still uploading: the commit order stays).
        Their bodies wait on disk (:class:`SpillFile`, in ``spill_dir``): their pack
        slots are free at once, so packs go on being filled and sealed however many
        wait, in memory the open pack's body alone."""
        with self._hold:
            self._may_upload.clear()

    def release_uploads(self) -> None:
        """Send the packs held (read back from disk, in the order sealed; at most one
        body in memory an upload thread), and from now on each pack once sealed."""
        with self._hold:
            if self._abandoned:  # (closed already: nothing is sent)
                return
            spilled, self._spilled = self._spilled, []
            for body in spilled:
                self._uploading.started()
                self._upload_pool.submit(self._upload_spilled, body)
            self._may_upload.set()

    def close(self) -> None:
        """Stop the pools; the locations stay readable until :meth:`release`.  Packs
        still held (a run that failed) are never sent, and their spill file is gone."""
        with self._hold:
            if not self._may_upload.is_set():  # held by a run that failed: send nothing
                self._abandoned = True
                self._spilled = []
                self._may_upload.set()
        self._locate_pool.shutdown(wait=True, cancel_futures=True)
        self._encode_pool.shutdown(wait=True, cancel_futures=True)
        self._upload_pool.shutdown(wait=True, cancel_futures=True)
        self._spill.close()

    def release(self) -> None:
        """Remove the run's index (its temporary database)."""
        self.index.close()
