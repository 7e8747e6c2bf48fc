"""The chunker: block-by-block cuts equal stream cuts (dedup depends on it); sizes in bounds."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from s3archive.archive import chunker as chunker_module
from s3archive.archive.chunker import AVG_SIZE, MAX_SIZE, MIN_SIZE, Chunker, ExtentReader

KiB, MiB = 1 << 10, 1 << 20


class ShortReads:
    """A reader over bytes that returns random short reads (like a pipe or a slow disk)."""

    def __init__(self, data: bytes, rng: random.Random):
        self.data = memoryview(data)
        self.pos = 0
        self.rng = rng

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def readinto(self, buffer: memoryview) -> int:
        count = min(len(buffer), self.remaining(), self.rng.randrange(1, 3 * MiB))
        buffer[:count] = self.data[self.pos:self.pos + count]
        self.pos += count
        return count


def compressible(rng: random.Random, size: int) -> bytes:
    """Data with repeats: cut points depend on content, not on offsets."""
    words = [rng.randbytes(rng.randrange(3, 40)) for _ in range(200)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


def stream_cuts(data: bytes) -> list[bytes]:
    return list(Chunker().stream(io.BytesIO(data)))


@pytest.mark.parametrize("seed", range(6))
def test_block_by_block_cuts_equal_stream_cuts_over_random_blocks(seed: int, monkeypatch) -> None:
    rng = random.Random(seed)
    size = rng.choice([MIN_SIZE + 1, 3 * MiB + 17, 9 * MiB, rng.randrange(5 * MiB, 14 * MiB)])
    data = rng.randbytes(size) if seed % 2 else compressible(rng, size)
    expected = stream_cuts(data)
    # blocks of a random size, smaller and larger than a chunk, and short reads
    monkeypatch.setattr(chunker_module, "BLOCK_BYTES", rng.randrange(MIN_SIZE, 6 * MiB))
    cuts = [bytes(c) for c in Chunker().blocks(ShortReads(data, rng))]
    assert [len(c) for c in cuts] == [len(c) for c in expected]
    assert cuts == expected


def test_file_cuts_equal_stream_cuts_of_its_data_extents(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "sparse"
    pieces = [(1 * MiB, rng.randbytes(3 * MiB)), (9 * MiB, rng.randbytes(2 * MiB + 5))]
    with open(path, "wb") as handle:
        handle.truncate(16 * MiB)
        for offset, data in pieces:
            handle.seek(offset)
            handle.write(data)
    extents = [(offset, len(data)) for offset, data in pieces]
    with open(path, "rb") as handle:
        cuts = [bytes(c) for c in Chunker().file(handle.fileno(), 16 * MiB, extents)]
    assert cuts == stream_cuts(b"".join(data for _, data in pieces))


def test_dense_file_cuts_equal_stream_cuts(tmp_path: Path) -> None:
    data = random.Random(8).randbytes(10 * MiB + 3)
    (tmp_path / "dense").write_bytes(data)
    fd = os.open(tmp_path / "dense", os.O_RDONLY)
    try:
        cuts = [bytes(c) for c in Chunker().file(fd, len(data), None)]
    finally:
        os.close(fd)
    assert cuts == stream_cuts(data)


def test_an_edit_moves_only_nearby_cut_points() -> None:
    rng = random.Random(12)
    data = rng.randbytes(12 * MiB)
    edited = data[:5 * MiB] + b"inserted" + data[5 * MiB:]
    before, after = set(stream_cuts(data)), set(stream_cuts(edited))
    assert len(before & after) >= len(before) - 2, "an insertion changes one or two chunks"


def test_chunk_sizes_respect_min_avg_max() -> None:
    rng = random.Random(3)
    data = rng.randbytes(40 * MiB)
    sizes = [len(c) for c in stream_cuts(data)]
    assert sum(sizes) == len(data)
    assert all(MIN_SIZE <= s <= MAX_SIZE for s in sizes[:-1])
    assert 0 < sizes[-1] <= MAX_SIZE
    mean = sum(sizes) / len(sizes)
    # pyfastcdc's average is avg + min (see chunker.py)
    assert 0.7 * (AVG_SIZE + MIN_SIZE) < mean < 1.4 * (AVG_SIZE + MIN_SIZE)


def test_data_without_cut_points_is_cut_at_the_maximum() -> None:
    sizes = [len(c) for c in stream_cuts(bytes(10 * MiB))]
    assert sizes == [MAX_SIZE, MAX_SIZE, 2 * MiB]


@pytest.mark.parametrize("size", [0, 1, 100 * KiB, MIN_SIZE])
def test_a_small_file_is_one_chunk(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "small").write_bytes(data)
    fd = os.open(tmp_path / "small", os.O_RDONLY)
    try:
        cuts = [bytes(c) for c in Chunker().file(fd, size, None)]
    finally:
        os.close(fd)
    assert cuts == ([data] if size else [])


def test_extent_reader_reads_only_the_extents(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        reader = ExtentReader(fd, [(1, 2), (5, 3)])
        buffer = memoryview(bytearray(16))
        got = b""
        while count := reader.readinto(buffer):
            got += bytes(buffer[:count])
        assert got == b"12567" and reader.remaining() == 0
    finally:
        os.close(fd)
