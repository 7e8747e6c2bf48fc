"""Memory for the chunk bytes that arrive from a content worker, used again.

A worker's result frame carries its encoded chunks out of band: the main
process reads them into one block and the results are views into it, held
until each chunk has been copied into a pack.  A fresh block per frame is
fresh memory every time (allocations of 1 MiB and more are ``mmap``-ed,
cli/main.py): zeroed by ``bytearray`` and faulted in page by page, about
0.1 s of CPU per 100 MB of chunks on this machine.  :class:`FrameBlocks`
keeps a few blocks and hands one out again once no view into it is left,
which CPython tells exactly: a ``bytearray`` with live views cannot be
resized.  A frame is read into all of its bytes, so blocks are not zero-filled
first (archive/fresh_memory.py).
"""

from __future__ import annotations

from s3archive.archive.fresh_memory import unzeroed

GRAIN = 256 << 10  # blocks are rounded up to this, so that frames of similar sizes share them


def unused(block: bytearray) -> bool:
    """True when no view into ``block`` is alive (it may be written over)."""
    try:
        last = block.pop()  # a shrink of one byte and a growth of one: no reallocation
    except BufferError:  # views into it are alive
        return False
    block.append(last)
    return True


class FrameBlocks:
    """At most ``keep`` blocks, each handed out again once unused; a frame that
    finds none free gets a block of its own (freed with its views, as before).
    Used by one thread (a worker's collector)."""

    def __init__(self, keep: int):
        self.keep = keep
        self._blocks: list[bytearray] = []

    def take(self, size: int) -> memoryview:
        """``size`` writable bytes to read a frame's buffers into."""
        if size == 0:
            return memoryview(bytearray())
        free = [block for block in self._blocks if unused(block)]
        fitting = [block for block in free if len(block) >= size]
        if fitting:
            return memoryview(min(fitting, key=len))[:size]
        if len(self._blocks) >= self.keep and not free:
            return memoryview(unzeroed(size))  # all in use: one of its own
        block = unzeroed(-(-size // GRAIN) * GRAIN)
        if len(self._blocks) < self.keep:
            self._blocks.append(block)
        else:  # a free block too small for this frame makes room for it
            self._blocks[self._blocks.index(min(free, key=len))] = block
        return memoryview(block)[:size]
