"""Point reads of a format-2 run (``restore RUN FILE``, ``ls RUN DIR``) read each
node on the path once, by ranged GET: a path deeper than a handful of nodes is
neither decoded again at every lookup nor the reason to download a whole
metadata pack (at 1 M files a metadata pack is ~8 MB; the file a few hundred
bytes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s3archive.format import pack2
from s3archive.format import tree_codec as tc
from s3archive.repo.catalog import open_entries
from s3archive.repo.run_tree import RunTree
from s3archive.restore.restorer import restore_run
from support.memory_host import MemoryHost

DEPTH = 12  # directories below the tree: with the tree's own ancestors, well over 8 nodes


@pytest.fixture(scope="module")
def deep(tmp_path_factory) -> tuple[MemoryHost, Path]:
    host = MemoryHost(tmp_path_factory.mktemp("deep"), "points")
    folder = host.tree
    for level in range(DEPTH):
        folder = folder / f"level{level:02d}"
        folder.mkdir()
        for i in range(40):  # siblings: nodes of some size, in the same metadata pack
            (folder / f"sibling{i:03d}.txt").write_bytes(b"%d/%d\n" % (level, i) * 20)
    wanted = folder / "wanted.txt"
    wanted.write_bytes(b"the one file\n")
    host.run = host.archive()  # type: ignore[attr-defined]
    return host, wanted


def test_restoring_one_deep_file_reads_each_node_of_its_path_once(deep, tmp_path: Path,
                                                                   monkeypatch) -> None:
    host, wanted = deep
    gets: list[tuple[str, tuple[int, int] | None]] = []
    inner_get = host.store.get

    def get(key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        gets.append((key, byte_range))
        return inner_get(key, version_id, byte_range)

    decoded: list[bytes] = []
    inner_decode = tc.decode_node

    def decode_node(plain: bytes, parent: bytes, *args, **kwargs):
        decoded.append(parent)
        return inner_decode(plain, parent, *args, **kwargs)

    monkeypatch.setattr(host.store, "get", get)
    monkeypatch.setattr(tc, "decode_node", decode_node)
    source = open_entries(host.store, host.run)
    assert isinstance(source, RunTree)
    path = os.fsencode(wanted)
    report = restore_run(host.store, source, tmp_path / "t", [path])
    assert report.ok and report.files == 1, report
    assert (tmp_path / "t" / str(wanted).lstrip("/")).read_bytes() == b"the one file\n"

    directories = path.count(b"/")  # "/" and every directory down to the file's parent
    assert directories > DEPTH + 3
    # one (small) node a directory, each decoded once however often the path is looked up
    assert sorted(decoded) == sorted(set(decoded)), decoded
    assert len(decoded) == directories, decoded
    meta = [(key, byte_range) for key, byte_range in gets
            if key.startswith(pack2.META_PREFIX + "/")]
    assert all(byte_range is not None for _, byte_range in meta), \
        "a point read downloaded a whole metadata pack"
    # the root object, the run record, one node a directory, the file's data
    assert len(meta) == 1 + directories, meta
    assert len(gets) == 1 + len(meta) + 1, gets
