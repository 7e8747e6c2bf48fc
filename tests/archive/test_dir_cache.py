"""The directory cache (archive/dir_cache.py): an unchanged directory is not encoded
again, a changed one re-encodes exactly its ancestors, and a reused directory is
never one the run could not reference.  In-memory Object Lock store, real files."""

from __future__ import annotations

import os
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support.memory_host import MemoryHost
from support.store_wrapper import StoreWrapper

from s3archive.archive import tree_builder
from s3archive.archive.local_cache import LocalCache
from s3archive.errors import StoreError
from s3archive.repo.catalog import open_tree

HIDDEN_NAME = "emptydir-7c1e-only-a-name"


class Host(MemoryHost):
    def __init__(self, root: Path, encrypted: bool = False):
        super().__init__(root, "dir-cache", encrypted=encrypted)

    def db(self) -> Path:
        return next((self.root / "cache").glob("*.sqlite"))

    def cache_bytes(self) -> bytes:
        """The cache database's files (the WAL too), as a thief would read them."""
        return b"".join(path.read_bytes() for path in sorted((self.root / "cache").iterdir()))

    def dir_rows(self) -> set[tuple[bytes, bytes, bytes]]:
        with sqlite3.connect(self.db()) as conn:
            return set(conn.execute("SELECT name, digest, row FROM dir_trees"))


def fill(tree: Path) -> None:
    """Three levels of directories, a few files each, one empty directory."""
    for top in range(3):
        for sub in range(3):
            directory = tree / f"top{top}" / f"sub{sub}" / "leafdir"
            directory.mkdir(parents=True)
            for level in (directory.parent.parent, directory.parent, directory):
                for i in range(4):
                    (level / f"f{i}-{sub}.txt").write_text(f"{level} {i}\n" * (i + 1))
    (tree / HIDDEN_NAME).mkdir()


@pytest.fixture
def encoded(monkeypatch) -> list[bytes]:
    """The paths of the directories the tree builder encodes (not reused)."""
    paths: list[bytes] = []
    original = tree_builder.TreeBuilder._encode

    def counting(self: tree_builder.TreeBuilder, directory: Any) -> Any:
        paths.append(directory.path)
        return original(self, directory)

    monkeypatch.setattr(tree_builder.TreeBuilder, "_encode", counting)
    return paths


def ancestors(path: Path) -> set[bytes]:
    return {os.fsencode(p) for p in path.parents}


def test_an_unchanged_directory_is_not_encoded_again(tmp_path: Path,
                                                     encoded: list[bytes]) -> None:
    host = Host(tmp_path)
    fill(host.tree)
    host.archive()
    inside = [p for p in encoded if p.startswith(os.fsencode(host.tree))]
    assert len(inside) == 1 + 3 + 9 + 9 + 1  # the tree, top*, sub*, leafdir, the empty one
    encoded.clear()
    again = host.attempt()
    assert again.exit_code == 0, again.warnings
    # nothing at or below the tree; only the tree's ancestors (tmp_path's mtime moves)
    assert set(encoded) <= ancestors(host.tree), encoded
    assert again.trees_new <= len(encoded) + 1  # (+ the run record)
    host.restores_exactly(tmp_path / "restored")


def test_a_changed_file_deep_in_the_tree_encodes_exactly_its_ancestors(
        tmp_path: Path, encoded: list[bytes]) -> None:
    host = Host(tmp_path)
    fill(host.tree)
    host.archive()
    changed = host.tree / "top1" / "sub2" / "leafdir" / "f3-2.txt"
    changed.write_text("changed\n")
    encoded.clear()
    host.archive()
    assert len(encoded) == len(set(encoded))
    assert set(encoded) == {p for p in ancestors(changed)
                            if p in encoded or p.startswith(os.fsencode(host.tree))}
    assert set(encoded) >= {os.fsencode(changed.parent), os.fsencode(host.tree)}
    tree = open_tree(host.store, host.latest())
    entry = tree.complete(tree.lookup(os.fsencode(changed)))
    assert entry.size == len("changed\n")
    host.restores_exactly(tmp_path / "restored")


def test_rows_into_lapsed_packs_are_not_used_the_directories_are_encoded_again(
        tmp_path: Path, encoded: list[bytes]) -> None:
    host = Host(tmp_path)
    fill(host.tree)
    first = host.attempt()
    assert first.exit_code == 0, first.warnings
    old_packs = {v.key for v in host.store.versions() if not v.key.startswith("runs/")}
    # every pack lapses within the reuse margin: the cache forgets them (and the
    # files pointing into them); the directory rows stay, but must not be used
    host.clock.advance(timedelta(days=1900))  # the first run was yearly: 1830 days
    encoded.clear()
    again = host.attempt()
    assert again.exit_code == 0, again.warnings
    assert len([p for p in encoded if p.startswith(os.fsencode(host.tree))]) == 23
    assert again.files_unchanged == 0 and again.packs_uploaded >= 1
    table = {p.key for p in open_tree(host.store, host.latest()).root.packs}
    assert first.files and not table & old_packs
    host.restores_exactly(tmp_path / "restored")


