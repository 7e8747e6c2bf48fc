"""The file cache never makes a manifest disagree with the disk (in-memory store)."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

import s3archive.archive.file_stage as file_stage_module
from s3archive.archive.sources import file_reader
from s3archive.archive.archiver import ArchiveSummary
from s3archive.repo.catalog import load_manifest
from s3archive.archive.sources import fs_metadata
from support.memory_host import MemoryHost


class Host(MemoryHost):
    def __init__(self, root: Path):
        super().__init__(root, "cache-test")

    def archive(self, **options: Any) -> ArchiveSummary:  # type: ignore[override]
        """One run, whatever its exit code (these tests check it)."""
        return self.attempt(**options)

    def entry(self, name: str):
        manifest = load_manifest(self.store, self.latest())
        return next(e for e in manifest.entries if e.path == os.fsencode(self.tree / name))


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_metadata_changed_between_walk_and_read_is_not_cached(host: Host, monkeypatch) -> None:
    target = host.tree / "a"
    target.write_bytes(b"x" * 1000)
    target.chmod(0o644)
    real_read = file_reader.read_file

    def chmod_first(path, *args, **kwargs):
        os.chmod(path, 0o600)  # after the walk's lstat, before the read
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(file_reader, "read_file", chmod_first)
    host.archive()
    monkeypatch.setattr(file_reader, "read_file", real_read)
    second = host.archive()
    assert second.files_unchanged == 0, "the stale line must not be reused"
    assert host.entry("a").mode == 0o600


def test_incomplete_metadata_is_read_again_next_time(host: Host, monkeypatch) -> None:
    target = host.tree / "a"
    target.write_bytes(b"data")
    os.setxattr(target, "user.important", b"yes")
    real = fs_metadata.read_acls_and_xattrs
    failures = iter([OSError(errno.ENOMEM, "Cannot allocate memory")])

    def flaky(path, is_dir):
        if path.endswith(b"/a"):
            failure = next(failures, None)
            if failure:
                raise failure
        return real(path, is_dir)

    monkeypatch.setattr(fs_metadata, "read_acls_and_xattrs", flaky)
    first = host.archive()
    assert first.exit_code == 3 and "metadata incomplete" in first.warnings[0]
    second = host.archive()
    assert second.exit_code == 0 and second.files_unchanged == 0
    assert host.entry("a").xattrs == {"user.important": b"yes"}
    assert host.archive().files_unchanged == 1


def test_a_dry_run_leaves_the_file_cache_as_it_was(host: Host, read_by: str) -> None:
    for i in range(20):
        (host.tree / f"f{i}").write_bytes(os.urandom(2000))
    host.archive()
    (host.tree / "new").write_bytes(b"new")
    dry = host.archive(dry_run=True)
    assert dry.files_unchanged == 20 and dry.manifest_key is None
    real = host.archive()
    assert (real.files_unchanged, real.bytes_read) == (20, 3)


@pytest.mark.parametrize("cut", [(1 << 20) + 32 * 1024, 32 * 1024], ids=["in-last-extent",
                                                                           "in-first-extent"])
def test_a_sparse_file_that_shrinks_while_read_keeps_its_layout(host: Host, monkeypatch,
                                                                 cut: int) -> None:
    path = host.tree / "sparse"

    def make() -> None:
        with open(path, "wb") as handle:
            handle.write(b"A" * 65536)
            handle.seek(1 << 20)
            handle.write(b"B" * 65536)

    make()
    real = fs_metadata.data_extents

    def truncating(fd, size):
        make()  # the file as it was, for this attempt ...
        extents = real(fd, size)
        os.truncate(path, cut)  # ... and a writer cuts it right after its holes were mapped
        return extents

    monkeypatch.setattr(fs_metadata, "data_extents", truncating)
    # the file is made sparse again before every attempt, after the reader's fstat:
    # its holes must be looked for every time, however the fstat found it
    monkeypatch.setattr(file_reader, "is_dense", lambda st: False)
    summary = host.archive()
    assert any("changed while being read" in w for w in summary.warnings), summary.warnings
    entry = host.entry("sparse")
    extents = entry.extents if entry.extents is not None else [(0, entry.size)]
    assert entry.size == cut
    assert sum(c.size for c in entry.chunks) == sum(n for _, n in extents)
    assert extents == ([(0, 65536), (1 << 20, 32 * 1024)] if cut > 65536 else [(0, 32 * 1024)])
    expected = b"A" * 65536 + b"B" * 32768 if cut > 65536 else b"A" * 32768
    assert [c.hash for c in entry.chunks] == [hashlib.sha256(expected).hexdigest()]
