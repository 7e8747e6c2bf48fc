"""``verify`` of format-2 runs (in-memory store): the tree is walked, the data
read pack by pack, and a problem names the paths it affects — hardlinks of an
affected file and snapshots included — from one more pass over the tree."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from s3archive.repo.catalog import open_tree
from s3archive.verify import Verifier, VerifyOptions
from support.memory_host import MemoryHost


@pytest.fixture
def host(tmp_path: Path) -> MemoryHost:
    host = MemoryHost(tmp_path, "verify-trees")
    (host.tree / "d").mkdir()
    (host.tree / "d" / "a.bin").write_bytes(os.urandom(5000))
    os.link(host.tree / "d" / "a.bin", host.tree / "d" / "z-link")
    (host.tree / "d" / "b.bin").write_bytes(os.urandom(5000))
    host.run = host.archive()  # type: ignore[attr-defined]
    return host


def chunk_of(host: MemoryHost, name: str):
    tree = open_tree(host.store, host.run)  # type: ignore[attr-defined]
    item = tree.lookup(os.fsencode(host.tree / "d" / name))
    assert item is not None
    chunk = tree.complete(item).chunks[0]
    return chunk, tree.root.packs[chunk.pack]


def test_a_changed_byte_names_the_file_and_its_hardlink(host: MemoryHost) -> None:
    assert Verifier(host.store, VerifyOptions(read_data=True)).verify(host.run).ok
    chunk, pack = chunk_of(host, "a.bin")
    versions, index = host.store._find("tamper", pack.key, pack.version_id)
    body = bytearray(versions[index].body)
    body[chunk.offset + 10] ^= 1
    versions[index] = dataclasses.replace(versions[index], body=bytes(body))

    assert Verifier(host.store).verify(host.run).ok  # without --read-data: not read
    result = Verifier(host.store, VerifyOptions(read_data=True)).verify(host.run)
    assert [p.kind for p in result.problems] == ["chunk"]
    problem = result.problems[0]
    base = os.fsencode(host.tree / "d")
    assert problem.paths == [base + b"/a.bin", base + b"/z-link"]
    assert problem.paths_total == 2
    assert result.chunks_checked >= 2


def test_a_missing_pack_names_every_path_it_holds(host: MemoryHost) -> None:
    _, pack = chunk_of(host, "b.bin")
    _, a_pack = chunk_of(host, "a.bin")
    versions, index = host.store._find("delete", pack.key, pack.version_id)
    del versions[index]
    result = Verifier(host.store, VerifyOptions(read_data=True)).verify(host.run)
    missing = [p for p in result.problems if p.kind == "missing"]
    assert len(missing) == 1 and pack.key in missing[0].message
    base = os.fsencode(host.tree / "d")
    expected = [base + b"/b.bin"]
    if a_pack.key == pack.key:  # packed together: a.bin and its other name are affected
        expected = [base + b"/a.bin", base + b"/b.bin", base + b"/z-link"]
    assert missing[0].paths == expected and missing[0].paths_total == len(expected)
