"""The chunk writer: dedup, encoding, packs uploaded under a lock, bytes in flight bounded."""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import timedelta

import pytest

from s3archive.archive import chunk_writer
from s3archive.archive import packer as packer_module
from s3archive.archive.chunk_writer import INLINE_BYTES, ChunkWriter, NewPack
from s3archive.archive.local_cache import pack_chunk_list
from s3archive.archive.packer import ChunkLocation
from s3archive.errors import StoreError
from s3archive.format.chunk_codec import ChunkCodec, EncodedChunk, chunk_hash, decode_chunk
from s3archive.store.base import ObjectLock
from support.memory_store import FakeClock, MemoryStore
from support.open_files import open_in

KiB, MiB = 1 << 10, 1 << 20


class Recorder:
    def __init__(self) -> None:
        self.packs: list[tuple[NewPack, list[ChunkLocation]]] = []
        self.lock = threading.Lock()

    def __call__(self, pack: NewPack, chunks: list[ChunkLocation], rows: object) -> None:
        with self.lock:
            self.packs.append((pack, chunks))


def make_writer(store, codec=None, cached: dict[str, ChunkLocation] | None = None, **options
                ) -> tuple[ChunkWriter, Recorder]:
    cached = cached or {}
    recorder = Recorder()
    lock = ObjectLock("GOVERNANCE", store.clock() + timedelta(days=30))
    writer = ChunkWriter(store=store, lookup_cached=cached.get,
                         may_be_cached=lambda digest: digest in cached, record_pack=recorder,
                         codec=codec or ChunkCodec(), pack_size=options.pop("pack_size", 1 * MiB),
                         lock=lock, **options)
    return writer, recorder


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(FakeClock())


def read_back(store: MemoryStore, writer: ChunkWriter, digest: str) -> bytes:
    location = writer.locations[digest]
    body = store.get(location.pack, writer.new_packs[location.pack].version_id)
    stored = body[location.offset:location.offset + location.stored]
    return decode_chunk(stored, location.encoding, location.size, digest)


def test_each_chunk_is_stored_once_and_reads_back(store: MemoryStore) -> None:
    rng = random.Random(1)
    chunks = [rng.randbytes(rng.choice([5 * KiB, 300 * KiB, 700 * KiB])) for _ in range(12)]
    writer, recorder = make_writer(store)
    try:
        refs = [writer.add(c) for c in chunks + chunks[:5]]
        writer.drain()
    finally:
        writer.close()
    assert refs[:12] == [(chunk_hash(c), len(c)) for c in chunks] and refs[12:] == refs[:5]
    stats = writer.stats
    assert (stats.chunks_new, stats.chunks_reused) == (12, 5)
    assert stats.bytes_new == sum(map(len, chunks))
    assert stats.packs_uploaded == len(recorder.packs) == len(store.versions("packs/"))
    for chunk in chunks:
        assert read_back(store, writer, chunk_hash(chunk)) == chunk
    for version in store.versions("packs/"):
        assert (version.lock_mode, version.retain_until) == ("GOVERNANCE", store.clock() + timedelta(days=30))
    recorded = {c.hash for _, rows in recorder.packs for c in rows}
    assert recorded == {chunk_hash(c) for c in chunks}
    assert {pack.key for pack, _ in recorder.packs} == set(writer.new_packs)
    assert all(c.pack == pack.key for pack, rows in recorder.packs for c in rows)


def test_a_chunk_the_cache_knows_is_not_stored_again(store: MemoryStore) -> None:
    known = b"k" * 1000
    cached = {chunk_hash(known): ChunkLocation(chunk_hash(known), "packs/aa/" + "a" * 64, 0, 20, 1000,
                                              "zstd")}
    writer, recorder = make_writer(store, cached=cached)
    try:
        writer.add(known)
        writer.drain()
    finally:
        writer.close()
    assert writer.locations[chunk_hash(known)] == cached[chunk_hash(known)]
    assert (writer.stats.chunks_new, writer.stats.chunks_reused) == (0, 1)
    assert store.versions("packs/") == [] and recorder.packs == []


