"""Per-chunk encoding: a zstd frame, or the plain bytes when zstd does not pay.

A chunk's identity is the SHA-256 of its plain bytes; compression comes after
and never changes the identity.  Decoding checks the hash, so a bad chunk is
noticed before its bytes are used.
"""

from __future__ import annotations

import hashlib
import mmap
import threading
from dataclasses import dataclass
from typing import Callable

import zstandard

from s3archive.errors import IntegrityError
from s3archive.format.limits import MAX_CHUNK_SIZE

ZSTD = "zstd"
RAW = "raw"


@dataclass(frozen=True, slots=True)
class EncodedChunk:
    hash: str
    size: int
    encoding: str
    data: bytes | memoryview  # the stored bytes


def chunk_hash(plain: bytes | memoryview) -> str:
    return hashlib.sha256(plain).hexdigest()


# encode_reusing compresses a chunk whole only if one of three windows of it (its
# first, middle and last PROBE_BYTES) saves PROBE_SAVING or more: random-looking data
# (media, archives, encrypted files) is stored raw without zstd's pass over all of it
PROBE_BYTES = 16 * 1024
PROBE_SAVING = 0.01


class ChunkCodec:
    """Thread-safe: each thread gets its own zstd contexts."""

    def __init__(self, level: int = 3, min_saving: float = 0.03):
        self.level = level
        self.min_saving = min_saving
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        comp = getattr(self._local, "compressor", None)
        if comp is None:
            comp = self._local.compressor = zstandard.ZstdCompressor(
                level=self.level, write_content_size=True, write_checksum=False)
        return comp

    def encode(self, plain: bytes | memoryview, digest: str | None = None) -> EncodedChunk:
        digest = digest or chunk_hash(plain)
        packed = self._compressor().compress(plain)
        if len(packed) <= len(plain) * (1 - self.min_saving):
            return EncodedChunk(digest, len(plain), ZSTD, packed)
        return EncodedChunk(digest, len(plain), RAW, plain)

    def encode_reusing(self, plain: bytes | memoryview,
                       digest: str | None = None) -> EncodedChunk:
        """As :meth:`encode`, but a zstd frame is written into this thread's own
        output buffer, made once and reused: its ``data`` is valid only until this
        thread's next call, so it must be consumed (copied into a pack) first.

        For big chunks (hundreds of KiB to 4 MiB), read from big files: a fresh
        output for each is mapped afresh (allocations of 1 MiB and more are
        mmap'ed, cli/main.py) and faulted in page by page as zstd writes it, about
        one fault per 4 KiB of frame.  The frame is as valid as :meth:`encode`'s
        (content size in its header, no checksum) but written by zstd's streaming
        interface, so its bytes may differ from :meth:`encode`'s for the same
        chunk: only the plain bytes name a chunk.

        A chunk none of whose three sample windows compresses is stored raw
        without compressing it whole (:data:`PROBE_BYTES`)."""
        digest = digest or chunk_hash(plain)
        size = len(plain)
        if self._looks_incompressible(plain):
            return EncodedChunk(digest, size, RAW, plain)
        out = getattr(self._local, "output", None)
        if out is None or len(out) < frame_bound(size):
            # anonymous memory, room for the largest chunk: a page is resident once a
            # frame has reached it, not before
            out = self._local.output = mmap.mmap(-1, frame_bound(max(size, MAX_CHUNK_SIZE)))
        filled = 0
        with memoryview(out) as view, self._compressor().stream_reader(
                plain, size=size, read_size=max(size, 1)) as frames:
            while True:
                if filled == len(out):  # zstd broke its own bound: never a cut frame
                    raise RuntimeError(f"zstd wrote {filled} bytes or more for {size}")
                wrote = frames.readinto(view[filled:])
                if not wrote:
                    break
                filled += wrote
        if filled <= size * (1 - self.min_saving):
            return EncodedChunk(digest, size, ZSTD, memoryview(out)[:filled])
        return EncodedChunk(digest, size, RAW, plain)


    def _looks_incompressible(self, plain: bytes | memoryview) -> bool:
        """Whether the first, middle and last :data:`PROBE_BYTES` of ``plain`` each
        save less than :data:`PROBE_SAVING` (never for a chunk under four windows)."""
        size = len(plain)
        if size < 4 * PROBE_BYTES:
            return False
        compressor = self._compressor()
        with memoryview(plain) as view:
            for start in (0, (size - PROBE_BYTES) // 2, size - PROBE_BYTES):
                with view[start:start + PROBE_BYTES] as window:
                    if len(compressor.compress(window)) <= PROBE_BYTES * (1 - PROBE_SAVING):
                        return False
        return True


def frame_bound(size: int) -> int:
    """The most bytes one zstd frame of ``size`` plain bytes takes (ZSTD_COMPRESSBOUND)."""
    return size + (size >> 8) + ((128 * 1024 - size) >> 11 if size < 128 * 1024 else 0)


_decompressors = threading.local()


def decode_chunk(stored: bytes | memoryview, encoding: str, size: int,
                 expected_hash: str,
                 id_of: Callable[[bytes | memoryview], str] = chunk_hash) -> bytes | memoryview:
    """The plain bytes of a stored chunk; IntegrityError unless they match the hash.

    Nothing larger than ``size`` (itself at most MAX_CHUNK_SIZE) is ever
    allocated: a zstd frame that declares a larger content size is refused
    before decompressing, and one that declares none is cut off at ``size``.
    """
    name = f"chunk {expected_hash[:12]}"
    if not 0 <= size <= MAX_CHUNK_SIZE:
        raise IntegrityError(f"{name}: size {size} is beyond the format's maximum "
                             f"({MAX_CHUNK_SIZE})")
    if encoding == RAW:
        plain = stored
    elif encoding == ZSTD:
        dctx = getattr(_decompressors, "dctx", None)
        if dctx is None:
            dctx = _decompressors.dctx = zstandard.ZstdDecompressor()
        try:
            declared = zstandard.frame_content_size(stored)
            if declared > size:
                raise IntegrityError(f"{name}: the zstd frame declares {declared} bytes, the "
                                     f"reference {size}")
            plain = dctx.decompress(stored, max_output_size=size)
        except zstandard.ZstdError as err:
            raise IntegrityError(f"{name}: cannot decompress: {err}") from None
    else:
        raise IntegrityError(f"{name}: unknown encoding {encoding!r}")
    if len(plain) != size or id_of(plain) != expected_hash:
        raise IntegrityError(f"{name}: content does not match its hash")
    return plain
