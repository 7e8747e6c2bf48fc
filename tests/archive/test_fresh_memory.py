"""Large buffers not zero-filled first, in huge pages (archive/fresh_memory.py)."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from s3archive.archive.fresh_memory import HUGE_PAGE, unzeroed

MiB = 1 << 20


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "never"
    return text.split("[")[1].split("]")[0]


@pytest.mark.parametrize("size", [0, 1, 4096, HUGE_PAGE - 1, HUGE_PAGE, 5 * MiB + 3])
def test_a_buffer_has_the_length_asked_for_and_holds_what_is_written(size: int) -> None:
    buffer = unzeroed(size)
    assert type(buffer) is bytearray and len(buffer) == size
    pattern = bytes(range(256)) * (size // 256 + 1)
    with memoryview(buffer) as view:
        view[:] = pattern[:size]
    assert buffer == pattern[:size]
    buffer += b"more"  # an ordinary bytearray: it grows and shrinks
    del buffer[:1]
    assert len(buffer) == size + 3


@pytest.mark.skipif(_thp_mode() == "never", reason="no transparent huge pages here")
def test_writing_a_large_buffer_faults_it_in_huge_pages_not_page_by_page() -> None:
    size = 16 * MiB
    piece = bytes(MiB)
    buffer = unzeroed(size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with memoryview(buffer) as view:
        for at in range(0, size, MiB):
            view[at:at + MiB] = piece
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # 4 KiB pages: 4096 faults; huge pages: 8, and at most 1024 for the ends that
    # do not fill an aligned 2 MiB (and a few for the interpreter)
    assert faults < 1200, faults
