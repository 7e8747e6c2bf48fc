"""A first run does not stat the regular files its listings name: content workers
open and ``fstat`` them (archive/file_stage.py, archive/sources/walker.py).

What a worker does not read — a file with more than one link, a large one, one
replaced after the listing, one gone — it hands back, and the main process
takes it in walk order: hardlink groups settle on the first name in walk order
(whichever way each name was stat'ed), warnings keep their words, and the tree
restores exactly.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

import s3archive.archive.file_stage as file_stage
from s3archive.archive.content_workers import ContentWorkers, FileToRead
from s3archive.archive.sources import walker
from s3archive.format.model import FIFO, HARDLINK, SYMLINK
from support.manifest_builder import invoke, make_bucket_env, make_rich_tree, tree_differences
from support.memory_host import MemoryHost


@pytest.fixture(autouse=True)
def every_directory_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """These trees' directories are small: here every one is walked by name, as a
    large directory of small files is (walker.BY_NAME_ENTRIES, SAMPLED_FILES)."""
    monkeypatch.setattr(walker, "BY_NAME_ENTRIES", 0)
    monkeypatch.setattr(walker, "SAMPLED_FILES", 0)


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[FileToRead]]:
    """Every batch handed to a content worker (workers from the first file, 4 files
    a batch: a hardlink group's names fall in different batches)."""
    monkeypatch.setattr(file_stage, "WORKERS_AFTER_FILES", 0)
    monkeypatch.setattr(file_stage, "BATCH_FILES", 4)
    seen: list[list[FileToRead]] = []
    real_submit = ContentWorkers.submit

    def recorded(self: ContentWorkers, batch: list[FileToRead], read_below: int):
        seen.append(list(batch))
        return real_submit(self, batch, read_below)

    monkeypatch.setattr(ContentWorkers, "submit", recorded)
    return seen


def _by_name(batches: list[list[FileToRead]]) -> set[bytes]:
    return {item.path for batch in batches for item in batch if item.walked is None}


@pytest.mark.skipif(os.geteuid() != 0, reason="the rich tree needs root")
def test_a_first_run_by_name_restores_the_rich_tree_exactly(
        rgw, tmp_path: Path, batches: list[list[FileToRead]]) -> None:
    env = make_bucket_env(rgw, tmp_path)
    with env.config_path.open("a") as config:
        config.write('\n[content]\nexclude = ["*.skip"]\n')
    src = tmp_path / "src"
    make_rich_tree(src)  # hardlinks, a 4.3 MiB file, a fifo, devices, symlinks, ACLs ...
    many = src / "many"
    many.mkdir()
    for number in range(30):
        (many / f"f{number:02d}").write_bytes(b"%d\n" % number * (number + 1))
    os.link(many / "f03", many / "f27-link")  # a group across batches and directories
    os.link(many / "f03", src / "links" / "z-far")
    (many / "left-out.skip").write_bytes(b"excluded\n")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(many / "sock"))
    pickers = tmp_path / "pickers.d"
    pickers.mkdir()
    (pickers / "10-tree").write_text(f"#!/bin/sh\nprintf '%s\\n' '{src}'\n")
    (pickers / "10-tree").chmod(0o755)

    result = invoke(env, "archive", "--json")
    listening.close()
    assert result.exit_code == 0, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    run = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert run["warnings"] == []

    named = _by_name(batches)
    for name in ("many/f00", "many/f03", "many/f27-link", "links/a", "links/b", "etc/big.bin",
                 "etc/a-elsewhere", "names/tab\tname"):
        assert os.fsencode(src / name) in named, name  # given by name, not stat'ed here
    assert not any(path.endswith((b".skip", b"/sock", b"/fifo")) for path in named)

    dst = tmp_path / "dst"
    restored = invoke(env, "restore", run["run_id"], "--target", str(dst), "--json")
    assert json.loads(restored.stdout)["ok"]  # type: ignore[attr-defined]
    inside = Path(f"{dst}{src}")
    assert not (inside / "many" / "left-out.skip").exists()
    assert not (inside / "many" / "sock").exists()
    was = os.stat(many)
    os.unlink(many / "left-out.skip")  # (not in the run: the rest must be the same)
    os.unlink(many / "sock")
    os.utime(many, ns=(was.st_atime_ns, was.st_mtime_ns))
    assert tree_differences(src, inside) == {"rsync": "", "getfacl": "", "getfattr": ""}
    assert (os.stat(inside / "many" / "f27-link").st_ino == os.stat(inside / "links" / "z-far").st_ino
            == os.stat(inside / "many" / "f03").st_ino)


