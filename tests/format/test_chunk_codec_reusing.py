"""ChunkCodec.encode_reusing: big chunks' zstd frames written into one buffer per thread."""

from __future__ import annotations

import random
import threading

import pytest
import zstandard

from s3archive.format.chunk_codec import (
    PROBE_BYTES,
    RAW,
    ZSTD,
    ChunkCodec,
    chunk_hash,
    decode_chunk,
    frame_bound,
)

KiB = 1 << 10
MiB = 1 << 20


def _text(rng: random.Random, size: int) -> bytes:
    words = [rng.randbytes(rng.randint(2, 9)).hex().encode() for _ in range(400)]
    text = b" ".join(rng.choices(words, k=size // 8 + 1))
    return (text * (size // len(text) + 1))[:size]


@pytest.mark.parametrize("size", [256 * KiB + 1, 1 * MiB, 4 * MiB])
def test_a_frame_decodes_to_the_chunk_and_declares_its_size(size: int) -> None:
    rng = random.Random(size)
    codec = ChunkCodec()
    for plain in (_text(rng, size), bytes(size)):
        encoded = codec.encode_reusing(plain)
        assert (encoded.hash, encoded.size, encoded.encoding) == (chunk_hash(plain), size, ZSTD)
        frame = bytes(encoded.data)
        # FORMAT.md 3.3: exactly one frame, content size in its header, no checksum
        # or dictionary
        params = zstandard.get_frame_parameters(frame)
        assert (params.content_size, params.has_checksum, params.dict_id) == (size, False, 0)
        reader = zstandard.ZstdDecompressor().decompressobj()
        reader.decompress(frame)
        assert reader.eof and reader.unused_data == b""
        assert len(frame) <= frame_bound(size)
        assert decode_chunk(frame, ZSTD, size, encoded.hash) == plain
        # as small as encode's frame, give or take a little
        assert len(frame) <= len(codec.encode(plain).data) * 1.01 + 64


def test_incompressible_bytes_are_stored_raw_as_encode_does() -> None:
    plain = random.Random(1).randbytes(1 * MiB)
    codec = ChunkCodec()
    encoded = codec.encode_reusing(plain, "given-digest")
    assert (encoded.encoding, encoded.hash) == (RAW, "given-digest")
    assert encoded.data is plain
    assert codec.encode(plain).encoding == RAW


class _Spy:
    """A thread's zstd compressor, recording what it is asked to compress."""

    def __init__(self, inner: zstandard.ZstdCompressor):
        self.inner, self.windows, self.whole = inner, [], []

    def compress(self, data):
        self.windows.append(len(data))
        return self.inner.compress(data)

    def stream_reader(self, source, **options):
        self.whole.append(len(source))
        return self.inner.stream_reader(source, **options)


def _spied(codec: ChunkCodec) -> _Spy:
    spy = _Spy(codec._compressor())
    codec._local.compressor = spy
    return spy


def test_a_chunk_whose_sample_windows_do_not_compress_is_stored_raw_unread() -> None:
    rng = random.Random(7)
    codec = ChunkCodec()
    spy = _spied(codec)
    plain = rng.randbytes(1 * MiB)
    encoded = codec.encode_reusing(plain)
    assert (encoded.encoding, encoded.data) == (RAW, plain)
    assert spy.windows == [PROBE_BYTES] * 3 and spy.whole == [], "three windows, no more"

    # one window that compresses is enough to compress the whole chunk
    text = _text(rng, 1 * MiB)
    for mixed in (text[:MiB // 2] + plain[:MiB // 2],  # first window
                  plain[:MiB // 3] + text[:MiB // 3] + plain[:MiB // 3],  # middle
                  plain[:MiB // 2] + text[:MiB // 2]):  # last
        spy.windows.clear(), spy.whole.clear()
        encoded = codec.encode_reusing(mixed)
        assert encoded.encoding == ZSTD and spy.whole == [len(mixed)]
        assert decode_chunk(bytes(encoded.data), ZSTD, len(mixed), encoded.hash) == mixed
    # (the rule's blind spot: compressible bytes between random windows stay raw)
    blind = plain[:PROBE_BYTES] + text[:MiB // 2 - PROBE_BYTES] + plain[:PROBE_BYTES] \
        + text[:MiB // 2 - PROBE_BYTES] + plain[:PROBE_BYTES]
    assert codec.encode_reusing(blind).encoding == RAW
    assert codec.encode(blind).encoding == ZSTD

    # a chunk under four windows is compressed whole, as encode does
    small = rng.randbytes(4 * PROBE_BYTES - 1)
    spy.windows.clear(), spy.whole.clear()
    assert codec.encode_reusing(small).encoding == RAW and spy.whole == [len(small)]


def test_the_output_buffer_is_reused_by_its_thread_and_not_shared() -> None:
    codec = ChunkCodec()
    rng = random.Random(2)
    first, second = _text(rng, 1 * MiB), _text(rng, 1 * MiB)
    a = codec.encode_reusing(first)
    a_bytes = bytes(a.data)
    b = codec.encode_reusing(second)
    assert isinstance(a.data, memoryview) and isinstance(b.data, memoryview)
    assert a.data.obj is b.data.obj, "one buffer for the thread's frames"
    assert bytes(a.data) != a_bytes, "the earlier frame is overwritten: consume it first"
    assert decode_chunk(bytes(b.data), ZSTD, len(second), b.hash) == second

    # threads encoding at once each write their own buffer
    plains = [_text(random.Random(10 + n), 1 * MiB) for n in range(3)]
    results: dict[int, list[bool]] = {}
    buffers: dict[int, object] = {}

    def encode_many(n: int) -> None:
        ok = []
        for _ in range(2):
            encoded = codec.encode_reusing(plains[n])
            buffers[n] = encoded.data.obj
            ok.append(decode_chunk(bytes(encoded.data), ZSTD, len(plains[n]), encoded.hash)
                      == plains[n])
        results[n] = ok

    threads = [threading.Thread(target=encode_many, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: [True] * 2 for n in range(3)}
    assert len({id(buffer) for buffer in buffers.values()}) == 3
    assert all(buffer is not a.data.obj for buffer in buffers.values())


_FAULTS = """
import random, resource, sys
from s3archive.cli.main import set_mmap_threshold
from s3archive.format.chunk_codec import ChunkCodec
set_mmap_threshold(1 << 20)  # as every command does (cli/main.py)
rng = random.Random(5)
words = [rng.randbytes(6).hex().encode() for _ in range(300)]
text = b" ".join(rng.choices(words, k=(1 << 20) // 13))[: 1 << 20]
plains = [rng.randbytes(1 << 20) + text for _ in range(6)]  # ~1.1 MiB frames
codec = ChunkCodec()
def faults(encode):
    encode(plains[0])  # (the thread's first use)
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for plain in plains:
        encoded = encode(plain)
        assert encoded.encoding == "zstd"
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
print(faults(codec.encode), faults(codec.encode_reusing))
"""


def test_reused_output_is_not_faulted_in_again_for_every_chunk() -> None:
    """Each fresh mapping of encode's output is faulted in page by page (~1 fault per
    4 KiB of frame); the reused buffer only once."""
    import os
    import subprocess
    import sys

    if not hasattr(__import__("resource"), "RUSAGE_THREAD"):
        pytest.skip("no per-thread fault counts here")
    done = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True,
                          check=True, env=dict(os.environ))
    fresh, reused = map(int, done.stdout.split())
    if fresh < 1000:
        pytest.skip(f"allocations here are not fresh mappings ({fresh} faults)")
    assert reused < 50, (fresh, reused)
