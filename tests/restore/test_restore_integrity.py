"""Restore reads pinned versions, merges ranged GETs, bounds memory, survives bad chunks."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import pytest

from s3archive.format.model import ChunkRef, PackRef
from s3archive.repo.pack_reader import PackReader, batched_reads, merge_reads

from support.manifest_builder import RunBuilder, invoke, make_bucket_env


@pytest.fixture
def env(rgw, tmp_path: Path):
    return make_bucket_env(rgw, tmp_path)


def test_restore_reads_pinned_versions_with_merged_gets(env, tmp_path: Path) -> None:
    builder = RunBuilder(env.store, chunk_size=16 << 10, pack_size=64 << 20)
    contents = {f"/data/f{i:02d}".encode(): os.urandom(5000 + 20_000 * i) for i in range(20)}
    builder.dir(b"/data")
    for path, data in contents.items():
        builder.file(path, data)
    run = builder.upload()
    assert len(run.manifest.packs) == 1
    chunks = sum(len(e.chunks) for e in run.manifest.entries)
    assert chunks > 60
    pack = run.manifest.packs[0]
    # an attacker (or a bug) PUTs garbage under the same key: a new version
    env.store.put(pack.key, b"garbage" * 1000, None)
    assert env.store.get(pack.key).startswith(b"garbage")

    result = invoke(env, "restore", run.run_id, "--target", str(tmp_path / "t"), "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for path, data in contents.items():
        assert (tmp_path / "t" / path.decode().lstrip("/")).read_bytes() == data
    # one GET for the manifest, one ranged GET for all chunks of the pack
    assert report["store"]["requests"]["GetObject"] == 2
    assert report["bytes"] == sum(len(d) for d in contents.values())


def test_bad_chunks_damage_only_their_files(env, tmp_path: Path) -> None:
    builder = RunBuilder(env.store, pack_size=1)  # one pack per chunk
    builder.dir(b"/")
    good = {b"/good-1": b"first good file\n" * 100, b"/good-2": b"second\n" * 3000}
    for path, data in good.items():
        builder.file(path, data)
    bad = builder.file(b"/bad-hash", b"this chunk is recorded with a wrong hash" * 10)
    builder.hardlink(b"/bad-hash-link", b"/bad-hash")
    wrong = dataclasses.replace(bad.chunks[0], hash="0" * 64)
    bad.chunks[0] = wrong
    gone = builder.file(b"/gone", b"its pack version is deleted" * 10)
    builder.file(b"/zz-after", b"restored after the bad ones\n")
    run = builder.upload()
    victim = run.manifest.packs[gone.chunks[0].pack]
    env.client.delete_object(Bucket=env.bucket, Key=victim.key, VersionId=victim.version_id,
                             BypassGovernanceRetention=True)
    target = tmp_path / "t"

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    assert result.exit_code == 1
    assert "damaged: /bad-hash: " in result.stderr and "does not match its hash" in result.stderr
    assert "damaged: /gone: " in result.stderr and victim.key in result.stderr
    assert "damaged: /bad-hash-link: another name of the damaged b'/bad-hash'" in result.stderr
    assert "3 damaged, 0 not restored" in result.stderr
    for path, data in good.items():
        assert (target / path.decode()[1:]).read_bytes() == data
    assert (target / "zz-after").read_bytes() == b"restored after the bad ones\n"


class SlowStore:
    """Serves one pack from memory, slowly, and records the peak of bytes being fetched."""

    def __init__(self, body: bytes):
        self.body = body
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        first, last = byte_range or (0, len(self.body) - 1)
        with self.lock:
            self.active += last - first + 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.01)
        with self.lock:
            self.active -= last - first + 1
        return self.body[first:last + 1]


def test_downloader_bounds_bytes_in_flight_and_keeps_order() -> None:
    import hashlib
    pieces = [os.urandom(50_000) for _ in range(64)]
    body = b"".join(pieces)
    refs, offset = [], 0
    for piece in pieces:
        refs.append(ChunkRef(hashlib.sha256(piece).hexdigest(), len(piece), 0, offset,
                             len(piece), "raw"))
        offset += len(piece)
    store = SlowStore(body)
    reader = PackReader(store, [PackRef(0, "packs/00/" + "0" * 64, "v1", len(body))],
                            workers=8, window=400_000)

    results = list(reader.results(merge_reads(refs, max_request=100_000)))

    assert [r.data for r in results] == pieces
    # each request costs its stored plus plain bytes against the window
    assert 0 < store.peak <= 400_000 // 2


def test_batches_sort_reads_by_pack_offset_and_serve_duplicates() -> None:
    """Chunks packed out of path order (parallel archiving, dedup) still make few GETs."""
    import hashlib
    import random



    pieces = [os.urandom(30_000) for _ in range(40)]
    layout = list(range(40))
    random.Random(7).shuffle(layout)  # the order the chunks lie in the pack
    body, where = b"", {}
    for index in layout:
        where[index] = len(body)
        body += pieces[index]
    refs = [ChunkRef(hashlib.sha256(p).hexdigest(), len(p), 0, where[i], len(p), "raw")
            for i, p in enumerate(pieces)]
    wanted = refs + refs[:5]  # a duplicate file at the end
    counting = SlowStore(body)
    calls = []
    original = counting.get
    counting.get = lambda *a, **kw: calls.append(kw.get("byte_range") or a[2]) or original(*a, **kw)
    reader = PackReader(counting, [PackRef(0, "packs/00/" + "0" * 64, "v1", len(body))],
                            workers=4, window=2_000_000)

    results = list(reader.ordered(batched_reads(wanted, batch_bytes=10 << 20,
                                                    max_request=8 << 20)))

    assert [r.data for r in results] == pieces + pieces[:5]
    assert [r.ref for r in results] == wanted
    assert len(calls) == 1  # one batch, one pack, back to back once sorted


def test_a_reference_sharing_an_offset_is_checked_against_its_own_hash(env,
                                                                        tmp_path: Path) -> None:
    """Issue 9, defect 2: /b points at /a's stored chunk but records its own hash."""
    import hashlib

    builder = RunBuilder(env.store)
    builder.dir(b"/")
    a_data, b_data = b"the bytes of /a\n" * 64, b"the bytes of /b\n" * 64
    a = builder.file(b"/a", a_data)
    b = builder.file(b"/b", b"placeholder")
    b.size = len(b_data)
    b.chunks = [dataclasses.replace(a.chunks[0], hash=hashlib.sha256(b_data).hexdigest())]
    builder.file(b"/c", a_data)  # an honest duplicate of /a: the same reference
    run = builder.upload()
    assert (b.chunks[0].pack, b.chunks[0].offset) == (a.chunks[0].pack, a.chunks[0].offset)
    target = tmp_path / "t"

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    assert result.exit_code == 1
    assert "damaged: /b: " in result.stderr and "does not match its hash" in result.stderr
    assert "1 damaged, 0 not restored" in result.stderr
    assert (target / "a").read_bytes() == a_data == (target / "c").read_bytes()
    assert a_data not in (target / "b").read_bytes()