def test_files_replaced_or_gone_after_the_listing_are_taken_as_found(
        tmp_path: Path, batches: list[list[FileToRead]], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    host = MemoryHost(tmp_path)
    for name in ("a-kept", "gone", "to-dir", "to-fifo", "to-link", "z-kept"):
        (host.tree / name).write_bytes(name.encode() * 100)
    real_submit = ContentWorkers.submit

    def swap(self: ContentWorkers, batch: list[FileToRead], read_below: int):
        for item in batch:  # after the walk listed them, before a worker opens them
            name = os.path.basename(item.path)
            if name == b"gone":
                os.unlink(item.path)
            elif name == b"to-dir":
                os.unlink(item.path)
                os.mkdir(item.path)
                (Path(os.fsdecode(item.path)) / "inside").write_bytes(b"x")
            elif name == b"to-fifo":
                os.unlink(item.path)
                os.mkfifo(item.path)
            elif name == b"to-link":
                os.unlink(item.path)
                os.symlink(b"a-kept", item.path)
        return real_submit(self, batch, read_below)

    monkeypatch.setattr(ContentWorkers, "submit", swap)
    summary = host.attempt()

    assert summary.exit_code == 3
    warnings = sorted(summary.warnings)
    assert len(warnings) == 2, warnings
    assert "gone" in warnings[0] and "vanished during the walk" in warnings[0]
    assert "to-dir" in warnings[1] and "was replaced while being read; skipped" in warnings[1]
    entries = host.entries()
    assert sorted(entries) == ["a-kept", "to-fifo", "to-link", "z-kept"]
    assert entries["to-fifo"].kind == FIFO
    assert entries["to-link"].kind == SYMLINK and entries["to-link"].target == b"a-kept"
    assert entries["z-kept"].size == 600
    assert _by_name(batches) >= {os.fsencode(host.tree / n) for n in ("gone", "to-dir", "z-kept")}


def test_hardlink_groups_settle_on_the_first_name_in_walk_order_however_stated(
        tmp_path: Path, batches: list[list[FileToRead]], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """Names of one group: some given by name (a worker hands them back), some
    stat'ed by the walk (a listing that does not say: here forced by name)."""
    host = MemoryHost(tmp_path)
    (host.tree / "d").mkdir()
    for number in range(20):
        (host.tree / "d" / f"f{number:02d}").write_bytes(b"small %d\n" % number)
    (host.tree / "d" / "a0").write_bytes(b"the workers start here\n")
    (host.tree / "d" / "b-first").write_bytes(b"group one\n" * 50)
    os.link(host.tree / "d" / "b-first", host.tree / "d" / "c-stat")
    os.link(host.tree / "d" / "b-first", host.tree / "d" / "f10-late")
    (host.tree / "d" / "a-stat").write_bytes(b"group two\n" * 50)
    os.link(host.tree / "d" / "a-stat", host.tree / "d" / "f05-named")
    os.link(host.tree / "d" / "a-stat", host.tree / "e-named")
    listed = walker.listed_regular
    monkeypatch.setattr(walker, "listed_regular",
                        lambda entry: not entry.name.endswith(b"-stat") and listed(entry))
    host.archive()

    entries = host.entries()
    tree = os.fsencode(host.tree)
    assert entries["d/b-first"].kind == "file" and entries["d/b-first"].size == 500
    for later in ("d/c-stat", "d/f10-late"):
        assert (entries[later].kind, entries[later].target) == (HARDLINK, tree + b"/d/b-first")
    assert entries["d/a-stat"].kind == "file" and entries["d/a-stat"].size == 500
    for later in ("d/f05-named", "e-named"):
        assert (entries[later].kind, entries[later].target) == (HARDLINK, tree + b"/d/a-stat")
    named = _by_name(batches)
    assert tree + b"/d/b-first" in named and tree + b"/d/f05-named" in named
    assert tree + b"/d/a-stat" not in named and tree + b"/d/c-stat" not in named
    host.restores_exactly(tmp_path / "restored")
    restored = tmp_path / "restored" / str(host.tree).lstrip("/")
    assert os.stat(restored / "d" / "f10-late").st_ino == os.stat(restored / "d" / "b-first").st_ino
    assert os.stat(restored / "e-named").st_ino == os.stat(restored / "d" / "a-stat").st_ino


def test_a_listing_that_does_not_say_falls_back_to_a_stat_here(
        tmp_path: Path, batches: list[list[FileToRead]], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """Forced: no entry is known a regular file from its listing (an unknown d_type
    that ``DirEntry`` could not look up): every one is stat'ed by the walk."""
    host = MemoryHost(tmp_path)
    for number in range(12):
        (host.tree / f"f{number:02d}").write_bytes(b"%d" % number * 300)
    os.link(host.tree / "f02", host.tree / "f02-link")
    os.symlink("f01", host.tree / "link")
    monkeypatch.setattr(walker, "listed_regular", lambda entry: False)
    host.archive()

    assert batches and _by_name(batches) == set()  # every file went with its stat
    entries = host.entries()
    assert entries["f02-link"].kind == HARDLINK and entries["f02-link"].target.endswith(b"/f02")
    assert entries["f11"].size == 600 and entries["link"].kind == SYMLINK
    host.restores_exactly(tmp_path / "restored")


def test_large_files_are_handed_back_and_a_full_batch_is_sent_again(
        tmp_path: Path, batches: list[list[FileToRead]], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    monkeypatch.setattr(file_stage, "BATCH_BYTES", 64 * 1024)
    host = MemoryHost(tmp_path)
    sizes = [30_000, 30_000, 30_000, 10, 10, 200_000, 30_000, 5, 70_000, 65_536, 65_535, 1]
    for number, size in enumerate(sizes):
        (host.tree / f"f{number:02d}").write_bytes(os.urandom(size))
    summary = host.attempt()
    assert summary.exit_code == 0 and summary.files == len(sizes)

    given = [item.path for batch in batches for item in batch]
    assert len(given) > len(set(given))  # the rest of a batch that read 64 KiB: sent again
    tree = os.fsencode(host.tree)
    assert {tree + b"/f05", tree + b"/f08", tree + b"/f09"} <= _by_name(batches)
    entries = host.entries()
    for number, size in enumerate(sizes):
        assert entries[f"f{number:02d}"].size == size
    host.restores_exactly(tmp_path / "restored")
    assert host.attempt().files_unchanged == len(sizes)  # their file-cache rows are right
