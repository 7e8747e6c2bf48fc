"""A run that can reference only its own packs builds its trees during the whole
walk; the metadata packs they fill wait, unsent until the data is secured (the
commit order, FORMAT.md part 2, 8.1), on disk rather than in memory
(ChunkWriter.hold_uploads, SpillFile).  Through the real CLI against RGW, with
metadata packs of 2 KiB so that a small tree fills many more than the writer has
pack bodies (max_concurrency + 1)."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

import s3archive.archive.archiver as archiver
from s3archive.archive import file_stage
from s3archive.archive.chunk_writer import ChunkWriter
from s3archive.archive.packer import Pack
from s3archive.archive.tree_builder import TreeBuilder
from s3archive.errors import StoreError
from s3archive.store.s3_store import S3Store
from support.archive_env import ArchiveEnv
from support.memory_host import tree_snapshot
from support.open_files import open_in

DIRS = 40


class Watched:
    """What the run's writers did: the bodies they sealed (by key, their SHA-256), the
    held writer (the metadata's), the keys stored in order, and how many directories
    the trees built during the walk had encoded at each step."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.sealed: dict[str, str] = {}
        self.held: list[ChunkWriter] = []
        self.stored: list[str] = []
        self.early: list[int] = []
        self._lock = threading.Lock()
        sealed, hold, put, feed = (ChunkWriter._sealed, ChunkWriter.hold_uploads,
                                   S3Store.put, TreeBuilder.feed)

        def sealing(writer: ChunkWriter, pack: Pack, body: bytearray) -> None:
            assert pack.key is not None
            self.sealed[pack.key] = hashlib.sha256(body).hexdigest()
            sealed(writer, pack, body)

        def holding(writer: ChunkWriter) -> None:
            if writer not in self.held:
                self.held.append(writer)
            hold(writer)

        def storing(store: S3Store, key: str, *args: Any, **kwargs: Any) -> Any:
            done = put(store, key, *args, **kwargs)
            with self._lock:
                self.stored.append(key)
            return done

        def fed(builder: TreeBuilder, end: int) -> None:
            self.early.append(builder.dirs_encoded)  # (before: finish() feeds the rest)
            feed(builder, end)

        monkeypatch.setattr(ChunkWriter, "_sealed", sealing)
        monkeypatch.setattr(ChunkWriter, "hold_uploads", holding)
        monkeypatch.setattr(S3Store, "put", storing)
        monkeypatch.setattr(TreeBuilder, "feed", fed)

    @property
    def meta(self) -> ChunkWriter:
        assert len(self.held) == 1  # (only the metadata's uploads are held)
        return self.held[0]


@pytest.fixture
def env(rgw: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client(),
                     pack_size_mib=1)
    tree = tmp_path / "tree"
    rng = random.Random(11)
    for number in range(DIRS):  # ~1.3 MB: two data packs, ~50 metadata packs
        folder = tree / f"d{number:02}" / ("sub" if number % 4 == 0 else "")
        folder.mkdir(parents=True)
        for file in range(16):
            (folder / f"f{file}").write_bytes(rng.randbytes(rng.randrange(1, 4000)))
    env.pick(tree)
    monkeypatch.setattr(archiver, "META_PACK_SIZE", 2 << 10)
    # trees begun from the first entries, every few entries walked
    monkeypatch.setattr(archiver, "EARLY_AFTER_BYTES", 0)
    monkeypatch.setattr(archiver, "EARLY_FEED_BYTES", 0)
    monkeypatch.setattr(file_stage, "SPOOLED_EVERY", 3)
    monkeypatch.setattr(file_stage, "MAX_PENDING", 8)  # (the spool keeps up with the walk)
    return env


def _with_concurrency(env: ArchiveEnv, limit: int) -> None:
    env.config.write_text(env.config.read_text().replace(
        "[host]", f"max_concurrency = {limit}\n[host]", 1))


def _one_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("s3archive: error")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


@pytest.mark.parametrize("limit", [1, 3])
def test_many_more_metadata_packs_than_bodies_wait_on_disk_and_are_stored_as_sealed(
        env: ArchiveEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, limit: int) -> None:
    _with_concurrency(env, limit)
    watched = Watched(monkeypatch)
    summary = env.archive()
    assert summary["exit_code"] == 0
    meta = watched.meta
    # the trees were built during the walk (nearly every directory), their packs held
    # on disk: many more than the writer's bodies (open, and one an upload thread)
    assert max(watched.early) >= DIRS
    assert meta._spill.bodies > 4 * (limit + 1)
    sealed_meta = {key: digest for key, digest in watched.sealed.items()
                   if key.startswith("meta/")}
    assert len(sealed_meta) >= meta._spill.bodies
    # every one stored after every data pack, as sealed, once
    data = [n for n, key in enumerate(watched.stored) if key.startswith("data/")]
    sent = [n for n, key in enumerate(watched.stored) if key.startswith("meta/")]
    assert data and max(data) < min(sent) and len(sent) == len(sealed_meta)
    stored = {version["Key"]: hashlib.sha256(env.client.get_object(
        Bucket=env.bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"]
        .read()).hexdigest() for version in env.versions("meta/")}
    assert stored == sealed_meta
    # the spill file (never named: unlinked at once) went with the run
    assert open_in(env.cache_dir) == []
    assert not [name for name in os.listdir(env.cache_dir) if "spill" in name]
    if limit > 1:  # (restored once: with one upload thread)
        return
    restored = env.run("restore", "latest", "--target", str(tmp_path / "restored"))
    assert restored.exit_code == 0, restored.stderr
    tree = tmp_path / "tree"
    assert tree_snapshot(tmp_path / "restored" / str(tree).lstrip("/")) == tree_snapshot(tree)


def test_a_run_failing_while_metadata_packs_are_held_sends_none_of_them(
        env: ArchiveEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last data pack fails to upload (for good) once metadata packs are held on
    disk: the run fails with one line, no metadata pack is sent, no root committed,
    and the spill file is gone."""
    watched = Watched(monkeypatch)
    put = S3Store.put  # (Watched's: it records what is stored)

    def failing(store: S3Store, key: str, *args: Any, **kwargs: Any) -> Any:
        if key.startswith("data/") and watched.held and watched.meta._spill.bodies > 3:
            raise StoreError(f"S3 PutObject failed: {key}: SlowDown")
        return put(store, key, *args, **kwargs)

    monkeypatch.setattr(S3Store, "put", failing)
    done = env.run("archive")
    assert done.exit_code == 1
    assert "PutObject failed" in _one_error(done.stderr)
    assert watched.meta._spill.bodies > 3 and not watched.meta.new_packs
    assert env.versions("meta/") == [] and env.versions("runs/") == []
    assert open_in(env.cache_dir) == []


def test_a_held_metadata_pack_changed_on_disk_fails_the_run_and_is_not_sent(
        env: ArchiveEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body read back from the spill file that is not the one sealed (here one byte
    changed on disk before the release) is not uploaded: the run fails with one line
    naming the pack, and commits nothing."""
    watched = Watched(monkeypatch)
    release = ChunkWriter.release_uploads
    changed: list[str] = []

    def corrupting(writer: ChunkWriter) -> None:
        first = writer._spilled[0]
        fd = writer._spill._file.fileno()  # type: ignore[union-attr]
        at = first.offset + first.size // 2
        os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ 0x10]), at)
        assert first.pack.key is not None
        changed.append(first.pack.key)
        release(writer)

    monkeypatch.setattr(ChunkWriter, "release_uploads", corrupting)
    done = env.run("archive")
    assert done.exit_code == 1
    error = _one_error(done.stderr)
    assert changed[0] in error and "is not the one sealed (CRC-32); not uploaded" in error
    assert str(env.cache_dir) in error
    assert changed[0] not in {version["Key"] for version in env.versions("meta/")}
    assert env.versions("runs/") == [] and watched.meta._spill.bodies > 3
    assert open_in(env.cache_dir) == []
