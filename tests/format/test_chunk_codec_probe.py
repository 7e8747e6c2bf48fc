"""ChunkCodec.encode_probed: a big chunk whose sample windows do not compress is
stored raw without zstd's pass over all of it; any other is encode's."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import zstandard

from s3archive.format.chunk_codec import (
    PROBE_BYTES,
    RAW,
    ZSTD,
    ChunkCodec,
    decode_chunk,
)

KiB = 1 << 10
MiB = 1 << 20


def _text(rng: random.Random, size: int) -> bytes:
    words = [rng.randbytes(rng.randint(2, 9)).hex().encode() for _ in range(400)]
    text = b" ".join(rng.choices(words, k=size // 8 + 1))
    return (text * (size // len(text) + 1))[:size]


class _Spy:
    """A thread's zstd compressor, recording the sizes it is asked to compress."""

    def __init__(self, inner: zstandard.ZstdCompressor):
        self.inner, self.sizes = inner, []

    def compress(self, data):
        self.sizes.append(len(data))
        return self.inner.compress(data)


def _spied(codec: ChunkCodec) -> _Spy:
    spy = _Spy(codec._compressor())
    codec._local.compressor = spy
    return spy


def test_a_chunk_whose_sample_windows_do_not_compress_is_stored_raw_unread() -> None:
    rng = random.Random(7)
    codec = ChunkCodec()
    spy = _spied(codec)
    plain = rng.randbytes(1 * MiB)
    encoded = codec.encode_probed(plain, "given-digest")
    assert (encoded.hash, encoded.size, encoded.encoding) == ("given-digest", MiB, RAW)
    assert encoded.data is plain
    assert spy.sizes == [PROBE_BYTES] * 3, "three windows, never the whole chunk"
    assert codec.encode(plain).encoding == RAW, "as encode decides, at a fraction of its cost"


def test_one_window_that_compresses_makes_it_encodes_chunk() -> None:
    rng = random.Random(8)
    codec = ChunkCodec()
    spy = _spied(codec)
    noise, text = rng.randbytes(1 * MiB), _text(rng, 1 * MiB)
    for mixed in (text[:MiB // 2] + noise[:MiB // 2],  # the first window compresses
                  noise[:MiB // 3] + text[:MiB // 3] + noise[:MiB // 3],  # the middle one
                  noise[:MiB // 2] + text[:MiB // 2],  # the last one
                  text):
        spy.sizes.clear()
        encoded = codec.encode_probed(mixed)
        asked = list(spy.sizes)
        assert asked[-1] == len(mixed) and set(asked[:-1]) == {PROBE_BYTES}
        assert encoded == codec.encode(mixed), "encode's frame, byte for byte"
        assert encoded.encoding == ZSTD
        assert decode_chunk(encoded.data, ZSTD, len(mixed), encoded.hash) == mixed
    assert asked == [PROBE_BYTES, len(text)], "a compressible chunk pays one window"

    # the rule's blind spot: compressible bytes between three random windows stay raw
    blind = noise[:PROBE_BYTES] + text[:MiB // 2 - PROBE_BYTES] + noise[:PROBE_BYTES] \
        + text[:MiB // 2 - PROBE_BYTES] + noise[:PROBE_BYTES]
    assert codec.encode_probed(blind).encoding == RAW
    assert codec.encode(blind).encoding == ZSTD


def test_a_chunk_under_four_windows_is_encoded_as_encode_does() -> None:
    codec = ChunkCodec()
    spy = _spied(codec)
    small = random.Random(9).randbytes(4 * PROBE_BYTES - 1)
    assert codec.encode_probed(small).encoding == RAW
    assert spy.sizes == [len(small)]


_FAULTS = """
import random, resource
from s3archive.archive.fresh_memory import set_mmap_threshold
from s3archive.format.chunk_codec import ChunkCodec
set_mmap_threshold(1 << 20)  # as every command does (cli/main.py)
plains = [random.Random(n).randbytes(2 << 20) for n in range(6)]
codec = ChunkCodec()
def faults(encode):
    encode(plains[0])  # (the thread's first use)
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for plain in plains:
        assert encode(plain).encoding == "raw"
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
print(faults(codec.encode), faults(codec.encode_probed))
"""


def test_random_chunks_make_no_frame_to_fault_in() -> None:
    """zstd's output for a random chunk is as large as the chunk, a fresh mapping
    faulted in page by page (~1 fault per 4 KiB); probed, there is none."""
    if not hasattr(__import__("resource"), "RUSAGE_THREAD"):
        pytest.skip("no per-thread fault counts here")
    done = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True,
                          check=True, env=dict(os.environ))
    fresh, probed = map(int, done.stdout.split())
    if fresh < 1000:
        pytest.skip(f"allocations here are not fresh mappings ({fresh} faults)")
    assert probed < 50, (fresh, probed)
