"""ChunkCodec.encode_reusing: big chunks' zstd frames written into one buffer per thread."""

from __future__ import annotations

import random
import threading

import pytest
import zstandard

from s3archive.format.chunk_codec import RAW, ZSTD, ChunkCodec, chunk_hash, decode_chunk, frame_bound

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
    plains = [_text(random.Random(10 + n), 1 * MiB) for n in range(4)]
    results: dict[int, list[bool]] = {}
    buffers: dict[int, object] = {}

    def encode_many(n: int) -> None:
        ok = []
        for _ in range(3):
            encoded = codec.encode_reusing(plains[n])
            buffers[n] = encoded.data.obj
            ok.append(decode_chunk(bytes(encoded.data), ZSTD, len(plains[n]), encoded.hash)
                      == plains[n])
        results[n] = ok

    threads = [threading.Thread(target=encode_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: [True] * 3 for n in range(4)}
    assert len({id(buffer) for buffer in buffers.values()}) == 4
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
