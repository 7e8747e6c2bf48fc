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


def test_the_room_past_a_cut_buffer_goes_back_to_the_system_and_its_bytes_stay() -> None:
    from s3archive.archive import fresh_memory

    made = 20 * MiB
    buffer = unzeroed(made)
    with memoryview(buffer) as view:
        view[:] = b"\xa5" * made  # all of it faulted in, as a pack body's last huge page is
    body = 16 * MiB + 12345
    del buffer[body:]
    buffer += b"tail"  # (a sealed pack's index is appended after the cut)
    released = fresh_memory.release_tail(buffer, made)
    if fresh_memory._madvise is None or fresh_memory._resize is None:
        pytest.skip("no madvise here")
    # every whole page past the body and within what was made
    assert made - body - 4 - 2 * fresh_memory._PAGE < released <= made - body - 4
    assert buffer == b"\xa5" * body + b"tail"
    # grown back without writing: the released pages read as the system's zeros now
    fresh_memory._resize(buffer, made)
    with memoryview(buffer) as view:
        past = view[body + 4:].tobytes()
        assert bytes(released) in past  # the released pages, whole
        # the rest as written, but for the NUL a bytearray keeps past its end
        assert past[0] == 0 and past.count(b"\xa5") == len(past) - released - 1
        assert view[:body] == b"\xa5" * body


def test_nothing_is_released_past_what_was_made_nor_from_a_small_buffer() -> None:
    from s3archive.archive import fresh_memory

    assert fresh_memory.release_tail(bytearray(b"abc"), 3) == 0
    assert fresh_memory.release_tail(bytearray(), 0) == 0
    buffer = unzeroed(4 * MiB)
    del buffer[MiB:]
    assert fresh_memory.release_tail(buffer, MiB) == 0  # made as long as it is: no room
