"""Chunks read again from the files being backed up, never from the bucket.

When a reused pack is not worth extending (the run needs little of it,
``repack_below``), the chunks the run still needs are written into new
packs.  Their bytes come from where this run found them: the files it just
walked.  The spool lists every file with its chunk ids in order, so a
chunk's position in its file's data stream (the file's data extents, holes
left out, as the chunker read them) is the sum of the sizes before it; it is
read with ``pread`` and accepted only if its SHA-256 is the chunk's.  The
backup role needs no ``GetObject`` on ``packs/`` (and has none).

A chunk only a snapshot stream holds cannot be read again (the stream is
gone), nor one whose file changed since the walk: the lease then extends
that pack instead.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass
from typing import IO, Callable

from s3archive.format.chunk_codec import chunk_hash


@dataclass(frozen=True)
class ChunkSource:
    path: bytes
    position: int  # in the file's data stream (its data extents, concatenated)
    size: int
    extents: tuple[tuple[int, int], ...] | None  # None: the whole file is data


class SpoolSources:
    """Chunk sources found in a run's entry spool (archive/file_stage.py's format)."""

    def __init__(self, spool: IO[bytes],
                 id_of: Callable[[bytes | memoryview], str] = chunk_hash):
        self.spool = spool
        self.id_of = id_of  # the run's chunk ids (keyed in an encrypted run)
        self.sources: dict[str, ChunkSource] = {}

    def locate(self, wanted: set[str]) -> set[str]:
        """Find a file holding each wanted chunk; returns the chunks found."""
        wanted = wanted - self.sources.keys()
        if not wanted:
            return set()
        found: set[str] = set()
        self.spool.seek(0)
        for raw in self.spool:
            line, tab, listed = raw.rstrip(b"\n").partition(b"\t")
            if not listed:
                continue
            hits = []
            position = 0
            for item in listed.split(b","):
                digest, size = item[:64].decode("ascii"), int(item[65:])
                if digest in wanted and digest not in found:
                    hits.append((digest, position, size))
                    found.add(digest)
                position += size
            if hits:
                path, extents = _file_of(line)
                for digest, position, size in hits:
                    self.sources[digest] = ChunkSource(path, position, size, extents)
        self.spool.seek(0, os.SEEK_END)
        return found

    def read(self, digests: set[str], sink: Callable[[str, bytes], None]) -> set[str]:
        """Read located chunks again, file by file; ``sink`` gets each verified one.

        Returns the chunks delivered: a file gone, unreadable or changed
        where the chunk was delivers nothing.
        """
        by_path: dict[bytes, list[tuple[str, ChunkSource]]] = {}
        for digest in digests:
            source = self.sources.get(digest)
            if source is not None:
                by_path.setdefault(source.path, []).append((digest, source))
        delivered: set[str] = set()
        for path, items in sorted(by_path.items()):
            try:
                fd = _open(path)
            except OSError:
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue  # replaced since the walk
                for digest, source in sorted(items, key=lambda item: item[1].position):
                    try:
                        plain = _read_stream(fd, source)
                    except OSError:
                        break
                    if len(plain) == source.size and self.id_of(plain) == digest:
                        sink(digest, plain)
                        delivered.add(digest)
            finally:
                os.close(fd)
        return delivered


def _file_of(line: bytes) -> tuple[bytes, tuple[tuple[int, int], ...] | None]:
    entry = json.loads(line)
    path = (entry["path"].encode("utf-8") if "path" in entry
            else base64.b64decode(entry["path_b64"]))
    extents = entry.get("extents")
    return path, (tuple((int(o), int(n)) for o, n in extents) if extents is not None else None)


def _open(path: bytes) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError:
        return os.open(path, flags)


def _read_stream(fd: int, source: ChunkSource) -> bytes:
    """``source.size`` bytes at ``source.position`` of the file's data stream."""
    extents = source.extents if source.extents is not None else ((0, source.position
                                                                  + source.size),)
    pieces = []
    skip, need = source.position, source.size
    for offset, length in extents:
        if need == 0:
            break
        if skip >= length:
            skip -= length
            continue
        take = min(length - skip, need)
        piece = os.pread(fd, take, offset + skip)
        pieces.append(piece)
        if len(piece) < take:
            break  # the file shrank
        need -= take
        skip = 0
    return b"".join(pieces)
