"""A no-change run locates its file-cache hits in SQL, reading the local cache's
committed rows through the run index (RunIndex.put_listed_from_cache): none goes the
slow way (a ChunkLocation built per chunk, LocalCache.get_chunks)."""

from __future__ import annotations

from pathlib import Path

from s3archive.archive import local_cache
from support.memory_host import MemoryHost


def test_an_unchanged_run_locates_reused_chunks_in_sql(tmp_path: Path, monkeypatch) -> None:
    host = MemoryHost(tmp_path, "reuse-test")
    for n in range(300):
        directory = host.tree / f"d{n // 40:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{n:04d}").write_bytes(b"%d " % n * (n + 1))
    first = host.attempt()
    assert first.exit_code == 0 and first.files_unchanged == 0

    asked: list[int] = []
    slow = local_cache.LocalCache.get_chunks
    monkeypatch.setattr(local_cache.LocalCache, "get_chunks",
                        lambda self, digests: asked.append(len(list(digests))) or slow(self, []))
    second = host.attempt()
    assert second.exit_code == 0 and second.files_unchanged == 300
    assert second.chunks_reused >= 300 and second.chunks_new == 0
    assert asked == [], "every reused chunk was located in SQL"
