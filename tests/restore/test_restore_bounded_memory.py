"""Whole-run readers of a format-2 run hold what one batch and one path need,
not a list of the run: restore and ``verify --read-data`` of a run of N files
and of 4 N files (in-memory store, tracemalloc) peak at about the same."""

from __future__ import annotations

import gc
import random
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from s3archive.archive import group_index
from s3archive.repo.catalog import open_entries
from s3archive.restore import restorer
from s3archive.restore.restorer import RestoreOptions, restore_run
from s3archive import verify
from s3archive.verify import Verifier, VerifyOptions
from support.manifest_builder import RunBuilder
from support.memory_host import MemoryHost
from support.memory_store import FakeClock, MemoryStore

PER_DIR = 50


def archived(root: Path, files: int) -> MemoryHost:
    host = MemoryHost(root, "bounded")
    for number in range(files):
        directory = host.tree / f"d{number // PER_DIR:03d}"
        directory.mkdir(exist_ok=True)
        (directory / f"f{number:05d}.txt").write_bytes(b"%d\n" % number * 7)
    host.run = host.archive()  # type: ignore[attr-defined]
    return host


@pytest.fixture(scope="module")
def hosts(tmp_path_factory) -> tuple[MemoryHost, MemoryHost]:
    return (archived(tmp_path_factory.mktemp("small"), 300),
            archived(tmp_path_factory.mktemp("large"), 1200))


def peak(action) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_restoring_a_run_four_times_larger_takes_no_more_memory(hosts, tmp_path: Path,
                                                                 monkeypatch) -> None:
    # batches small enough that both runs need many of them, and a window that holds
    # a few (at the defaults, 1024 entries a batch in a window of 8 MiB)
    monkeypatch.setattr(restorer, "BATCH_ENTRIES", 32)
    options = RestoreOptions(window=256 << 10)
    peaks = []
    for number, host in enumerate(hosts):
        target = tmp_path / f"t{number}"

        def restore() -> None:
            report = restore_run(host.store, open_entries(host.store, host.run), target,
                                 options=options)
            assert report.ok and report.files == (300, 1200)[number], report

        peaks.append(peak(restore))
        assert len(list((target / str(host.tree).lstrip("/")).iterdir())) == \
            (300, 1200)[number] // PER_DIR
    small, large = peaks
    # a list of the run's entries costs about 1 kB an entry: 0.9 MB more for the larger
    assert large - small < 400_000, peaks


def test_verifying_a_run_four_times_larger_takes_no_more_memory(hosts, monkeypatch) -> None:
    # GETs and database batches small enough that both runs need many of them
    monkeypatch.setattr(verify, "MAX_REQUEST", 16 << 10)
    monkeypatch.setattr(verify, "SPOOL_ROWS", 64)
    # the run's group index object is decoded a block of lines at a time (1 MiB of
    # text, more than either run's): a small block, as for the GETs above
    monkeypatch.setattr(group_index, "_BLOCK", 4 << 10)
    peaks = []
    for host in hosts:
        def verify_run() -> None:
            result = Verifier(host.store, VerifyOptions(read_data=True, window=64 << 10)
                              ).verify(host.run)
            assert result.ok, result.problems
            assert result.chunks_checked >= 300

        peaks.append(peak(verify_run))
    small, large = peaks
    assert large - small < 400_000, peaks


def test_verify_reads_data_without_the_metadata_packs_of_its_walk(hosts, monkeypatch) -> None:
    """The walk reads whole metadata packs (at 1 M files, 4 kept of ~8 MB each);
    they are dropped before the data is read, not held through it."""
    host = hosts[1]

    class Body(bytes):
        """What the store returned for a metadata object (found again by gc)."""

    inner_get = host.store.get

    def get(key: str, *args, **kwargs) -> bytes:
        body = inner_get(key, *args, **kwargs)
        return Body(body) if key.startswith("meta/") else body

    held: list[int] = []

    class Reader(verify.PackReader):
        def __init__(self, *args, **kwargs) -> None:
            held.append(sum(len(o) for o in gc.get_objects() if type(o) is Body))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(host.store, "get", get)
    monkeypatch.setattr(verify, "PackReader", Reader)
    verifier = Verifier(host.store, VerifyOptions(read_data=True))
    result = verifier.verify(host.run)
    assert result.ok, result.problems
    assert result.chunks_checked >= 1200
    # the run's data, then the blobs its group index object lists: neither read holds them
    assert held and not any(held), f"{held} bytes of metadata packs held while data is read"


def test_verify_holds_no_plain_bytes_of_what_it_checked(tmp_path: Path) -> None:
    """``--read-data`` checks each chunk's hash and keeps no plain bytes: a file of
    16 MiB that compresses well (one ranged GET of its chunks) peaks at about
    one chunk, not the file."""
    host = MemoryHost(tmp_path, "plain")
    text = b"".join(b"line %08d of a longer text.\n" % n for n in range(16 << 15))  # 16 MiB
    (host.tree / "text").write_bytes(text)
    run = host.archive()

    def verify_run() -> None:
        result = Verifier(host.store, VerifyOptions(read_data=True)).verify(run)
        assert result.ok, result.problems
        assert result.bytes_checked == len(text) == 16 << 20

    assert peak(verify_run) < 10 << 20


def test_verify_holds_one_response_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """A response is freed once its chunks are checked, before the next GET is
    issued: ``--read-data`` of 16 MiB of random data, read as four ranged GETs
    of 4 MiB one at a time (a window of one GET), peaks at about one GET, not two."""
    monkeypatch.setattr(verify, "MAX_REQUEST", 4 << 20)
    host = MemoryHost(tmp_path, "one-response")
    host.config = replace(host.config, content=replace(host.config.content, pack_size_mib=32))
    (host.tree / "random").write_bytes(random.Random(7).randbytes(16 << 20))
    run = host.archive()

    def verify_run() -> None:
        options = VerifyOptions(read_data=True, window=4 << 20)
        result = Verifier(host.store, options).verify(run)
        assert result.ok, result.problems
        assert result.bytes_checked == 16 << 20

    before = host.gets()
    assert peak(verify_run) < 6 << 20  # one response and a little; two were 7.4 MB
    assert host.gets() - before >= 4  # the data came in several responses


def test_small_files_are_fetched_within_a_small_window_whatever_the_restores_window(
        tmp_path: Path) -> None:
    """The smaller files' batches are held whole until written: at the default window
    (32 MiB, for the large files' GETs) they are read ahead within ``ORDERED_WINDOW``
    (8 MiB) only, so 24 MiB of 16 KiB files restore within about 12 MiB."""
    store = MemoryStore(FakeClock())
    builder = RunBuilder(store, lock_mode=None, pack_size=4 << 20)
    builder.dir(b"/")
    rng = random.Random(20)
    files = {}
    for number in range(1536):
        if number % 512 == 0:
            builder.dir(b"/d%02d" % (number // 512))
        path = b"/d%02d/f%05d" % (number // 512, number)
        # compressible: held as plain bytes (the stored ones are views of the store's)
        files[path] = (b"%05d " % number * 2731 + rng.randbytes(8))[-(16 << 10):]
        builder.file(path, files[path])
    manifest = builder.manifest()
    target = tmp_path / "t"

    def restore() -> None:
        report = restore_run(store, manifest, target)
        assert report.ok and report.files == len(files), report

    assert peak(restore) < 12 << 20  # 25 MB when they were read ahead within 32 MiB
    assert all((target / path.decode()[1:]).read_bytes() == data
               for path, data in list(files.items())[::97])
