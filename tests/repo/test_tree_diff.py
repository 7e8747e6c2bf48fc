"""``diff`` of two format-2 runs by their trees: the same changes as a diff of
the whole runs, reading only the nodes the runs do not share."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from s3archive.browse import diff_manifests, diff_runs, diff_trees
from s3archive.repo.catalog import RunRef, load_manifest, open_tree
from s3archive.repo import run_tree
from support.memory_host import MemoryHost


class Host(MemoryHost):
    def __init__(self, root: Path):
        super().__init__(root, "diff")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def whole_diff(host: Host, a: RunRef, b: RunRef) -> list:
    return diff_manifests(load_manifest(host.store, a), load_manifest(host.store, b))


def test_one_changed_file_reads_only_the_nodes_on_its_path(host: Host, monkeypatch) -> None:
    # every node by ranged GET (no pack read whole after a few): one GET a node read
    monkeypatch.setattr(run_tree, "RANGED_BEFORE_WHOLE", 1 << 30)
    for d in range(8):
        folder = host.tree / f"d{d:02d}"
        folder.mkdir()
        for i in range(1000):
            (folder / f"f{i:04d}").write_bytes(b"%d/%d\n" % (d, i))
    first = host.archive()
    changed = host.tree / "d07" / "f0500"
    changed.write_bytes(b"changed\n")
    second = host.archive()

    before = host.gets()
    changes = list(diff_runs(host.store, first, second))
    gets = host.gets() - before
    # (the ancestors of the tree, such as pytest's directory, may change metadata)
    assert [(c.path, c.change) for c in changes if c.change != "metadata"] == [
        (os.fsencode(changed), "content")]
    assert changes == whole_diff(host, first, second)
    # the nodes a lookup of the file reads in each run: one per level, and in d07
    # (1000 names: an inner node over leaves) the inner node and the file's leaf
    on_path = 0
    for run in (first, second):
        tree = open_tree(host.store, run)
        tree.top()
        tree.lookup(os.fsencode(changed))
        on_path += tree.blobs.gets
    d07 = open_tree(host.store, second)
    assert len(list(d07.items(d07.lookup(os.fsencode(changed.parent)).tree,
                              os.fsencode(changed.parent)))) == 1000
    assert d07.blobs.gets > 3, "d07 is more than one leaf: the test needs sibling leaves"
    # two root objects, then the run records and the nodes on the path
    assert gets == 2 + on_path, (gets, on_path)


def test_the_same_changes_as_a_whole_diff(host: Host, tmp_path: Path) -> None:
    tree = host.tree
    (tree / "big").mkdir()
    for i in range(3000):
        (tree / "big" / f"n{i:05d}").write_bytes(b"x" * (i % 13))
    for sub in ("gone/inner/deep", "stays/a", "kind", "meta"):
        (tree / sub).mkdir(parents=True)
    (tree / "gone/inner/deep/file").write_text("bye")
    (tree / "stays/a/file").write_text("same")
    (tree / "kind/was-file").write_text("file")
    (tree / "meta/f").write_text("m")
    (tree / "link").symlink_to("stays")
    (tree / os.fsdecode(b"caf\xe9")).write_text("latin-1 name")
    first = host.archive()

    (tree / "big" / "n01234").write_text("changed")
    (tree / "big" / "n00007").unlink()
    (tree / "big" / "n99999").write_text("added at the end")
    for path in sorted((tree / "gone").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tree / "gone").rmdir()
    (tree / "kind/was-file").unlink()
    (tree / "kind/was-file").mkdir()
    (tree / "kind/was-file/inside").write_text("now a directory")
    os.chmod(tree / "meta/f", 0o600)
    (tree / "link").unlink()
    (tree / "link").symlink_to("elsewhere")
    (tree / "new/dir").mkdir(parents=True)
    (tree / "new/dir/file").write_text("new")
    second = host.archive()

    changes = list(diff_runs(host.store, first, second))
    assert changes == whole_diff(host, first, second)
    kinds = {c.path.removeprefix(os.fsencode(tree)): c.change for c in changes}
    assert kinds[b"/big/n01234"] == "content" and kinds[b"/big/n00007"] == "removed"
    assert kinds[b"/gone/inner/deep/file"] == "removed"
    assert kinds[b"/kind/was-file/inside"] == "added" and kinds[b"/meta/f"] == "metadata"
    assert kinds[b"/new/dir/file"] == "added" and kinds[b"/link"] == "content"
    assert b"/stays/a/file" not in kinds
    # and backwards
    assert list(diff_runs(host.store, second, first)) == whole_diff(host, second, first)


def test_a_hardlink_in_an_unchanged_directory_follows_its_file(host: Host) -> None:
    """A file changed behind an unchanged mtime: its hardlink's own entry, in a
    directory no other change touches, is identical in both runs."""
    (host.tree / "a").mkdir()
    (host.tree / "b").mkdir()
    data = host.tree / "a" / "data"
    data.write_bytes(b"version one")
    os.link(data, host.tree / "b" / "link")
    stamp = os.stat(data).st_mtime_ns
    first = host.archive()
    with open(data, "r+b") as handle:  # same inode, same size, same mtime
        handle.write(b"VERSION")
    os.utime(data, ns=(stamp, stamp))
    second = host.archive()
    changes = list(diff_runs(host.store, first, second))
    inside = [(c.path.removeprefix(os.fsencode(host.tree)), c.change) for c in changes
              if c.path.startswith(os.fsencode(host.tree) + b"/")]
    assert inside == [(b"/a/data", "content"), (b"/b/link", "content")]
    assert changes == whole_diff(host, first, second)


def test_an_unchanged_run_reads_no_node(host: Host) -> None:
    (host.tree / "f").write_text("same")
    first = host.archive()
    second = host.archive()
    a, b = open_tree(host.store, first), open_tree(host.store, second)
    assert [c for c in diff_trees(a, b) if c.change != "metadata"] == []
    assert a.blobs.gets + b.blobs.gets == 2 or any(
        c.change == "metadata" for c in diff_trees(a, b)), "the run records only"


def test_one_run_of_each_format_is_compared_whole(host: Host) -> None:
    (host.tree / "f").write_text("one")
    first = host.archive(storage_format=1)
    (host.tree / "f").write_text("two!")
    second = host.archive()
    changes = list(diff_runs(host.store, first, second))
    assert [(c.change, c.fields[:2]) for c in changes][-1] == ("content", ["size", "content"])
    assert changes == whole_diff(host, first, second)


def test_a_diff_of_every_file_changed_holds_no_list_of_the_changes(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """Two runs that differ in every file, of N and of 4 N files: the diff, read
    as it goes, peaks at about the same memory (the changes were a list of the
    run: ~0.5 kB a change)."""
    # nodes by ranged GET: no whole metadata pack (1 MiB here) hides the difference
    monkeypatch.setattr(run_tree, "RANGED_BEFORE_WHOLE", 1 << 30)
    peaks = []
    for files in (300, 1200):
        host = Host(tmp_path / str(files))
        for number in range(files):
            folder = host.tree / f"d{number // 50:03d}"
            folder.mkdir(exist_ok=True)
            (folder / f"f{number:05d}").write_bytes(b"one %d\n" % number)
        first = host.archive()
        for number in range(files):
            (host.tree / f"d{number // 50:03d}" / f"f{number:05d}").write_bytes(
                b"two %d\n" % number)
        second = host.archive()
        tracemalloc.start()
        try:
            old, new = open_tree(host.store, first), open_tree(host.store, second)
            tracemalloc.reset_peak()  # decoding a root object peaks at ~1 MB, briefly
            changed = sum(1 for c in diff_trees(old, new) if c.change == "content")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert changed == files
    small, large = peaks
    assert large - small < 200_000, peaks
