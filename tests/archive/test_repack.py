"""Repack without reading packs: the chunks a run still needs come from its sources.

In-memory Object Lock store with a fake clock, behind a wrapper that refuses
every GET under ``packs/`` (the backup role has no such right).  The first
run's packs are locked for 2 days; the second run, a day later, needs 10: a
pack it needs little of is rewritten from the files, one holding a chunk only
a snapshot stream had (or a file changed since the walk) is extended.
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from s3archive.archive.archiver import Archiver
from s3archive.config import parse_config
from s3archive.format.chunk_codec import decode_chunk
from s3archive.format.model import FILE
from s3archive.repo.catalog import list_runs, load_manifest
from support.memory_store import FakeClock, MemoryStore
from support.store_wrapper import StoreWrapper

START = datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc)
MiB = 1 << 20


class NoPackReads(StoreWrapper):
    def get(self, key: str, version_id: str | None = None, byte_range=None) -> bytes:
        if key.startswith("packs/"):
            raise AssertionError(f"the archive read {key}")
        return self.inner.get(key, version_id, byte_range)


class Host:
    def __init__(self, root: Path):
        self.root = root
        self.etc = root / "etc"
        (self.etc / "pickers.d").mkdir(parents=True)
        (self.etc / "snapshots.d").mkdir()
        self.tree = root / "tree"
        self.tree.mkdir()
        picker = self.etc / "pickers.d" / "10-tree"
        picker.write_text(f"#!/bin/sh\necho '{self.tree}'\n")
        picker.chmod(0o755)
        self.clock = FakeClock(START)
        self.store = MemoryStore(self.clock)

    def archive(self, days: int):
        until = (self.clock() + timedelta(days=days)).isoformat()
        config = parse_config(
            {"s3": {"bucket": "repack"}, "host": {"name": "h"},
             "retention": {"until": until, "slack_days": 0, "repack_below": 0.5},
             "content": {"pack_size_mib": 8},
             "local": {"cache_dir": str(self.root / "cache"),
                       "state_file": str(self.root / "s.json")}},
            self.etc / "config.toml", clock=self.clock)
        summary = Archiver(config, NoPackReads(self.store), clock=self.clock).run()
        assert summary.exit_code == 0, summary.warnings
        runs = list_runs(self.store, "h")
        return summary, load_manifest(self.store, max(runs, key=lambda r: r.run_id))

    def snapshotter(self, name: str, body: str) -> None:
        path = self.etc / "snapshots.d" / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)


def restored(store: MemoryStore, manifest, path: Path) -> bytes:
    entry = next(e for e in manifest.entries if e.path == os.fsencode(path))
    assert entry.kind == FILE
    stream = b""  # the data extents, concatenated, as the chunker cut them
    for chunk in entry.chunks:
        pack = manifest.packs[chunk.pack]
        stored = store.get(pack.key, pack.version_id,
                           (chunk.offset, chunk.offset + chunk.stored - 1))
        stream += decode_chunk(stored, chunk.encoding, chunk.size, chunk.hash)
    data = bytearray(entry.size)
    for offset, length in entry.extents or [(0, entry.size)]:
        data[offset:offset + length], stream = stream[:length], stream[length:]
    assert stream == b""
    return bytes(data)


def data_packs(manifest):
    return [p for p in manifest.packs if not p.key.startswith("meta/")]


def test_a_pack_needed_little_is_rewritten_from_the_files_never_read(tmp_path: Path) -> None:
    host = Host(tmp_path)
    rng = random.Random(4)
    big = rng.randbytes(3 * MiB)
    (host.tree / "big.bin").write_bytes(big)
    sparse = host.tree / "sparse.img"  # data, a hole, data: chunks cross the hole
    with open(sparse, "wb") as handle:
        handle.write(rng.randbytes(300_000))
        handle.seek(2 * MiB)
        handle.write(rng.randbytes(200_000))
    first, one = host.archive(days=2)
    assert first.packs_uploaded == 2  # data, metadata
    (old_pack,) = data_packs(one)
    sparse_entry = next(e for e in one.entries if e.path == os.fsencode(sparse))
    assert sparse_entry.extents and len(sparse_entry.extents) == 2, "no hole on this filesystem?"
    (host.tree / "big.bin").unlink()
    host.clock.advance(timedelta(days=1))

    second, two = host.archive(days=10)
    assert second.packs_rewritten == 1 and second.packs_extended == 0, second
    assert second.bytes_read == 0 and second.files_unchanged == 1, "only the chunks were read"
    assert [p.key for p in data_packs(two)] != [old_pack.key]
    assert host.store.version(old_pack.key, old_pack.version_id).retain_until < \
        two.header.retain_until, "the old pack was left to lapse"
    assert restored(host.store, two, sparse) == sparse.read_bytes()


def test_a_pack_holding_a_chunk_only_a_snapshot_had_is_extended(tmp_path: Path) -> None:
    host = Host(tmp_path)
    rng = random.Random(5)
    (host.tree / "big.bin").write_bytes(rng.randbytes(3 * MiB))
    stream = tmp_path / "stream.bin"
    stream.write_bytes(rng.randbytes(100_000))
    host.snapshotter("10-stream", f"cat '{stream}' >&\"$1\"\n")
    first, one = host.archive(days=2)
    (host.tree / "big.bin").unlink()
    host.clock.advance(timedelta(days=1))
    second, two = host.archive(days=10)
    assert second.packs_rewritten == 0 and second.packs_extended == 1, second
    assert [(p.key, p.version_id) for p in data_packs(two)] == \
        [(p.key, p.version_id) for p in data_packs(one)]


def test_a_file_changed_since_the_walk_makes_the_pack_extended(tmp_path: Path) -> None:
    host = Host(tmp_path)
    rng = random.Random(6)
    (host.tree / "big.bin").write_bytes(rng.randbytes(3 * MiB))
    kept = host.tree / "kept.bin"
    kept.write_bytes(rng.randbytes(100_000))
    first, one = host.archive(days=2)
    (host.tree / "big.bin").unlink()
    host.clock.advance(timedelta(days=1))
    # snapshotters run after the walk: this one changes kept.bin in between
    host.snapshotter("10-touch", f"head -c 100000 /dev/zero > '{kept}'\necho x >&\"$1\"\n")
    second, two = host.archive(days=10)
    assert second.packs_rewritten == 0 and second.packs_extended == 1, second
    entry = next(e for e in two.entries if e.path == os.fsencode(kept))
    assert {two.packs[c.pack].key for c in entry.chunks} == {one.packs[0].key}
