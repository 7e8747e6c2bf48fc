"""The restore plan's entry filter (``--include``/``--exclude``) on hand-made
manifests: subtrees, exclude wins, recorded parents only, hardlink groups cut
by the filter, deep paths, and the cost at scale."""

from __future__ import annotations

import time

import pytest

from s3archive.errors import UsageError
from s3archive.find import compile_pattern
from s3archive.format.manifest_codec import entry_sort_key
from s3archive.format.model import DIR, FILE, HARDLINK, ChunkRef, Entry, Manifest
from s3archive.restore.plan import EntryFilter, Pattern, plan_entries

REF = ChunkRef("0" * 64, 10, 0, 0, 10, "raw")


def entry(path: bytes, kind: str = FILE, target: bytes | None = None) -> Entry:
    return Entry(path=path, kind=kind, mode=0o755 if kind == DIR else 0o644, uid=0, gid=0,
                 mtime_ns=0, size=10 if kind == FILE else 0, target=target,
                 chunks=[REF] if kind == FILE else [])


def manifest(*entries: Entry) -> Manifest:
    ordered = sorted(entries, key=lambda e: entry_sort_key(e.path))
    return Manifest(header=None, packs=[], entries=ordered, snapshots=[],  # type: ignore[arg-type]
                    trailer=None)  # type: ignore[arg-type]


def only(*include: str, exclude: tuple[str, ...] = ()) -> EntryFilter:
    return EntryFilter(tuple(Pattern(p, compile_pattern(p)) for p in include),
                       tuple(Pattern(p, compile_pattern(p)) for p in exclude))


def paths(planned) -> list[str]:
    return [item.entry.path.decode() for item in planned]


TREE = manifest(entry(b"/", DIR), entry(b"/a", DIR), entry(b"/a/b", DIR),
                entry(b"/a/b/keep.txt"), entry(b"/a/b/drop.tmp"), entry(b"/a/c", DIR),
                entry(b"/a/c/x"), entry(b"/z"))


def test_subtrees_exclude_wins_and_only_the_parents_needed_come_along() -> None:
    assert paths(plan_entries(TREE, (), only("/a/b"))) == \
        ["/", "/a", "/a/b", "/a/b/drop.tmp", "/a/b/keep.txt"]
    assert paths(plan_entries(TREE, (), only("/a", exclude=("*.tmp", "/a/c")))) == \
        ["/", "/a", "/a/b", "/a/b/keep.txt"]
    # an exclude on a directory takes what an include inside it names, too
    with pytest.raises(UsageError, match="nothing to restore: every entry is excluded"):
        plan_entries(TREE, (), only("/a/b/keep.txt", exclude=("b",)))
    # the filter works inside PATHs; an include that matches outside them only is an error
    assert paths(plan_entries(TREE, [b"/a/c"], only(exclude=("*.tmp",)))) == \
        ["/", "/a", "/a/c", "/a/c/x"]
    with pytest.raises(UsageError, match="--include 'z' matches nothing in this run below "
                                         "the paths given"):
        plan_entries(TREE, [b"/a"], only("z"))
    warned: list[str] = []
    plan_entries(TREE, (), only(exclude=("*.log",)), lambda path, msg: warned.append(msg))
    assert warned == ["--exclude '*.log' matches nothing in this run"]
    warned.clear()  # one that matches only what the includes leave out is no mistake
    plan_entries(TREE, (), only("/a/b", exclude=("/z",)), lambda path, msg: warned.append(msg))
    assert warned == []


def test_a_parent_that_is_not_recorded_is_not_invented() -> None:
    # picked paths need not bring every ancestor: only recorded ones are restored
    sparse = manifest(entry(b"/srv", DIR), entry(b"/srv/deep/er/file"))
    assert paths(plan_entries(sparse, (), only("file"))) == ["/srv", "/srv/deep/er/file"]


def test_a_hardlink_whose_group_file_is_excluded_becomes_a_copy() -> None:
    links = manifest(entry(b"/", DIR), entry(b"/a"), entry(b"/b", HARDLINK, target=b"/a"),
                     entry(b"/c", HARDLINK, target=b"/a"))
    planned = plan_entries(links, (), only(exclude=("/a",)))
    assert paths(planned) == ["/", "/b", "/c"]
    assert planned[1].entry.kind == FILE and planned[1].entry.chunks == [REF]
    assert planned[2].link_to == (b"b",)  # the rest of the group links to the copy


def test_a_deep_path_costs_no_recursion() -> None:
    deep = b"".join(b"/d" for _ in range(2000))  # 4,000 bytes: within the path bound
    many = manifest(entry(b"/", DIR), entry(deep + b"/f"))
    assert paths(plan_entries(many, (), only("f"))) == ["/", (deep + b"/f").decode()]


def test_filtering_a_large_run_stays_fast() -> None:
    entries = [entry(b"/", DIR)]
    for d in range(100):
        entries.append(entry(b"/d%03d" % d, DIR))
        entries.extend(entry(b"/d%03d/f%04d.%s" % (d, f, b"tmp" if f % 7 == 0 else b"txt"))
                       for f in range(1000))
    big = manifest(*entries)
    began = time.perf_counter()
    plan_entries(big)
    whole = time.perf_counter() - began
    began = time.perf_counter()
    planned = plan_entries(big, (), only("/d00*", "/d01*", exclude=("*.tmp", "/d005")))
    took = time.perf_counter() - began
    assert len(planned) == 1 + 19 + 19 * 857  # root, 19 dirs, their .txt files
    # about 1 s here for 100,000 entries and four patterns, 3-5 times the plan without
    # a filter (the machine's load moves both); matching per ancestor would be far more
    assert took < 15 * whole, (took, whole)
