"""The group index reader against crafted objects (docs/FORMAT.md part 2, 16.2):
everything read from the bucket is untrusted, and an object failing any check is
skipped whole (nothing of it is learned), whatever the block it falls in."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import zstandard

from s3archive.archive.group_index import GroupIndex
from s3archive.archive.local_cache import LocalCache
from support.memory_store import FakeClock, MemoryStore

NOW = datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc)
KEY = "index/plain-all/20311124/20311124T021500Z-web1-20311124T021500Z-abcdef-p0.idx"
PACK = "data/" + "ab" + "/" + "ab" * 32
UNTIL = "2031-12-24T00:00:00Z"


def good_lines(blobs: int = 3) -> list[Any]:
    return [{"type": "group_index", "version": 1, "host": "web1",
             "run_id": "20311124T021500Z-abcdef", "written": "2031-11-24T02:15:00Z", "part": 0},
            ["P", 0, PACK, "v1", 29 + blobs * 100 + 16 + 38 * blobs, "GOVERNANCE", UNTIL]] + \
        [["B", 0, f"{i:064x}", 29 + i * 100, 100, 100, "raw"] for i in range(blobs)]


def encode(lines: list[Any]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)


def learn(tmp_path: Path, plain: bytes) -> tuple[int, int, int]:
    """(objects learned, refused, blobs learned) of one object holding ``plain``."""
    clock = FakeClock(NOW)
    store = MemoryStore(clock)
    store.put(KEY, zstandard.ZstdCompressor().compress(plain), None)
    cache = LocalCache(tmp_path / "cache.sqlite")
    try:
        report = GroupIndex(store, "plain-all", "me").refresh(cache, clock(), locked=True)
        rows = cache.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    finally:
        cache.close()
    return report.objects, report.skipped, rows


def test_a_good_object_is_learned(tmp_path: Path) -> None:
    assert learn(tmp_path, encode(good_lines())) == (1, 0, 3)


def test_an_object_of_many_blocks_is_learned_whole(tmp_path: Path) -> None:
    # 15,000 blobs: ~1.3 MB decompressed, decoded in two blocks
    assert learn(tmp_path, encode(good_lines(15_000))) == (1, 0, 15_000)


def _with(change: Any) -> bytes:
    lines = good_lines()
    change(lines)
    return encode(lines)


def _set(row: int, column: int, value: Any) -> Any:
    def change(lines: list[Any]) -> None:
        lines[row][column] = value
    return change


@pytest.mark.parametrize("plain", [
    pytest.param(encode(good_lines())[:-1], id="truncated last line"),
    pytest.param(encode(good_lines()) + b"[" + b"1," * 3000 + b"1]\n", id="a line over 4 KiB"),
    pytest.param(encode(good_lines()).replace(b"\n", b"\n\n", 1), id="an empty line"),
    pytest.param(encode(good_lines()) + b'["B",0,"' + b"0" * 64 + b'",29,100,100,"raw"],1\n',
                 id="two values on one line"),
    pytest.param(encode(good_lines()) + b"not json\n", id="not JSON"),
    pytest.param(_with(_set(2, 1, True)), id="a bool pack number"),
    pytest.param(_with(_set(2, 1, 1)), id="an undeclared pack"),
    pytest.param(_with(_set(2, 2, "AB" * 32)), id="an upper-case blob id"),
    pytest.param(_with(_set(2, 2, "ab" * 31)), id="a short blob id"),
    pytest.param(_with(_set(2, 3, 10 ** 9)), id="a blob past its pack's end"),
    pytest.param(_with(_set(2, 3, 28)), id="a blob inside the pack header"),
    pytest.param(_with(_set(2, 3, 29.0)), id="a float offset"),
    pytest.param(_with(_set(2, 4, True)), id="a bool stored length"),
    pytest.param(_with(_set(2, 4, 0)), id="an empty stored blob"),
    pytest.param(_with(_set(2, 5, 99)), id="a raw blob of the wrong length"),
    pytest.param(_with(_set(2, 6, "gzip")), id="an unknown encoding"),
    pytest.param(_with(_set(1, 2, "meta/ab/" + "ab" * 32)), id="a metadata pack"),
    pytest.param(_with(_set(1, 5, "LOOSE")), id="a bad lock mode"),
    pytest.param(_with(_set(0, "version", 3)), id="an unknown version"),
])
def test_a_crafted_object_is_refused_whole(tmp_path: Path, plain: bytes) -> None:
    assert learn(tmp_path, plain) == (0, 1, 0)
