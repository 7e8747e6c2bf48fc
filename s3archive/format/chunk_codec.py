"""Per-chunk encoding: a zstd frame, or the plain bytes when zstd does not pay.

A chunk's identity is the SHA-256 of its plain bytes; compression comes after
and never changes the identity.  Decoding checks the hash, so a bad chunk is
noticed before its bytes are used.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Callable, NamedTuple

import zstandard

from s3archive.errors import IntegrityError
from s3archive.format.limits import MAX_CHUNK_SIZE

ZSTD = "zstd"
RAW = "raw"


class EncodedChunk(NamedTuple):
    """A chunk as stored (immutable; a tuple: made and taken apart once a chunk,
    four times cheaper than a frozen dataclass)."""

    hash: str
    size: int
    encoding: str
    data: bytes | memoryview  # the stored bytes


def chunk_hash(plain: bytes | memoryview) -> str:
    return hashlib.sha256(plain).hexdigest()


# encode_probed compresses a chunk whole only if one of three windows of it (its
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

    def encode_probed(self, plain: bytes | memoryview,
                      digest: str | None = None) -> EncodedChunk:
        """As :meth:`encode`, but a chunk none of whose three sample windows
        compresses (:data:`PROBE_BYTES`) is stored raw without compressing it whole.

        For big chunks (hundreds of KiB to 4 MiB, read from big files): zstd's
        pass over random data costs about 1.2 ms per MiB here, and its output,
        as large as the chunk, is a fresh mapping faulted in page by page
        (allocations of 1 MiB and more are mmap'ed, cli/main.py) -- most of an
        initial run's page faults outside the pack bodies.  Three 16 KiB windows
        cost ~0.05 ms; a compressible chunk pays one."""
        digest = digest or chunk_hash(plain)
        if self._looks_incompressible(plain):
            return EncodedChunk(digest, len(plain), RAW, plain)
        return self.encode(plain, digest)

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
