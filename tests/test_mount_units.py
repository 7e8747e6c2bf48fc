"""The mount's filesystem logic without FUSE: lookups, reads, the chunk cache."""

from __future__ import annotations

import hashlib
import stat
import threading
from datetime import datetime, timedelta, timezone

import pytest
import zstandard

from s3archive.format.model import (DIR, FILE, ChunkRef, Entry, Header, Manifest, PackRef,
                                    Trailer)
from s3archive.mount import Damaged, NotFound, RunFilesystem
from s3archive.repo.catalog import RunRef
from s3archive.store.base import ObjectLock
from support.memory_store import FakeClock, MemoryStore

PLAIN = b"hello world, " * 5000
STORED = zstandard.ZstdCompressor().compress(PLAIN)
NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


def manifest(host: str, run_id: str, pack: PackRef, ref: ChunkRef) -> Manifest:
    header = Header(host=host, run_id=run_id, started=NOW, lock_mode="GOVERNANCE",
                    retain_until=NOW + timedelta(days=9), tier="daily", tool="test")
    entries = [Entry(path=b"/", kind=DIR, mode=0o755, uid=0, gid=0, mtime_ns=0),
               Entry(path=b"/etc", kind=DIR, mode=0o755, uid=0, gid=0, mtime_ns=0),
               Entry(path=b"/etc/f", kind=FILE, mode=0o644, uid=0, gid=0, mtime_ns=5,
                     size=ref.size, chunks=[ref], xattrs={"user.x": b"1"})]
    return Manifest(header, [pack], entries, [], Trailer(finished=NOW))


@pytest.fixture
def bucket():
    store = MemoryStore(FakeClock(NOW))
    put = store.put("packs/ab/abcd", STORED, ObjectLock("GOVERNANCE", NOW + timedelta(days=9)))
    pack = PackRef(0, "packs/ab/abcd", put.version_id, len(STORED))
    honest = ChunkRef(hashlib.sha256(PLAIN).hexdigest(), len(PLAIN), 0, 0, len(STORED), "zstd")
    # a crafted run points at the same bytes as a raw chunk: its own hash matches them
    crafted = ChunkRef(hashlib.sha256(STORED).hexdigest(), len(STORED), 0, 0, len(STORED), "raw")
    manifests = {"good": manifest("h", "good", pack, honest),
                 "evil": manifest("h", "evil", pack, crafted)}
    runs = [RunRef("h", name, f"runs/h/{name}.jsonl.zst", "v", 1, NOW + timedelta(seconds=i))
            for i, name in enumerate(["evil", "good"])]
    runs.append(RunRef("h", "..", "runs/h/...jsonl.zst", "v", 1, NOW))  # not a usable name
    loads: list[str] = []

    def load(run: RunRef) -> Manifest:
        loads.append(run.run_id)
        return manifests[run.run_id]

    return store, runs, load, loads


def path_inode(fs: RunFilesystem, *names: bytes) -> int:
    inode = 1
    for name in names:
        inode = fs.lookup(inode, name)
    return inode


def test_reads_are_served_per_reference_never_from_another_runs_cache(bucket) -> None:
    store, runs, load, _ = bucket
    fs = RunFilesystem(store, runs, load)
    evil = path_inode(fs, b"h", b"evil", b"etc", b"f")
    assert fs.read(evil, 0, len(STORED)) == STORED  # the crafted run reads its raw bytes
    good = path_inode(fs, b"h", b"good", b"etc", b"f")
    assert fs.read(good, 0, len(PLAIN)) == PLAIN  # decoded and checked on its own
    assert fs.read(good, 100, 26) == PLAIN[100:126]


def test_names_that_cannot_be_entries_are_left_out_and_lookups_fail_cleanly(bucket) -> None:
    store, runs, load, _ = bucket
    fs = RunFilesystem(store, runs, load)
    assert [name for name, _ in fs.children(path_inode(fs, b"h"))] == [b"evil", b"good"]
    with pytest.raises(NotFound):
        fs.lookup(path_inode(fs, b"h"), b"..")
    f = path_inode(fs, b"h", b"good", b"etc", b"f")
    attrs = fs.attributes(f)
    assert stat.S_ISREG(attrs.mode) and attrs.size == len(PLAIN) and attrs.mtime_ns == 5
    assert fs.xattrs(f) == {b"user.x": b"1"}


def test_a_run_loads_once_under_concurrent_access_and_a_failure_is_remembered(bucket) -> None:
    store, runs, load, loads = bucket
    fs = RunFilesystem(store, runs, load, loaded_runs=1)
    run_dir = path_inode(fs, b"h", b"good")
    threads = [threading.Thread(target=fs.children, args=(run_dir,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads.count("good") == 1
    f = path_inode(fs, b"h", b"good", b"etc", b"f")
    path_inode(fs, b"h", b"evil", b"etc")  # evicts "good" (one run kept)
    assert fs.read(f, 0, 5) == b"hello"  # the same inode still works after a reload

    def broken(run: RunRef) -> Manifest:
        loads.append("broken")
        raise OSError("unreadable manifest")

    failing = RunFilesystem(store, runs, broken)
    for _ in range(3):
        with pytest.raises(OSError):
            failing.children(failing.lookup(failing.lookup(1, b"h"), b"good"))
    assert loads.count("broken") == 1


def test_a_missing_pack_is_damage_not_bytes(bucket) -> None:
    _, runs, load, _ = bucket
    fs = RunFilesystem(MemoryStore(FakeClock(NOW)), runs, load)  # a bucket without the pack
    with pytest.raises(Damaged):
        fs.read(path_inode(fs, b"h", b"good", b"etc", b"f"), 0, 10)
