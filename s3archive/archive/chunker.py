"""Content-defined chunking (FastCDC 2020) of files and streams.

About 1.25 MiB per chunk on average (pyfastcdc's average is ``avg + min``),
256 KiB at least, 4 MiB at most.  A file smaller than the minimum is one
chunk.  Sparse files are read extent by extent: holes are never read.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterator

from pyfastcdc import FastCDC

from s3archive.archive.fresh_memory import unzeroed

MIN_SIZE = 256 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 4 * 1024 * 1024
# files are read in blocks of this size (plus a carried piece).  A block lives while any
# chunk cut from it waits to be encoded and packed, so with two reader threads and the
# writer's budget of chunks in flight four or five blocks are alive at the peak of an
# initial run: 4 MiB blocks (one largest chunk) made its summed PSS 160 MiB, not
# 170-183 MiB with 8 MiB blocks, at the same CPU (bench_archive.py, bench/README.md)
BLOCK_BYTES = 4 * 1024 * 1024
CHUNKER_PARAMS = {"algorithm": "fastcdc2020", "min": MIN_SIZE, "avg": AVG_SIZE, "max": MAX_SIZE}


class Chunker:
    """Not thread-safe (pyfastcdc): one per producing thread."""

    def __init__(self) -> None:
        self._cdc = FastCDC(avg_size=AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)

    def stream(self, reader: BinaryIO | "ExtentReader") -> Iterator[bytes]:
        """Chunks of a stream, as bytes the caller may keep."""
        for chunk in self._cdc.cut_stream(reader):
            yield bytes(chunk.data)

    def file(self, fd: int, size: int, extents: list[tuple[int, int]] | None
             ) -> Iterator[bytes | memoryview]:
        """Chunks of an open file: its data extents concatenated, or all of it."""
        if extents is None and size <= MIN_SIZE:
            data = _read_exactly(fd, 0, size + 1)  # one more byte shows growth
            if data:
                yield data
            return
        # a dense file is read up to one byte past its size: that byte shows
        # growth (the caller re-reads) without chasing a file that never stops
        yield from self.blocks(ExtentReader(fd, extents if extents is not None
                                            else [(0, size + 1)]))

    def blocks(self, reader: "ExtentReader") -> Iterator[memoryview]:
        """Chunks read block by block, as views into each block (no copies).

        A block is never reused, so the views stay valid as long as someone
        holds them.  A cut point found inside a block is where the stream
        chunker would cut too (FastCDC decides from the bytes before a cut);
        only the block's last piece, ended by the block's end, is carried
        over and cut again with the next block.
        """
        carry: memoryview | bytes = b""
        eof = False
        while not eof:
            # no bigger than what is left (most files are far smaller than a
            # block); not zero-filled: only the bytes read into it are used
            block = unzeroed(len(carry) + min(BLOCK_BYTES, reader.remaining()))
            view = memoryview(block)
            view[:len(carry)] = carry  # (into the view: a slice of the block would copy)
            filled = len(carry)
            while filled < len(block):
                count = reader.readinto(view[filled:])
                if count == 0:
                    eof = True
                    break
                filled += count
            if reader.remaining() == 0:
                eof = True
            if filled == 0:
                return
            chunks = [chunk.data for chunk in self._cdc.cut_buf(view[:filled])]
            if not eof:
                carry = chunks.pop()
            yield from chunks


def _read_exactly(fd: int, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes; a short read of a regular file is its end (one
    ``pread`` for a small file, not a second one that returns nothing)."""
    parts = []
    while length > 0:
        want = min(length, 8 << 20)
        data = os.pread(fd, want, offset)
        parts.append(data)
        if len(data) < want:
            break
        offset += len(data)
        length -= len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class ExtentReader:
    """``readinto`` over the data extents of a file, in order; never past them."""

    def __init__(self, fd: int, extents: list[tuple[int, int]]):
        self.fd = fd
        self.extents = list(extents)
        self.index = 0
        self.pos = self.extents[0][0] if self.extents else 0
        self.bytes_read = 0

    def remaining(self) -> int:
        """Bytes still to read (fewer if the file shrinks)."""
        return max(0, sum(length for _, length in self.extents) - self.bytes_read)

    def readinto(self, buffer: memoryview) -> int:
        while self.index < len(self.extents):
            start, length = self.extents[self.index]
            remaining = start + length - self.pos
            if remaining <= 0:
                self.index += 1
                if self.index < len(self.extents):
                    self.pos = self.extents[self.index][0]
                continue
            want = min(len(buffer), remaining)
            count = os.preadv(self.fd, [buffer[:want]], self.pos)
            if count == 0:  # end of file, maybe early: the file shrank (the caller checks)
                self.index = len(self.extents)
                return 0
            self.pos += count
            self.bytes_read += count
            return count
        return 0
