"""The walker: order, parents, excludes, cache tags, other filesystems, roots."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from s3archive.archive.sources import walker
from s3archive.archive.sources.walker import CACHEDIR_SIGNATURE, Walker, WalkOptions


def walk(roots: list[Path | bytes], **options) -> tuple[list[bytes], list]:
    warnings: list = []
    paths = [item.path for item in Walker(WalkOptions(**options), warnings.append).walk(
        [os.fsencode(r) for r in roots])]
    return paths, warnings


def rel(tmp_path: Path, paths: list[bytes]) -> list[str]:
    prefix = os.fsencode(tmp_path)
    return [os.fsdecode(p[len(prefix):]) or "." for p in paths if p.startswith(prefix)]


def test_order_is_component_wise_with_parents_first(tmp_path: Path) -> None:
    for name in ("a/b/f", "a.b", "a/c", "b"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    paths, warnings = walk([tmp_path])
    assert paths[0] == b"/" and warnings == []
    assert rel(tmp_path, paths) == [".", "/a", "/a/b", "/a/b/f", "/a/c", "/a.b", "/b"]


def test_excludes_match_names_or_full_paths(tmp_path: Path) -> None:
    for name in ("keep/x.log", "keep/y.txt", "skip/z", "deep/skip/w"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    paths, _ = walk([tmp_path], exclude=("*.log", f"{tmp_path}/skip"))
    assert rel(tmp_path, paths) == [".", "/deep", "/deep/skip", "/deep/skip/w", "/keep",
                                    "/keep/y.txt"]


def test_a_tagged_cache_directory_keeps_only_its_tag(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n# a cache\n")
    (cache / "blob").write_text("regenerable")
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "CACHEDIR.TAG").write_text("not the signature")
    (fake / "data").write_text("precious")
    paths, _ = walk([tmp_path])
    assert rel(tmp_path, paths) == [".", "/cache", "/cache/CACHEDIR.TAG", "/fake",
                                    "/fake/CACHEDIR.TAG", "/fake/data"]


def test_overlapping_roots_and_symlinked_parents(tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "sub" / "f").write_text("x")
    os.symlink("real", tmp_path / "link")
    paths, warnings = walk([tmp_path / "real", tmp_path / "real" / "sub",
                            tmp_path / "link" / "sub" / "f", tmp_path / "missing"])
    # /link/sub/f resolves its parents: it is /real/sub/f, listed once
    assert rel(tmp_path, paths) == [".", "/real", "/real/sub", "/real/sub/f"]
    assert [(w.message, os.fsdecode(w.path)) for w in warnings] == [
        ("picked path does not exist", str(tmp_path / "missing"))]


def test_other_filesystems_are_mount_points_only_unless_picked(tmp_path: Path) -> None:
    # /proc is another filesystem below /: picking / must not descend into it
    paths, _ = walk([b"/"], one_file_system=True, exclude=("/usr", "/var", "/root", "/home",
                                                           "/tmp", "/work", "/opt"))
    assert b"/proc" in paths
    assert not any(p.startswith(b"/proc/") for p in paths)
    picked, _ = walk([b"/proc/self/status"])  # picked explicitly: included (self resolved)
    me = b"/proc/%d" % os.getpid()
    assert picked == [b"/", b"/proc", me, me + b"/status"]


def test_without_stat_files_listed_regular_files_come_by_name_in_the_same_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same paths, in the same order, with the same excludes and cache tags as a
    walk that stats everything; only the regular files come without a stat (here in
    every directory, however few its entries and none sampled)."""
    import socket

    monkeypatch.setattr(walker, "BY_NAME_ENTRIES", 0)
    monkeypatch.setattr(walker, "SAMPLED_FILES", 0)

    for name in ("a/f", "a/x.log", "b", "c/d/e"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    os.mkfifo(tmp_path / "a" / "fifo")
    os.symlink("f", tmp_path / "a" / "link")
    os.link(tmp_path / "b", tmp_path / "a" / "b-link")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(tmp_path / "a" / "sock"))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE)
    (cache / "blob").write_text("regenerable")
    warnings: list = []
    stated = list(Walker(WalkOptions(exclude=("*.log",)), warnings.append).walk(
        [os.fsencode(tmp_path)]))
    named = list(Walker(WalkOptions(exclude=("*.log",)), warnings.append,
                        stat_files=False).walk([os.fsencode(tmp_path)]))
    listening.close()
    assert warnings == []
    assert [item.path for item in named] == [item.path for item in stated]
    regular = {item.path for item in stated if item.st is not None
               and item.st.st_mode & 0o170000 == 0o100000}
    assert rel(tmp_path, sorted(regular)) == ["/a/b-link", "/a/f", "/b", "/c/d/e",
                                              "/cache/CACHEDIR.TAG"]
    for item in named:
        if item.path in regular and item.path != os.fsencode(tmp_path):
            assert item.st is None, item.path
        else:
            assert item.st is not None, item.path  # directories, fifo, symlink, socket


