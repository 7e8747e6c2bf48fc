"""The walker: order, parents, excludes, cache tags, other filesystems, roots."""

from __future__ import annotations

import os
from pathlib import Path

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
