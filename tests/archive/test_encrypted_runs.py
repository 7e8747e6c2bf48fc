"""Encrypted format-2 runs on the in-memory store: write-only hosts, readers with the key."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from s3archive.archive.archiver import ArchiveSummary
from s3archive.archive.encryption_rule import EncryptionMixError
from s3archive.config import ContentSettings
from s3archive.crypto.errors import WrongKeyError
from s3archive.crypto.keys import Identity
from s3archive.format import pack2
from s3archive.repo.catalog import ALL, ROOT, load_manifest
from s3archive.repo.run_crypto import KeyNeeded
from s3archive.restore.restorer import restore_run
from support.memory_host import MemoryHost
from support.memory_store import MemoryStore

SECRET_TEXT = b"the quarterly numbers nobody may read"
PATH_NAME = "payroll-confidential"


class Host(MemoryHost):
    def __init__(self, root: Path, encrypted: bool = True):
        super().__init__(root, "encrypted-runs", encrypted=encrypted)

    def archive(self, **options: Any) -> ArchiveSummary:  # type: ignore[override]
        """One run, whatever its exit code (these tests check it)."""
        return self.attempt(**options)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    h = Host(tmp_path)
    secret_dir = h.tree / PATH_NAME
    secret_dir.mkdir()
    (secret_dir / "numbers.txt").write_bytes(SECRET_TEXT * 50)
    (h.tree / "big.bin").write_bytes(os.urandom(3 << 20))
    (h.tree / "link").symlink_to(PATH_NAME + "/numbers.txt")
    return h


def every_stored_byte(store: MemoryStore) -> bytes:
    return b"".join(v.body or b"" for v in store.versions())


def test_nothing_readable_is_stored_and_the_key_restores_everything(host: Host, read_by: str,
                                                                    tmp_path: Path) -> None:
    summary = host.archive()
    assert summary.exit_code == 0, summary.warnings
    stored = every_stored_byte(host.store)
    assert SECRET_TEXT not in stored
    assert PATH_NAME.encode() not in stored and str(host.tree).encode() not in stored
    for version in host.store.versions():
        if version.key.startswith(("data/", "meta/")):
            assert version.body[:8] == pack2.MAGIC and version.body[8] == pack2.FLAG_ENCRYPTED
    run = host.latest()
    header = load_manifest(host.store, run, part=ROOT).header  # no key: the root object
    assert header.encryption["recipients"] == [str(host.identity.recipient())]
    assert header.encryption["dedup_id"] == host.secret.dedup_id
    with pytest.raises(KeyNeeded, match="give --key FILE"):
        load_manifest(host.store, run)
    manifest = load_manifest(host.store, run, identities=[host.identity])
    report = restore_run(host.store, manifest, tmp_path / "out", [])
    assert report.ok
    restored = tmp_path / "out" / str(host.tree).lstrip("/")
    assert (restored / PATH_NAME / "numbers.txt").read_bytes() == SECRET_TEXT * 50
    assert (restored / "big.bin").read_bytes() == (host.tree / "big.bin").read_bytes()
    assert os.readlink(restored / "link") == PATH_NAME + "/numbers.txt"


def test_the_hosts_cache_holds_no_path_and_no_content(host: Host) -> None:
    host.archive()
    (host.tree / PATH_NAME / "numbers.txt").unlink()  # a file the host no longer has
    host.archive()
    for name in os.listdir(host.root / "cache"):
        data = (host.root / "cache" / name).read_bytes()
        assert PATH_NAME.encode() not in data and SECRET_TEXT not in data, name
        assert str(host.tree).encode() not in data, name


def test_an_unchanged_encrypted_run_reuses_files_trees_and_packs(host: Host) -> None:
    host.archive()
    before = {(v.key, v.version_id) for v in host.store.versions()}
    again = host.archive()
    assert again.files_unchanged == again.files and again.bytes_read == 0
    new = [v.key.split("/")[0] for v in host.store.versions()
           if (v.key, v.version_id) not in before]
    assert new == ["runs"], new


def test_a_wrong_key_and_a_changed_byte_are_named_never_restored(host: Host,
                                                                 tmp_path: Path) -> None:
    host.archive()
    run = host.latest()
    with pytest.raises(WrongKeyError, match="none of the keys given"):
        load_manifest(host.store, run, identities=[Identity.generate()])
    manifest = load_manifest(host.store, run, identities=[host.identity])
    # flip one byte inside a sealed data blob (the bucket is untrusted)
    big = next(e for e in manifest.entries if e.path.endswith(b"big.bin"))
    chunk = big.chunks[0]
    pack = manifest.packs[chunk.pack]
    versions, index = host.store._find("tamper", pack.key, pack.version_id)
    body = bytearray(versions[index].body)
    body[chunk.offset + 10] ^= 1
    versions[index] = dataclasses.replace(versions[index], body=bytes(body))
    report = restore_run(host.store, manifest, tmp_path / "out", [])
    assert not report.ok
    messages = " ".join(p.message for p in report.damaged + report.failed)
    assert "fails authentication" in messages and chunk.hash in messages


def test_plain_and_encrypted_runs_of_a_host_never_mix_silently(tmp_path: Path) -> None:
    host = Host(tmp_path, encrypted=False)
    (host.tree / "f").write_text("plain first\n")
    host.archive()
    host.configure(encrypted=True)
    with pytest.raises(EncryptionMixError, match="--start-encryption"):
        host.archive()
    switched = host.archive(start_encryption=True)
    assert switched.exit_code == 0
    header = load_manifest(host.store, host.latest(), part=ROOT).header
    assert header.encryption["encryption_started"] is True
    host.configure(encrypted=False)
    with pytest.raises(EncryptionMixError, match="refusing to write a plain run"):
        host.archive()
    host.configure(encrypted=True)
    later = host.archive()
    assert load_manifest(host.store, host.latest(), part=ROOT).header.encryption[
        "encryption_started"] is False
    assert later.exit_code == 0
    manifest = load_manifest(host.store, host.latest(), part=ALL, identities=[host.identity])
    assert any(e.path.endswith(b"/f") for e in manifest.entries)


def test_a_run_refused_under_its_lock_releases_it_only_after_every_picker_ran(
        tmp_path: Path) -> None:
    """A picker forked while the run lock is held keeps a copy of the lock's
    descriptor until it execs: a run that fails early must not release the lock
    while pickers may still start (the next run was refused as 'another archive
    run holds' the lock)."""
    host = Host(tmp_path, encrypted=False)
    (host.tree / "f").write_text("plain first\n")
    host.archive()
    late = host.etc / "pickers.d" / "20-late"
    marker = tmp_path / "late-picker-ran"
    late.write_text(f"#!/bin/sh\nsleep 0.5\ntouch '{marker}'\n")
    late.chmod(0o755)
    host.configure(encrypted=True)
    with pytest.raises(EncryptionMixError):
        host.archive()
    assert marker.exists(), "the run returned while its pickers were still running"
    assert host.archive(start_encryption=True).exit_code == 0


def test_the_cache_of_a_host_that_starts_encrypting_forgets_its_plain_rows(
        tmp_path: Path) -> None:
    host = Host(tmp_path, encrypted=False)
    (host.tree / PATH_NAME).write_text("x")
    host.archive()
    db = next((tmp_path / "cache").glob("*.sqlite"))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM files").fetchone()[0] == 1
    host.configure(encrypted=True)
    host.archive(start_encryption=True)
    assert PATH_NAME.encode() not in db.read_bytes()


def test_a_host_that_lost_its_cache_reads_its_files_again_but_uploads_no_data(
        host: Host, read_by: str, monkeypatch) -> None:
    for number in range(20):  # small files: a content worker's with read_by "workers"
        (host.tree / f"small{number}").write_bytes(os.urandom(100) * number)
    first = host.archive()
    assert first.chunks_new > 0
    import shutil
    above = host.root.stat()
    shutil.rmtree(host.root / "cache")
    (host.root / "cache").mkdir()
    # as if lost elsewhere: the directory above the tree keeps its mtime
    os.utime(host.root, ns=(above.st_atime_ns, above.st_mtime_ns))
    before = {(v.key, v.version_id) for v in host.store.versions()}
    # read by threads again: a worker's keyed ids are the main process's
    monkeypatch.setattr(ContentSettings, "content_workers", lambda self: 0)
    again = host.archive()
    assert again.exit_code == 0, again.warnings
    # it cannot read its runs back: every file is read again ...
    assert again.bytes_read == again.bytes_total > 3 << 20
    # ... but its index objects name every blob it stored: nothing is uploaded again
    assert again.chunks_new == 0 and again.trees_new == 0, again
    new = sorted(v.key.split("/")[0] for v in host.store.versions()
                 if (v.key, v.version_id) not in before)
    # the run's root object, and a new copy of the dedup secret (its lock is unknown
    # to a lost cache and cannot be looked up with the backup role: a few hundred bytes)
    assert new == ["keys", "runs"], new
    # the index objects hold no name and no content either
    for version in host.store.versions("runs/h/packs/"):
        assert PATH_NAME.encode() not in version.body and SECRET_TEXT not in version.body


def test_index_objects_are_locked_and_extended_with_their_packs(host: Host) -> None:
    host.archive()
    indexes = [v for v in host.store.versions("runs/h/packs/")]
    packs = [v for v in host.store.versions() if v.key.startswith(("data/", "meta/"))]
    assert len(indexes) == len(packs) > 0
    for index in indexes:
        assert index.retain_until is not None
    # a later run that extends a pack's lock extends its index object's too
    host.config = __import__("dataclasses").replace(
        host.config, retention=__import__("dataclasses").replace(
            host.config.retention, daily_days=30))
    host.archive()
    by_pack = {v.key.rsplit("/", 1)[1]: v for v in host.store.versions()
               if v.key.startswith("data/")}
    for index in host.store.versions("runs/h/packs/"):
        name = index.key.rsplit("/", 1)[1][:-len(".idx")]
        if name in by_pack:
            assert index.retain_until == by_pack[name].retain_until, index.key
