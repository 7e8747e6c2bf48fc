"""Large buffers that are not zero-filled first, in huge pages where the kernel allows.

Every byte of an initial run passes through a few large buffers: the blocks a
big file is read into (``chunker``) and the pack bodies (``packer``).  Served
with ``mmap`` (cli/main.py), each is fresh memory, faulted in 4 KiB page by
page as it is first written: about 3.5 us a fault on this machine, 0.4 s of
system time per 640 MB of pack bodies.  ``bytearray(n)`` moreover writes
zeros over all of it before the bytes that matter are written.

:func:`unzeroed` makes a ``bytearray`` of the length asked for without
writing to it (its bytes are whatever the allocator returned: zeros for a
fresh mapping, older bytes of this process otherwise, so the caller must
write every byte it reads or hands on), and asks the kernel for transparent
huge pages over it (``MADV_HUGEPAGE``; Linux with THP in ``madvise`` or
``always`` mode): one fault per 2 MiB.  Where neither is possible (not
CPython, not Linux, no glibc) it is ``bytearray(n)``; only time differs.

:func:`set_mmap_threshold` sets the size from which glibc serves allocations
with ``mmap`` (each command's start, cli/main.py; restore; forked content
workers).
"""

from __future__ import annotations

import ctypes
import mmap

HUGE_PAGE = 2 << 20  # x86-64's and arm64's (4 KiB base pages) transparent huge page
_PAGE = mmap.PAGESIZE
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)


def _bind() -> tuple:
    try:
        resize = ctypes.pythonapi.PyByteArray_Resize
        resize.argtypes = [ctypes.py_object, ctypes.c_ssize_t]
        resize.restype = ctypes.c_int
    except AttributeError:  # not CPython
        return None, None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        madvise = None
    return resize, madvise


_resize, _madvise = _bind()


def unzeroed(size: int) -> bytearray:
    """``size`` bytes not written to (see the module's note), huge pages advised
    from 2 MiB on."""
    if _resize is None or size <= 0:
        return bytearray(max(size, 0))
    buffer = bytearray()
    _resize(buffer, size)  # raises MemoryError as bytearray(size) would
    if size >= HUGE_PAGE and _madvise is not None and _MADV_HUGEPAGE is not None:
        # (the address of its first byte: no array type made per size)
        address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
        start = address - address % _PAGE
        end = -(-(address + size) // _PAGE) * _PAGE
        # a hint: a kernel without THP refuses it, and nothing changes
        _madvise(start, end - start, _MADV_HUGEPAGE)
    return buffer



_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


def release_tail(buffer: bytearray, made: int) -> int:
    """Give the system back the whole pages past ``buffer``'s length and before
    ``made`` bytes from its first byte: the room left in a buffer made (by
    :func:`unzeroed`) ``made`` bytes long and cut short since, never at its front.
    A pack body ends inside the huge page its last bytes faulted in: up to 2 MiB it
    does not use while it waits to be uploaded.  The pages released are no part of
    the ``bytearray`` (and within its allocation: at most ``__alloc__()`` bytes from
    its first byte); should it grow again they read as zeros.  Returns the bytes
    released (0 where ``madvise`` is not available)."""
    if _resize is None or _madvise is None or _MADV_DONTNEED is None or not len(buffer):
        return 0
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    start = -(-(address + len(buffer)) // _PAGE) * _PAGE
    # (the allocation's last byte is the bytearray's NUL)
    end = (address + min(made, buffer.__alloc__() - 1)) // _PAGE * _PAGE
    if end <= start:
        return 0
    if _madvise(start, end - start, _MADV_DONTNEED) != 0:
        return 0
    return end - start


def set_mmap_threshold(size: int, keep_free: int | None = None,
                       arenas: int | None = None) -> None:
    """Allocations of ``size`` bytes and more are served with mmap (glibc; at most
    32 MiB): freed, they go back to the system, and the next is faulted in afresh.
    ``keep_free``: bytes a heap keeps free at its top before it returns them
    (glibc's default: 128 KiB); every arena keeps as much, so ``arenas`` bounds how
    many there are (glibc's default: eight per core)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
        if keep_free is not None:
            libc.mallopt(-1, keep_free)  # M_TRIM_THRESHOLD
        if arenas is not None:
            libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: its defaults stay