def test_a_row_whose_data_pack_was_forgotten_is_encoded_again(
        tmp_path: Path, encoded: list[bytes]) -> None:
    host = Host(tmp_path)
    fill(host.tree)
    host.archive()
    data_packs = {v.key for v in host.store.versions() if v.key.startswith("data/")}
    assert len(data_packs) == 1
    cache = LocalCache(host.db())
    cache.begin()
    cache.forget_packs(data_packs)  # as if its version had vanished; metadata packs kept
    cache.commit()
    cache.close()
    (host.tree / "new-file").write_text("makes the new data pack another one\n")
    encoded.clear()
    again = host.attempt()
    assert again.exit_code == 0, again.warnings
    # every file is read again into a new pack: no directory may reuse nodes that
    # point into the forgotten one (the table would not list it)
    assert again.files_unchanged == 0
    inside = {p for p in encoded if p.startswith(os.fsencode(host.tree))}
    assert len(inside) == 22 and os.fsencode(host.tree / HIDDEN_NAME) not in inside
    table = {p.key for p in open_tree(host.store, host.latest()).root.packs}
    assert not table & data_packs
    host.restores_exactly(tmp_path / "restored")


class FailingRoot(StoreWrapper):
    """The store, but the run's root object PUT fails (a crash before the commit)."""

    def put_once(self, key: str, *args: Any, **kwargs: Any) -> Any:
        if key.startswith("runs/"):
            raise StoreError(f"PUT {key}: connection reset")
        return self.inner.put_once(key, *args, **kwargs)


def test_rows_count_only_once_the_run_is_committed(tmp_path: Path, encoded: list[bytes],
                                                   monkeypatch) -> None:
    import s3archive.archive.commit as commit_module
    monkeypatch.setattr(commit_module, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))
    host = Host(tmp_path)
    fill(host.tree)
    host.archive()
    committed = host.dir_rows()
    assert len(committed) >= 23
    changed = host.tree / "top0" / "sub0" / "leafdir" / "f0-0.txt"
    changed.write_text("changed before the crash\n")
    store = host.store
    host.store = FailingRoot(store)  # type: ignore[assignment]
    with pytest.raises(StoreError):
        host.archive()
    assert host.dir_rows() == committed, "rows of a run that never committed"
    host.archive(dry_run=True)
    assert host.dir_rows() == committed, "rows of a dry run (its packs are never stored)"
    host.store = store
    changed.write_text("changed again after the crash\n")
    encoded.clear()
    host.archive()
    assert os.fsencode(changed.parent) in encoded
    assert host.dir_rows() != committed
    host.restores_exactly(tmp_path / "restored")


def test_an_encrypting_hosts_directory_rows_hold_no_name(tmp_path: Path) -> None:
    plain = Host(tmp_path / "plain")
    fill(plain.tree)
    plain.archive()
    # (the empty directory's name is in no file row: only the plain dirs table has it)
    assert HIDDEN_NAME.encode() in plain.cache_bytes()

    host = Host(tmp_path / "encrypted", encrypted=True)
    fill(host.tree)
    host.archive()
    host.archive()
    rows = host.dir_rows()
    assert len(rows) >= 23 and all(len(name) == 16 for name, _, _ in rows)
    data = host.cache_bytes()
    assert HIDDEN_NAME.encode() not in data and b"leafdir" not in data
    assert os.fsencode(host.tree) not in data
    host.restores_exactly(tmp_path / "restored")


def test_a_host_that_starts_encrypting_forgets_its_plain_directory_rows(
        tmp_path: Path) -> None:
    host = Host(tmp_path)
    fill(host.tree)
    host.archive()
    assert HIDDEN_NAME.encode() in host.cache_bytes()
    host.configure(encrypted=True)
    host.archive(start_encryption=True)
    assert HIDDEN_NAME.encode() not in host.cache_bytes()
    assert all(len(name) == 16 for name, _, _ in host.dir_rows())


def test_the_rows_are_the_directories_of_the_last_committed_run(tmp_path: Path) -> None:
    host = Host(tmp_path)
    fill(host.tree)
    host.archive()
    gone = host.tree / "top2" / "sub1" / "leafdir"
    assert os.fsencode(gone) in {name for name, _, _ in host.dir_rows()}
    for path in gone.iterdir():
        path.unlink()
    gone.rmdir()
    host.archive()
    names = {name for name, _, _ in host.dir_rows()}
    assert os.fsencode(gone) not in names
    assert names == ancestors(host.tree) | {os.fsencode(host.tree)} | {
        os.fsencode(Path(d)) for d, _, _ in os.walk(host.tree) if d != str(host.tree)}


def test_a_first_run_does_not_ask_a_cache_that_remembers_no_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first run's cache has no directory rows: no directory is looked up (each
    lookup waited for the cache's lock); the next run looks up its directories and
    reuses them."""
    asked: list[bytes] = []
    original = LocalCache.get_dir

    def counting(self: LocalCache, name: bytes) -> Any:
        asked.append(name)
        return original(self, name)

    monkeypatch.setattr(LocalCache, "get_dir", counting)
    host = Host(tmp_path)
    fill(host.tree)
    host.archive()
    assert asked == []
    again = host.attempt()
    assert again.exit_code == 0, again.warnings
    assert os.fsencode(host.tree / "top1" / "sub2") in asked
    assert again.trees_new <= len(ancestors(host.tree)) + 2
