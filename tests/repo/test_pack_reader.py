"""The one pack reader: merged ranged GETs, every reference checked, a bounded window."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import threading
import time

import pytest

from s3archive.errors import NoSuchVersion
from s3archive.format.model import ChunkRef, PackRef
from s3archive.repo.pack_reader import PackReader, batched_reads, merge_reads

PACK = PackRef(0, "packs/00/" + "0" * 64, "v1", 1 << 30)


class SlowStore:
    """Serves one pack from memory, slowly, and records the peak of bytes being fetched."""

    def __init__(self, body: bytes):
        self.body = body
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        first, last = byte_range or (0, len(self.body) - 1)
        with self.lock:
            self.active += last - first + 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.01)
        with self.lock:
            self.active -= last - first + 1
        return self.body[first:last + 1]


def test_reader_bounds_bytes_in_flight_and_keeps_order() -> None:
    pieces = [os.urandom(50_000) for _ in range(64)]
    body = b"".join(pieces)
    refs, offset = [], 0
    for piece in pieces:
        refs.append(ChunkRef(hashlib.sha256(piece).hexdigest(), len(piece), 0, offset,
                             len(piece), "raw"))
        offset += len(piece)
    store = SlowStore(body)
    reader = PackReader(store, [PackRef(0, "packs/00/" + "0" * 64, "v1", len(body))],
                            workers=8, window=400_000)

    results = list(reader.results(merge_reads(refs, max_request=100_000)))

    assert [r.data for r in results] == pieces
    # each request costs its stored plus plain bytes against the window
    assert 0 < store.peak <= 400_000 // 2


def test_batches_sort_reads_by_pack_offset_and_serve_duplicates() -> None:
    """Chunks packed out of path order (parallel archiving, dedup) still make few GETs."""


    pieces = [os.urandom(30_000) for _ in range(40)]
    layout = list(range(40))
    random.Random(7).shuffle(layout)  # the order the chunks lie in the pack
    body, where = b"", {}
    for index in layout:
        where[index] = len(body)
        body += pieces[index]
    refs = [ChunkRef(hashlib.sha256(p).hexdigest(), len(p), 0, where[i], len(p), "raw")
            for i, p in enumerate(pieces)]
    wanted = refs + refs[:5]  # a duplicate file at the end
    counting = SlowStore(body)
    calls = []
    original = counting.get
    counting.get = lambda *a, **kw: calls.append(kw.get("byte_range") or a[2]) or original(*a, **kw)
    reader = PackReader(counting, [PackRef(0, "packs/00/" + "0" * 64, "v1", len(body))],
                            workers=4, window=2_000_000)

    results = list(reader.ordered(batched_reads(wanted, batch_bytes=10 << 20,
                                                    max_request=8 << 20)))

    assert [r.data for r in results] == pieces + pieces[:5]
    assert [r.ref for r in results] == wanted
    assert len(calls) == 1  # one batch, one pack, back to back once sorted


def test_pack_reader_serves_each_reference_only_bytes_of_its_own_hash() -> None:

    piece = os.urandom(40_000)
    good = ChunkRef(hashlib.sha256(piece).hexdigest(), len(piece), 0, 0, len(piece), "raw")
    liar = dataclasses.replace(good, hash=hashlib.sha256(b"something else").hexdigest())
    reader = PackReader(SlowStore(piece), [PackRef(0, "packs/00/" + "0" * 64, "v1",
                                                   len(piece))], workers=2)

    results = list(reader.chunks([good, liar, good, liar]))

    assert [r.ref for r in results] == [good, liar, good, liar]
    assert [r.data for r in results] == [piece, None, piece, None]
    assert "does not match its hash" in results[1].error


def test_a_chunk_declaring_more_than_its_size_is_refused_before_decompressing() -> None:
    """A zstd frame that says 3 GiB is never given 3 GiB (issue 9, defect 4)."""
    import zstandard

    from s3archive.errors import IntegrityError
    from s3archive.format.chunk_codec import decode_chunk
    from s3archive.format.limits import MAX_CHUNK_SIZE

    bomb = zstandard.ZstdCompressor().compress(bytes(64 << 20))  # 64 MiB of zeros, ~2 KiB
    with pytest.raises(IntegrityError, match="the zstd frame declares 67108864 bytes"):
        decode_chunk(bomb, "zstd", 1000, "0" * 64)
    with pytest.raises(IntegrityError, match="beyond the format's maximum"):
        decode_chunk(bomb, "zstd", 3 << 30, "0" * 64)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64 << 20))
    with pytest.raises(IntegrityError, match="cannot decompress"):
        decode_chunk(unsized, "zstd", MAX_CHUNK_SIZE, "0" * 64)


def ref_at(offset: int, stored: int, digest: str = "ab" * 32) -> ChunkRef:
    return ChunkRef(digest, stored, 0, offset, stored, "raw")


def test_merge_reads_joins_neighbours_overlaps_and_shared_offsets() -> None:
    a, b, c = ref_at(0, 100), ref_at(100, 50), ref_at(100, 50, "cd" * 32)  # c shares b's offset
    inner, far = ref_at(120, 10), ref_at(10_000, 10)
    requests = list(merge_reads([a, b, c, inner, far], max_request=1000))
    assert [(r.first, r.last, r.chunks) for r in requests] == [
        (0, 149, (a, b, c, inner)), (10_000, 10_009, (far,))]
    assert [len(r.chunks) for r in merge_reads([a, b], max_request=120)] == [1, 1]
    gap = list(merge_reads([a, ref_at(200, 10)], max_gap=100))
    assert [(r.first, r.last) for r in gap] == [(0, 209)]


def test_a_missing_pack_version_is_flagged_on_every_chunk() -> None:
    class Gone:
        def get(self, *args: object, **kw: object) -> bytes:
            raise NoSuchVersion("no such version")

    refs = [ref_at(0, 10), ref_at(10, 10)]
    results = list(PackReader(Gone(), [PACK]).results(merge_reads(refs)))  # type: ignore[arg-type]
    assert [(r.data, r.pack_missing) for r in results] == [(None, True), (None, True)]
    assert "no such version" in (results[0].error or "")
