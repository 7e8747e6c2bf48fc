"""Content-defined chunking (FastCDC 2020) of files and streams.

About 1.25 MiB per chunk on average (pyfastcdc's average is ``avg + min``),
256 KiB at least, 4 MiB at most.  A file smaller than the minimum is one
chunk.  Sparse files are read extent by extent: holes are never read.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterator

from pyfastcdc import FastCDC

MIN_SIZE = 256 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 4 * 1024 * 1024
CHUNKER_PARAMS = {"algorithm": "fastcdc2020", "min": MIN_SIZE, "avg": AVG_SIZE, "max": MAX_SIZE}


class Chunker:
    """Not thread-safe (pyfastcdc): one per producing thread."""

    def __init__(self) -> None:
        self._cdc = FastCDC(avg_size=AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)

    def stream(self, reader: BinaryIO | "ExtentReader") -> Iterator[bytes]:
        """Chunks of a stream, as bytes the caller may keep."""
        for chunk in self._cdc.cut_stream(reader):
            yield bytes(chunk.data)

    def file(self, fd: int, size: int, extents: list[tuple[int, int]] | None) -> Iterator[bytes]:
        """Chunks of an open file: its data extents concatenated, or all of it."""
        if extents is None and size <= MIN_SIZE:
            data = _read_exactly(fd, 0, size + 1)  # one more byte shows growth
            if data:
                yield data
            return
        yield from self.stream(ExtentReader(fd, extents if extents is not None else [(0, size)],
                                            follow_growth=extents is None))


def _read_exactly(fd: int, offset: int, length: int) -> bytes:
    parts = []
    while length > 0:
        data = os.pread(fd, min(length, 8 << 20), offset)
        if not data:
            break
        parts.append(data)
        offset += len(data)
        length -= len(data)
    return b"".join(parts)


class ExtentReader:
    """``readinto`` over the data extents of a file, in order.

    With ``follow_growth`` the last extent is read to the real end of file,
    so a file that grew while read yields all its bytes (the caller notices
    the size change and re-reads).
    """

    def __init__(self, fd: int, extents: list[tuple[int, int]], follow_growth: bool = False):
        self.fd = fd
        self.extents = list(extents)
        self.follow_growth = follow_growth
        self.index = 0
        self.pos = self.extents[0][0] if self.extents else 0
        self.bytes_read = 0

    def readinto(self, buffer: memoryview) -> int:
        while self.index < len(self.extents):
            start, length = self.extents[self.index]
            last = self.index == len(self.extents) - 1
            remaining = start + length - self.pos
            if remaining <= 0 and not (last and self.follow_growth):
                self.index += 1
                if self.index < len(self.extents):
                    self.pos = self.extents[self.index][0]
                continue
            want = len(buffer) if (last and self.follow_growth) else min(len(buffer), remaining)
            count = os.preadv(self.fd, [buffer[:want]], self.pos)
            if count == 0:  # end of file, maybe early: the file shrank (the caller checks)
                self.index = len(self.extents)
                return 0
            self.pos += count
            self.bytes_read += count
            return count
        return 0
