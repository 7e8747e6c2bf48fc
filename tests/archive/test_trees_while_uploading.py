"""A run that can reference only its own packs (the cache knew none) builds its
trees while its last data packs upload; the commit order (FORMAT.md part 2, 8.1)
still holds: no metadata pack is sent before every data pack is stored."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import s3archive.archive.archiver as archiver
from s3archive.archive import file_stage
from s3archive.archive.local_cache import LocalCache
from s3archive.archive.tree_builder import TreeBuilder
from s3archive.store.base import ObjectLock, PutResult
from support.memory_host import MemoryHost
from support.store_wrapper import StoreWrapper


class SlowData(StoreWrapper):
    """Data packs take a while to store; every event in order."""

    def __init__(self, inner: Any, events: list[str]):
        super().__init__(inner)
        self.events = events
        self._lock = threading.Lock()

    def put(self, key: str, body: bytes | bytearray, lock: ObjectLock | None,
            legal_hold: bool = False) -> PutResult:
        with self._lock:
            self.events.append(f"send {key.split('/')[0]}")
        if key.startswith("data/"):
            time.sleep(0.1)
        done = self.inner.put(key, body, lock, legal_hold)
        with self._lock:
            self.events.append(f"stored {key.split('/')[0]}")
        return done

    def put_once(self, key: str, body: bytes, lock: ObjectLock | None,
                 legal_hold: bool = False) -> PutResult:  # the root object
        done = self.inner.put_once(key, body, lock, legal_hold)
        self.events.append(f"committed {key.split('/')[0]}")
        return done


@pytest.mark.parametrize("known_packs, small_meta, mispredicted", [
    (False, False, False), (False, True, False), (True, True, False), (True, False, True)])
def test_trees_are_built_while_data_uploads_and_metadata_waits_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, known_packs: bool,
        small_meta: bool, mispredicted: bool) -> None:
    """(``mispredicted``: the run took itself for one that reuses nothing, and finds
    leases it must take: its trees are built again, as with the leases known first.)"""
    host = MemoryHost(tmp_path, "trees-while-uploading")
    rng = random.Random(17)
    for number in range(120):
        folder = host.tree / f"d{number % 30}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{number}").write_bytes(rng.randbytes(rng.randrange(1, 20_000)))
    if known_packs:  # a second host's cache knows packs: leases first, trees after
        host.archive()
        (host.tree / "d0" / "new").write_bytes(rng.randbytes(3 << 20))
    if mispredicted:
        monkeypatch.setattr(LocalCache, "is_empty", lambda self: True)
        monkeypatch.setattr(LocalCache, "has_files", lambda self: False)
    events: list[str] = []
    host.store = SlowData(host.store, events)  # type: ignore[assignment]
    if small_meta:  # metadata packs fill as the trees grow (and then wait for the data)
        monkeypatch.setattr(archiver, "META_PACK_SIZE", 512)
    # trees begun during the walk (a run that reuses nothing) every few entries
    monkeypatch.setattr(file_stage, "SPOOLED_EVERY", 3)
    monkeypatch.setattr(archiver, "EARLY_AFTER_BYTES", 0)
    monkeypatch.setattr(archiver, "EARLY_FEED_BYTES", 0)
    monkeypatch.setattr(file_stage, "MAX_PENDING", 8)  # (the spool keeps up with the walk)
    early = []
    feed = TreeBuilder.feed

    def fed(self: TreeBuilder, end: int) -> None:
        early.append(self.dirs_encoded)
        feed(self, end)

    monkeypatch.setattr(TreeBuilder, "feed", fed)
    finish = TreeBuilder.finish  # (the end of every build, begun during the walk or not)

    def built(self: TreeBuilder) -> Any:
        result = finish(self)
        events.append("built")
        return result

    monkeypatch.setattr(TreeBuilder, "finish", built)
    host.archive()
    data = [n for n, event in enumerate(events) if event == "stored data"]
    meta = [n for n, event in enumerate(events) if event == "send meta"]
    assert data and len(meta) > (3 if small_meta else 0)
    assert max(data) < min(meta)  # every data pack stored before a metadata pack is sent
    assert events[-1] == "committed runs" and events.count("committed runs") == 1
    if mispredicted:
        assert events.count("built") == 2
        host.store = host.store.inner  # type: ignore[attr-defined]
        host.restores_exactly(tmp_path / "restored")
    elif known_packs:
        assert events.index("built") > max(data)
    elif not small_meta:  # built while the data was still uploading
        assert events.index("built") < max(data)
    if not known_packs:  # directories were encoded during the walk (their packs held)
        assert max(early) > 0