def test_the_same_chunk_from_many_threads_is_stored_once(store: MemoryStore) -> None:
    data = random.Random(2).randbytes(600 * KiB)
    writer, _ = make_writer(store)
    try:
        threads = [threading.Thread(target=writer.add, args=(data,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        writer.drain()
    finally:
        writer.close()
    assert (writer.stats.chunks_new, writer.stats.chunks_reused) == (1, 7)
    assert sum(v.size for v in store.versions("packs/")) < len(data) + 1024


def test_compressible_chunks_are_zstd_and_random_ones_raw(store: MemoryStore) -> None:
    text, noise = b"the same words again " * 20000, random.Random(3).randbytes(400 * KiB)
    writer, _ = make_writer(store)
    try:
        writer.add(text)
        writer.add(noise)
        writer.drain()
    finally:
        writer.close()
    zipped, raw = writer.locations[chunk_hash(text)], writer.locations[chunk_hash(noise)]
    assert zipped.encoding == "zstd" and zipped.stored < len(text) // 10
    assert raw.encoding == "raw" and raw.stored == len(noise)
    assert read_back(store, writer, chunk_hash(text)) == text


class SlowCodec(ChunkCodec):
    """Encodes slowly and records the writer's bytes in flight at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.writer: ChunkWriter | None = None
        self.peak = 0
        self.gate = threading.Semaphore(0)

    def encode_probed(self, plain, digest=None) -> EncodedChunk:  # (big chunks' encoder)
        if len(plain) > INLINE_BYTES:
            assert self.writer is not None
            self.peak = max(self.peak, self.writer._budget.used)
            self.gate.acquire(timeout=0.01)
        return super().encode_probed(plain, digest)


def test_bytes_in_flight_stay_within_the_budget(store: MemoryStore) -> None:
    codec = SlowCodec()
    writer, _ = make_writer(store, codec=codec, inflight_bytes=3 * MiB)
    codec.writer = writer
    rng = random.Random(4)
    try:
        for _ in range(40):
            writer.add(rng.randbytes(1 * MiB))
            assert writer._budget.used <= 3 * MiB
        writer.drain()
    finally:
        writer.close()
    assert 2 * MiB <= codec.peak <= 3 * MiB, "the budget is used, and never exceeded"
    assert writer.stats.chunks_new == 40


class FailingStore(MemoryStore):
    def put(self, key, body, lock, legal_hold=False):
        if key.startswith("packs/"):
            raise StoreError(f"PUT {key}: InternalError (injected)")
        return super().put(key, body, lock, legal_hold)


def test_an_upload_failure_surfaces_to_drain_and_to_later_adds() -> None:
    store = FailingStore(FakeClock())
    writer, recorder = make_writer(store, pack_size=256 * KiB)
    rng = random.Random(6)
    try:
        with pytest.raises(StoreError, match="injected"):
            for _ in range(20):
                writer.add(rng.randbytes(300 * KiB))
            writer.drain()
        with pytest.raises(StoreError, match="injected"):
            writer.add(b"more")
    finally:
        writer.close()
    assert recorder.packs == [], "a pack that was not stored is never recorded in the cache"


class GatedStore(MemoryStore):
    """PUTs wait until the gate opens."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.gate = threading.Event()

    def put(self, key, body, lock, legal_hold=False):
        assert self.gate.wait(10), "the test opens the gate"
        return super().put(key, body, lock, legal_hold)


def test_pack_bodies_alive_are_the_open_one_and_those_uploading() -> None:
    # packs of ~256 KiB from two producers while the store answers no PUT: each pack
    # opened holds its body until stored, so the packs opened are the bodies alive
    store = GatedStore(FakeClock())
    writer, _ = make_writer(store, pack_size=256 * KiB, uploaders=2, prefix="data")
    rng = random.Random(8)
    pieces = [rng.randbytes(100 * KiB) for _ in range(40)]
    failures: list[BaseException] = []

    def produce(part: list[bytes]) -> None:
        try:
            for piece in part:
                writer.add_encoded(EncodedChunk(chunk_hash(piece), len(piece), "raw", piece))
        except BaseException as err:  # noqa: BLE001 - reported below
            failures.append(err)

    producers = [threading.Thread(target=produce, args=(pieces[i::2],)) for i in range(2)]
    try:
        for producer in producers:
            producer.start()
        time.sleep(0.3)
        assert all(producer.is_alive() for producer in producers), "the producers wait"
        assert writer.packer._count <= 2 + 1, writer.packer._count
        store.gate.set()
        for producer in producers:
            producer.join()
        writer.drain()
    finally:
        store.gate.set()
        writer.close()
    assert failures == []
    assert writer.stats.chunks_new == 40
    for piece in pieces:
        assert read_back(store, writer, chunk_hash(piece)) == piece


def test_a_rewritten_chunk_moves_to_a_new_pack(store: MemoryStore) -> None:
    known = random.Random(7).randbytes(50 * KiB)
    old = ChunkLocation(chunk_hash(known), "packs/aa/" + "a" * 64, 0, 20, len(known), "zstd")
    writer, recorder = make_writer(store, cached={old.hash: old})
    try:
        writer.add(known)
        writer.drain()
        assert writer.locations[old.hash] == old
        writer.rewrite(old.hash, known)
        writer.drain()
    finally:
        writer.close()
    moved = writer.locations[old.hash]
    assert moved.pack != old.pack and moved.pack in writer.new_packs
    assert read_back(store, writer, old.hash) == known
    assert (writer.stats.chunks_new, writer.stats.chunks_reused) == (0, 1)
    assert [c.hash for _, rows in recorder.packs for c in rows] == [old.hash]


def test_dedup_stays_exact_while_packs_are_stored_under_the_claims(store: MemoryStore) -> None:
    """Many threads add overlapping chunks while small packs are sealed and stored
    (a stored chunk leaves the reserved set for the on-disk index): each chunk is
    stored exactly once."""
    rng = random.Random(11)
    distinct = [rng.randbytes(rng.randrange(2 * KiB, 40 * KiB)) for _ in range(300)]
    writer, recorder = make_writer(store, pack_size=64 * KiB)

    def slow_miss(digest: str) -> None:  # the cache is asked while packs are stored
        time.sleep(0.0005)
        return None

    writer.may_be_cached, writer.lookup_cached = (lambda digest: True), slow_miss
    orders = [random.Random(seed).sample(distinct, len(distinct)) for seed in range(6)]
    try:
        threads = [threading.Thread(target=lambda order=order: [writer.add(c) for c in order])
                   for order in orders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        writer.drain()
        stored = [c.hash for _, rows in recorder.packs for c in rows]
        assert sorted(stored) == sorted(chunk_hash(c) for c in distinct), "each once"
        assert (writer.stats.chunks_new, writer.stats.chunks_reused) == (300, 5 * 300)
        assert len(recorder.packs) > 20, "packs were stored while chunks were claimed"
        for chunk in distinct[:20]:
            assert read_back(store, writer, chunk_hash(chunk)) == chunk
    finally:
        writer.close()
        writer.release()


def test_a_hit_on_a_chunk_this_run_is_still_storing_is_not_unknown(store: MemoryStore) -> None:
    """A chunk reserved (in an open pack) when the hits are located, and one stored
    since: neither is reported unknown; both are located once their packs are stored."""
    writer, _ = make_writer(store, lookup_many=lambda digests: {})
    try:
        stored, storing = writer.add(b"stored soon" * 100), writer.add(b"still packing" * 100)
        writer.packer.flush()  # the first pack is sealed (and uploaded); then one more chunk
        later = writer.add(b"in the open pack" * 100)
        writer._uploading.wait()
        assert stored.hash not in writer._reserved and later.hash in writer._reserved
        writer.reuse_listed(pack_chunk_list([stored, storing, later]))
        assert writer.resolve_reused() == set()
        writer.drain()
        assert {writer.locations[c.hash].hash for c in (stored, storing, later)} == \
            {stored.hash, storing.hash, later.hash}
    finally:
        writer.close()


def test_file_cache_hits_are_located_beside_the_walk_and_its_errors_reach_the_run(
        store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full batch of hits is located by the locating thread, not the caller's; a
    failure there is raised to the run when it next hands over a batch or resolves."""
    monkeypatch.setattr(chunk_writer, "REUSE_BATCH", 2)
    known = {digest: ChunkLocation(digest, f"data/aa/{'a' * 64}", i, 10, 20, "raw")
             for i, digest in enumerate(chunk_hash(b"%d" % i) for i in range(4))}
    threads: list[str] = []
    failing = threading.Event()

    def lookup_many(digests):
        threads.append(threading.current_thread().name)
        if failing.is_set():
            raise OSError("the cache's disk failed")
        return {d: known[d] for d in digests if d in known}

    writer, _ = make_writer(store, cached=known, lookup_many=lookup_many)
    try:
        first, second, third, fourth = known
        writer.reuse_listed(pack_chunk_list([(first, 20), (second, 20)]))  # a full batch
        assert writer.resolve_reused() == set()
        assert threads and all(name.startswith("locate") for name in threads), threads
        assert writer.locations[first] == known[first]
        failing.set()
        writer.reuse_listed(pack_chunk_list([(third, 20), (fourth, 20)]))
        with pytest.raises(OSError, match="disk failed"):
            writer.resolve_reused()
    finally:
        writer.close()
        writer.release()


def test_file_cache_hits_are_located_in_batches_and_unknown_ones_reported(
        store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunk_writer, "REUSE_BATCH", 2048)
    known = {digest: ChunkLocation(digest, f"data/aa/{'a' * 64}", i, 10, 20, "raw")
             for i, digest in enumerate(chunk_hash(b"%d" % i) for i in range(5000))}
    plain_pack = ChunkLocation(chunk_hash(b"plain"), f"packs/bb/{'b' * 64}", 0, 1, 1, "raw")
    known[plain_pack.hash] = plain_pack
    calls: list[int] = []

    def lookup_many(digests):
        calls.append(len(digests))
        return {d: known[d] for d in digests if d in known}

    writer, _ = make_writer(store, cached=known, lookup_many=lookup_many,
                            reuse_prefixes=("data/",))
    try:
        for digest in known:  # a file-cache hit's chunk list each
            writer.reuse_listed(pack_chunk_list([(digest, 20)]))
        writer.reuse_listed(pack_chunk_list([(chunk_hash(b"nobody knows"), 3), (digest, 20)]))
        unknown = writer.resolve_reused()
        assert unknown == {chunk_hash(b"nobody knows"), plain_pack.hash}, \
            "a chunk in a pack the run may not reuse is as good as unknown"
        assert len(calls) >= 2 and max(calls) <= 2048, "batches, not one query a chunk"
        digest = chunk_hash(b"4321")
        assert writer.locations[digest] == known[digest]
        assert writer.reused_bytes() == {f"data/aa/{'a' * 64}": 10 * 5000}
    finally:
        writer.close()
        writer.release()


def test_blobs_of_excluded_packs_are_never_reused_after_start_over(store: MemoryStore) -> None:
    old = ChunkLocation(chunk_hash(b"node"), f"meta/cc/{'c' * 64}", 0, 4, 4, "raw")
    writer, _ = make_writer(store, cached={old.hash: old}, prefix="meta")
    try:
        assert writer.add_blob(b"node", b"T") == old
        assert writer.reused_bytes() == {old.pack: 4}
        writer.start_over({old.pack})
        assert writer.locations.get(old.hash) is None
        again = writer.add_blob(b"node", b"T")
        assert again.pack != old.pack and again.pack.startswith("meta/")
        writer.drain()
        assert writer.locations[old.hash] == again and writer.reused_bytes() == {}
    finally:
        writer.close()
        writer.release()


def _held_writer(store: MemoryStore, monkeypatch: pytest.MonkeyPatch, spill_dir: object,
                 uploaders: int) -> tuple[ChunkWriter, Recorder, dict[str, bytes]]:
    """A metadata writer of 16 KiB packs (the first ones 4 and 8 KiB), holding its
    uploads; the bodies it seals, by key, as sealed."""
    monkeypatch.setattr(packer_module, "RAMP_START", 4 * KiB)
    writer, recorder = make_writer(store, prefix="meta", pack_size=16 * KiB,
                                   uploaders=uploaders, spill_dir=spill_dir)
    sealed: dict[str, bytes] = {}
    on_sealed = writer.packer.on_sealed

    def sealing(pack: packer_module.Pack, body: bytearray) -> None:
        sealed[pack.key] = bytes(body)  # type: ignore[index]
        on_sealed(pack, body)

    writer.packer.on_sealed = sealing
    writer.hold_uploads()
    return writer, recorder, sealed


def _add_blobs(writer: ChunkWriter, blobs: list[bytes]) -> None:
    """Add every blob from a thread; fails if that ever waits (for a pack's slot)."""
    done = threading.Event()

    def add() -> None:
        for blob in blobs:
            writer.add_blob(blob, b"T")
        done.set()

    threading.Thread(target=add, daemon=True).start()
    assert done.wait(10), "add_blob waited for a pack body's slot"


@pytest.mark.parametrize("uploaders", [1, 3])
def test_packs_sealed_while_uploads_are_held_wait_on_disk_then_are_stored_as_sealed(
        store: MemoryStore, monkeypatch: pytest.MonkeyPatch, tmp_path: object,
        uploaders: int) -> None:
    """Held (archiver._EarlyTrees: trees built during the walk, their packs unsent until
    the data is secured), sealed packs wait in an unlinked file in ``spill_dir``, their
    slots free at once: many more packs than bodies are filled without waiting, none
    is sent, and once released every one is stored byte for byte as sealed, recorded,
    its blobs located there."""
    rng = random.Random(4)
    writer, recorder, sealed = _held_writer(store, monkeypatch, tmp_path, uploaders)
    blobs = [rng.randbytes(rng.randrange(100, 3 * KiB)) for _ in range(400)]
    try:
        _add_blobs(writer, blobs)
        assert len(sealed) > 4 * (uploaders + 1)  # (~40 packs; slots: uploaders + 1)
        assert writer._spill.bodies == len(sealed)
        assert not store.versions("meta/") and not recorder.packs
        assert os.listdir(tmp_path) == [] and len(open_in(tmp_path)) == 1  # unlinked
    finally:
        writer.release_uploads()
    writer.drain()
    stored = {version.key: store.get(version.key, version.version_id)
              for version in store.versions("meta/")}
    assert stored == sealed and set(writer.new_packs) == set(sealed)
    assert {pack.key for pack, _ in recorder.packs} == set(sealed)
    assert sum(len(chunks) for _, chunks in recorder.packs) == len(set(blobs))
    for blob in blobs:
        assert read_back(store, writer, chunk_hash(blob)) == blob
    writer.close()
    writer.release()
    assert open_in(tmp_path) == []


def test_packs_held_by_a_writer_closed_unreleased_are_never_sent(
        store: MemoryStore, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """A run that fails while its metadata packs are held: closing sends none of
    them, and their spill file is gone."""
    rng = random.Random(5)
    writer, recorder, sealed = _held_writer(store, monkeypatch, tmp_path, 2)
    _add_blobs(writer, [rng.randbytes(2 * KiB) for _ in range(100)])
    assert len(sealed) > 3 and len(open_in(tmp_path)) == 1
    writer.close()
    writer.release_uploads()  # (too late: nothing is sent)
    writer.release()
    assert open_in(tmp_path) == [] and os.listdir(tmp_path) == []
    assert not store.versions("meta/") and not recorder.packs and not writer.new_packs


@pytest.mark.parametrize("fault", ["changed", "cut short", "put fails"])
def test_a_held_pack_not_read_back_as_sealed_or_not_stored_fails_the_drain(
        store: MemoryStore, monkeypatch: pytest.MonkeyPatch, tmp_path: object,
        fault: str) -> None:
    """A pack read back from the spill file is checked against its length and CRC as
    sealed: a changed or cut one is not uploaded and fails the drain naming it, as
    does a failed upload; the run then sends none of the packs still waiting."""
    rng = random.Random(6)
    writer, recorder, sealed = _held_writer(store, monkeypatch, tmp_path, 1)
    _add_blobs(writer, [rng.randbytes(2 * KiB) for _ in range(100)])
    first = writer._spilled[0]
    held = {spilled.pack.key for spilled in writer._spilled}
    fd = writer._spill._file.fileno()  # type: ignore[union-attr]
    if fault == "changed":
        os.pwrite(fd, bytes([os.pread(fd, 1, first.offset + 100)[0] ^ 1]), first.offset + 100)
    elif fault == "cut short":
        os.ftruncate(fd, first.offset + first.size - 1)
    else:
        put = store.put

        def failing(key: str, *args: object, **kwargs: object) -> object:
            if key == first.pack.key:
                raise StoreError(f"{key}: upload failed")
            return put(key, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "put", failing)
    writer.release_uploads()
    with pytest.raises(StoreError if fault == "put fails" else chunk_writer.SpillFailed,
                       match=first.pack.key) as failed:
        writer.drain()
    if fault == "changed":
        assert "is not the one sealed (CRC-32); not uploaded" in str(failed.value)
    elif fault == "cut short":
        assert f"bytes read back from its spill file in {tmp_path}" in str(failed.value)
    writer.close()
    writer.release()
    # (one upload thread: the first pack held failed, none held after it was sent; the
    # pack still open when released may be)
    assert held.isdisjoint(version.key for version in store.versions("meta/"))
    assert held.isdisjoint(pack.key for pack, _ in recorder.packs)
    assert open_in(tmp_path) == []


def test_a_held_pack_that_cannot_be_written_to_disk_fails_the_run_at_once(
        store: MemoryStore, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """No room on the disk for a held pack: add_blob fails naming the pack and the
    directory (a one-line error at the CLI), and nothing is ever sent."""
    rng = random.Random(7)
    writer, recorder, sealed = _held_writer(store, monkeypatch, tmp_path, 1)

    def full(*args: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(chunk_writer.os, "pwrite", full)
    with pytest.raises(chunk_writer.SpillFailed,
                       match=f"cannot hold the sealed pack on disk in {tmp_path}: "
                             "No space left on device") as failed:
        for _ in range(100):
            writer.add_blob(rng.randbytes(2 * KiB), b"T")
    assert str(failed.value).startswith(next(iter(sealed)))
    writer.close()
    writer.release()
    assert not store.versions("meta/") and not recorder.packs


def test_all_placed_only_once_every_chunk_claimed_is_in_a_pack(store: MemoryStore) -> None:
    """A chunk claimed and still being encoded (by the pool) is not placed: a line
    naming it is not taken by the trees built during the walk until it is."""
    release = threading.Event()

    class SlowCodec(ChunkCodec):  # (a big chunk is encoded by the pool, waiting here)
        def encode(self, plain, *args, **kwargs):  # type: ignore[no-untyped-def]
            if len(plain) > INLINE_BYTES:
                assert release.wait(5)
            return super().encode(plain, *args, **kwargs)

        def encode_probed(self, plain, *args, **kwargs):  # type: ignore[no-untyped-def]
            if len(plain) > INLINE_BYTES:
                assert release.wait(5)
            return super().encode_probed(plain, *args, **kwargs)

    writer, _ = make_writer(store, codec=SlowCodec(), prefix="data")
    try:
        assert writer.all_placed()
        writer.add(b"small" * 100)
        assert writer.all_placed()  # (encoded inline, in the pack)
        big = random.Random(2).randbytes(INLINE_BYTES + 1)
        digest = writer.add(big).hash
        assert not writer.all_placed() and writer.location(digest) is None
        writer.add(big)  # (the same chunk: reused, nothing more to place)
        release.set()
        writer.encoded()
        assert writer.all_placed() and writer.location(digest) is not None
    finally:
        release.set()
        writer.close()