def _named_and_stated(root: Path) -> tuple[list[str], list[str]]:
    """The regular files a walk without ``stat_files`` gives by name, and stat'ed."""
    named, stated = [], []
    for item in Walker(WalkOptions(), pytest.fail, stat_files=False).walk([os.fsencode(root)]):
        if item.path.startswith(os.fsencode(root) + b"/"):
            name = os.fsdecode(item.path[len(os.fsencode(root)) + 1:])
            if item.st is None:
                named.append(name)
            elif item.st.st_mode & 0o170000 == 0o100000:
                stated.append(name)
    return named, stated


def test_only_a_large_directory_of_small_files_goes_by_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory of fewer than BY_NAME_ENTRIES names is stat'ed whole; in a larger
    one the first SAMPLED_FILES regular files are, and the rest go by name if those
    averaged below SMALL_MEAN bytes — a directory of large files is stat'ed whole
    (its files would be handed back one by one); a large file after the sample still
    comes by name (the worker hands it back)."""
    monkeypatch.setattr(walker, "BY_NAME_ENTRIES", 10)
    monkeypatch.setattr(walker, "SAMPLED_FILES", 4)
    monkeypatch.setattr(walker, "SMALL_MEAN", 100)
    few, small, large, mixed = (tmp_path / n for n in ("few", "small", "large", "mixed"))
    for directory in (few, small, large, mixed):
        directory.mkdir()
    for number in range(9):
        (few / f"f{number}").write_bytes(b"x")
    for number in range(12):
        (small / f"f{number:02d}").write_bytes(b"x" * 99)
        (large / f"f{number:02d}").write_bytes(b"x" * (100 if number == 0 else 101))
    (small / "sub").mkdir()  # (a name, not a regular file: never sampled, never by name)
    for number in range(12):  # sampled: 3 x 10 bytes + 1 x 360 bytes, mean 97.5
        (mixed / f"f{number:02d}").write_bytes(b"y" * (360 if number in (3, 7) else 10))

    named, stated = _named_and_stated(few)
    assert (named, len(stated)) == ([], 9)
    named, stated = _named_and_stated(small)
    assert stated == ["f00", "f01", "f02", "f03"]
    assert named == [f"f{number:02d}" for number in range(4, 12)]
    named, stated = _named_and_stated(large)  # sampled mean 100.75: not small
    assert (named, len(stated)) == ([], 12)
    named, stated = _named_and_stated(mixed)
    assert stated == ["f00", "f01", "f02", "f03"] and "f07" in named and len(named) == 8


def test_a_tree_deeper_than_the_recursion_limit_is_walked_whole_in_order(
        tmp_path: Path) -> None:
    """The walk keeps its directories on a stack of its own, not Python's: a chain
    of directories deeper than the recursion limit (nested generators failed with
    RecursionError).  The limit is lowered for the walk, so the tree stays shallow
    enough for shutil.rmtree (pytest's cleanup) at the usual limit."""
    depth = 600
    chain = [tmp_path / "top"]
    chain[0].mkdir()
    for _ in range(depth):
        chain.append(chain[-1] / "d")
        chain[-1].mkdir()
    (chain[-1] / "f").write_bytes(b"at the bottom")
    (tmp_path / "top" / "z").write_bytes(b"after the chain")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth // 2)
    try:
        paths, warnings = walk([tmp_path / "top"])
    finally:
        sys.setrecursionlimit(limit)
    assert warnings == []
    got = rel(tmp_path, paths)
    bottom = "/" + str((chain[-1] / "f").relative_to(tmp_path))
    assert got[-2:] == [bottom, "/top/z"]
    assert got[got.index("/top") + 1:-1] == [
        "/" + str(directory.relative_to(tmp_path)) for directory in chain[1:]] + [bottom]
