"""Format 2 end to end on the in-memory store: trees that deduplicate, random
access, whole-run reads equal to what was archived, format 1 beside it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from s3archive.archive.archiver import ArchiveSummary
from s3archive.format import tree_codec
from s3archive.format.model import DIR, FILE, HARDLINK, SYMLINK
from s3archive.repo.catalog import load_manifest, open_tree, peek_format
from s3archive.restore.restorer import restore_run
from support.memory_host import MemoryHost, tree_snapshot


class Host(MemoryHost):
    def __init__(self, root: Path):
        super().__init__(root, "format-two")

    def archive(self, **options: Any) -> ArchiveSummary:  # type: ignore[override]
        """One run, whatever its exit code (these tests check it)."""
        return self.attempt(**options)

    def new_bytes(self, before: set[tuple[str, str]]) -> int:
        return sum(v.size for v in self.store.versions()
                   if (v.key, v.version_id) not in before and not v.is_delete_marker)

    def known(self) -> set[tuple[str, str]]:
        return {(v.key, v.version_id) for v in self.store.versions()}


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def fill(tree: Path, files: int = 1500) -> None:
    big = tree / "big"
    big.mkdir()
    for i in range(files):
        (big / f"file-{i:05d}.txt").write_text(f"content of file {i}\n" * (1 + i % 7))
    nested = tree / "a" / "b" / "c"
    nested.mkdir(parents=True)
    (nested / "deep.bin").write_bytes(os.urandom(300_000))
    (tree / "a" / "link").symlink_to("b/c/deep.bin")
    os.link(nested / "deep.bin", tree / "a" / "hard")
    (tree / os.fsdecode(b"caf\xe9-latin1")).write_bytes(b"not utf-8 name")
    (tree / "empty-dir").mkdir()
    (tree / "sparse").write_bytes(b"")
    with open(tree / "sparse", "r+b") as handle:
        handle.seek(5 << 20)
        handle.write(b"end")


def test_runs_are_written_in_format_2_and_restore_exactly(host: Host, tmp_path: Path,
                                                          read_by: str) -> None:
    fill(host.tree)
    summary = host.archive()
    assert summary.exit_code == 0, summary.warnings
    run = host.latest()
    blob = host.store.get(run.key, run.version_id)
    assert peek_format(blob, run.key) == 2
    assert len(blob) < 4096, "the root object holds no entries"
    keys = {v.key.split("/")[0] for v in host.store.versions()}
    assert keys == {"data", "index", "meta", "runs"}  # index: the group index (16)
    target = tmp_path / "restored"
    report = restore_run(host.store, load_manifest(host.store, run), target, [])
    assert report.ok
    restored = target / str(host.tree).lstrip("/")
    assert tree_snapshot(restored) == tree_snapshot(host.tree)
    assert os.stat(restored / "a" / "hard").st_ino == os.stat(
        restored / "a" / "b" / "c" / "deep.bin").st_ino


def test_a_big_directory_is_split_into_leaves_under_an_inner_node(host: Host) -> None:
    fill(host.tree, files=3000)
    host.archive()
    tree = open_tree(host.store, host.latest())
    item = tree.lookup(os.fsencode(host.tree / "big"))
    assert item is not None and item.tree is not None
    node = tree._node(item.tree, item.entry.path)
    assert node.height == 1 and len(node.children) > 2
    assert sum(child.entries for child in node.children) == 3000
    names = [e.path for e in tree.walk(item)][1:]
    assert names == sorted(names) and len(names) == 3000


def test_an_unchanged_run_stores_only_its_root_object(host: Host) -> None:
    fill(host.tree)
    host.archive()
    before = host.known()
    second = host.archive()
    assert second.files_unchanged > 1500 and second.packs_uploaded == 0
    new = [v for v in host.store.versions() if (v.key, v.version_id) not in before]
    assert [v.key.split("/")[0] for v in new] == ["runs"]
    assert host.new_bytes(before) < 4096


def test_a_changed_file_rewrites_its_leaf_and_the_nodes_above_only(host: Host) -> None:
    fill(host.tree, files=3000)
    host.archive()
    first = open_tree(host.store, host.latest())
    (host.tree / "big" / "file-01234.txt").write_text("changed\n")
    host.archive()
    second = open_tree(host.store, host.latest())
    stats = second.root.trailer.stats
    # the changed leaf, the inner node of big/, the tree's ancestors, the run record
    depth = len(host.tree.parts) + 1
    assert stats["trees_new"] <= depth + 3, stats
    big = os.fsencode(host.tree / "big")
    old, new = first.lookup(big), second.lookup(big)
    assert old.tree.hash != new.tree.hash
    unchanged = first.lookup(os.fsencode(host.tree / "a"))
    assert unchanged.tree.hash == second.lookup(os.fsencode(host.tree / "a")).tree.hash


def test_one_path_is_read_with_a_few_requests(host: Host) -> None:
    fill(host.tree, files=3000)
    host.archive()
    run = host.latest()
    before = host.store.usage().requests.get("GetObject", 0)
    path = os.fsencode(host.tree / "a" / "b" / "c" / "deep.bin")
    manifest = load_manifest(host.store, run, paths=[path])
    gets = host.store.usage().requests.get("GetObject", 0) - before
    assert [e.path for e in manifest.entries][-1] == path
    assert all(e.kind == DIR for e in manifest.entries[:-1])
    # root object, run record, one node per directory level on the way (each read once
    # per lookup of an ancestor: bounded by depth squared, not by the 3000 files)
    depth = len(path.split(b"/"))
    assert gets <= 2 + depth * (depth + 1), gets


def test_a_partial_read_brings_the_file_a_hardlink_names(host: Host, tmp_path: Path) -> None:
    fill(host.tree)
    host.archive()
    run = host.latest()
    hard = os.fsencode(host.tree / "a" / "hard")
    manifest = load_manifest(host.store, run, paths=[hard])
    kinds = {e.path: e.kind for e in manifest.entries}
    assert kinds[hard] == HARDLINK or kinds[hard] == FILE
    report = restore_run(host.store, manifest, tmp_path / "one", [hard])
    assert report.ok
    restored = tmp_path / "one" / str(host.tree).lstrip("/") / "a" / "hard"
    assert restored.read_bytes() == (host.tree / "a" / "hard").read_bytes()


def test_chunk_lists_hold_the_chunks_of_a_file_with_many(host: Host, monkeypatch) -> None:
    monkeypatch.setattr(tree_codec, "INLINE_CHUNKS", 2)
    monkeypatch.setattr(tree_codec, "LIST_MIN", 1)
    monkeypatch.setattr(tree_codec, "LIST_MAX", 3)
    data = os.urandom(9 << 20)
    (host.tree / "many").write_bytes(data)
    host.archive()
    tree = open_tree(host.store, host.latest())
    item = tree.lookup(os.fsencode(host.tree / "many"))
    assert item.lists, "the file's chunks are in chunk lists"
    entry = tree.complete(item)
    assert len(entry.chunks) > 3 and sum(c.size for c in entry.chunks) == len(data)


def test_format_1_runs_stay_readable_beside_format_2(host: Host, tmp_path: Path) -> None:
    fill(host.tree, files=50)
    one = host.archive(storage_format=1)
    assert one.exit_code == 0
    first = host.latest()
    assert peek_format(host.store.get(first.key, first.version_id), "r") == 1
    (host.tree / "added").write_text("new in run 2\n")
    two = host.archive()
    assert two.packs_uploaded >= 1
    second = host.latest()
    # the format-2 run reuses the format-1 packs of unchanged files
    table = open_tree(host.store, second).root.packs
    assert any(p.key.startswith("packs/") for p in table)
    for run, name in ((first, "one"), (second, "two")):
        report = restore_run(host.store, load_manifest(host.store, run), tmp_path / name, [])
        assert report.ok
    two_tree = tree_snapshot(tmp_path / "two" / str(host.tree).lstrip("/"))
    assert two_tree == tree_snapshot(host.tree)
    one_tree = tree_snapshot(tmp_path / "one" / str(host.tree).lstrip("/"))
    assert "added" not in one_tree and len(one_tree) == len(two_tree) - 1


def test_the_root_entry_and_warnings_live_in_the_run_record(host: Host) -> None:
    (host.tree / "f").write_text("x")
    host.archive()
    run = host.latest()
    lines = [json.loads(line) for line in
             __import__("zstandard").ZstdDecompressor().decompressobj().decompress(
                 host.store.get(run.key, run.version_id)).splitlines()]
    assert [line["type"] for line in lines][0] == "header"
    assert [line["type"] for line in lines][-2:] == ["root", "trailer"]
    assert "warnings" not in lines[-1]
    assert not any("path" in json.dumps(line) and str(host.tree) in json.dumps(line)
                   for line in lines), "no path in the root object"
    tree = open_tree(host.store, run)
    assert tree.top().entry.path == b"/" and tree.top().entry.kind == DIR
    assert {e.kind for e in tree.walk()} >= {DIR, FILE}
    assert SYMLINK not in {e.kind for e in tree.walk()}


def test_ten_thousand_long_warnings_still_fit_the_run_record() -> None:
    from s3archive.archive.archiver import _fitting
    from s3archive.format.manifest_codec import encode_warning
    from s3archive.format.model import Warning_
    warnings = [encode_warning(Warning_("file", "x" * 4096, b"/p/%d" % i)) for i in range(10_000)]
    kept = _fitting(warnings)
    record = tree_codec.encode_record(None, None, [], kept)
    assert len(record) <= tree_codec.MAX_META_BLOB
    assert kept[:-1] == warnings[:len(kept) - 1]
    assert kept[-1]["message"] == f"{10_000 - len(kept) + 1} more warnings were logged but " \
                                  "not recorded in the run"