def test_pack_reader_serves_each_reference_only_bytes_of_its_own_hash() -> None:
    import hashlib

    piece = os.urandom(40_000)
    good = ChunkRef(hashlib.sha256(piece).hexdigest(), len(piece), 0, 0, len(piece), "raw")
    liar = dataclasses.replace(good, hash=hashlib.sha256(b"something else").hexdigest())
    reader = PackReader(SlowStore(piece), [PackRef(0, "packs/00/" + "0" * 64, "v1",
                                                   len(piece))], workers=2)

    results = list(reader.chunks([good, liar, good, liar]))

    assert [r.ref for r in results] == [good, liar, good, liar]
    assert [r.data for r in results] == [piece, None, piece, None]
    assert "does not match its hash" in results[1].error


def test_a_chunk_declaring_more_than_its_size_is_refused_before_decompressing() -> None:
    """A zstd frame that says 3 GiB is never given 3 GiB (issue 9, defect 4)."""
    import zstandard

    from s3archive.errors import IntegrityError
    from s3archive.format.chunk_codec import decode_chunk
    from s3archive.format.limits import MAX_CHUNK_SIZE

    bomb = zstandard.ZstdCompressor().compress(bytes(64 << 20))  # 64 MiB of zeros, ~2 KiB
    with pytest.raises(IntegrityError, match="the zstd frame declares 67108864 bytes"):
        decode_chunk(bomb, "zstd", 1000, "0" * 64)
    with pytest.raises(IntegrityError, match="beyond the format's maximum"):
        decode_chunk(bomb, "zstd", 3 << 30, "0" * 64)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64 << 20))
    with pytest.raises(IntegrityError, match="cannot decompress"):
        decode_chunk(unsized, "zstd", MAX_CHUNK_SIZE, "0" * 64)
