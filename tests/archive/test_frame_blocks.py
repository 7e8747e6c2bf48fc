"""Blocks for the chunk bytes of content workers' frames are used again, but never
while a view into one is alive (the chunks it holds are not packed yet)."""

from __future__ import annotations

from s3archive.archive.frame_blocks import GRAIN, FrameBlocks, unused


def fill(view: memoryview, byte: int) -> memoryview:
    view[:] = bytes([byte]) * len(view)
    return view


def test_a_block_is_handed_out_again_only_once_no_view_into_it_is_left() -> None:
    blocks = FrameBlocks(keep=2)
    first = fill(blocks.take(1000), 1)
    chunk = first[10:20]  # what a result holds until its chunk is packed
    del first
    second = fill(blocks.take(1000), 2)
    assert second.obj is not chunk.obj, "a block with a live view is not written over"
    third = fill(blocks.take(800), 3)
    assert third.obj is not chunk.obj and third.obj is not second.obj
    assert bytes(chunk) == b"\x01" * 10
    held = second.obj
    del second
    fourth = fill(blocks.take(GRAIN), 4)  # all pooled blocks in use but `held`
    assert fourth.obj is held and len(fourth) == GRAIN
    assert bytes(chunk) == b"\x01" * 10
    del chunk
    fifth = blocks.take(10)
    assert len(fifth) == 10 and not unused(fifth.obj)


def test_at_most_keep_blocks_and_a_frame_too_large_replaces_a_free_one() -> None:
    blocks = FrameBlocks(keep=2)
    views = [blocks.take(100) for _ in range(3)]
    assert len({id(view.obj) for view in views}) == 3
    assert len(views[2].obj) == 100, "all pooled blocks in use: a block of its own"
    pooled = [view.obj for view in views[:2]]
    del views
    big = blocks.take(3 * GRAIN + 1)
    assert len(big.obj) == 4 * GRAIN and big.obj not in pooled
    small = blocks.take(100)
    assert small.obj in pooled
    assert len(blocks.take(0)) == 0


def test_unused_sees_views_and_leaves_the_bytes_as_they_were() -> None:
    block = bytearray(b"abcdef")
    view = memoryview(block)[2:4]
    assert not unused(block)
    view.release()
    assert unused(block) and block == bytearray(b"abcdef") and block.__alloc__() == 7


def test_a_workers_results_keep_their_bytes_while_later_frames_arrive(tmp_path) -> None:
    """Through a real worker: results held while many more frames are read (their
    blocks in use, others handed out again) still hold each file's encoded bytes."""
    import os
    import random

    from s3archive.archive.content_workers import (ContentWorkers, FileToRead, Walked,
                                                    WorkerSettings)
    from s3archive.format.chunk_codec import decode_chunk

    rng = random.Random(9)
    files = []
    for number in range(40):
        path = tmp_path / f"f{number}"
        path.write_bytes(rng.randbytes(rng.randrange(1, 300_000)) if number % 2
                         else b"%d " % number * rng.randrange(1, 50_000))
        st = path.stat()
        files.append((path.read_bytes(), FileToRead(
            os.fsencode(path), st.st_ino, st.st_ctime_ns,
            Walked(st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns))))
    with ContentWorkers(1, WorkerSettings(3, 0.03, 2.0)) as workers:
        held = []
        for round_ in range(3):
            jobs = [(files[i:i + 4], workers.submit([item for _, item in files[i:i + 4]]))
                    for i in range(0, len(files), 4)]
            results = [(batch, job.result(timeout=60)) for batch, job in jobs]
            if round_ == 0:
                held = results  # kept through the later rounds
            for batch, done in held + results:
                pieces = iter(done.pieces)  # each file's chunks, in file order
                for (content, _), file in zip(batch, done.files):
                    assert file.ok
                    listed = file.spooled.rstrip(b"\n").partition(b"\t")[2]
                    plain = b"".join(bytes(decode_chunk(p.data, p.encoding, p.size, p.hash))
                                     for _, p in zip(listed.split(b",") if listed else [], pieces))
                    assert plain == content
            del results, jobs
