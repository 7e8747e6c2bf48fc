"""Packs: stored chunks concatenated into objects of about ``pack_size`` bytes.

A pack is named by the SHA-256 of its body (``packs/<h[0:2]>/<hash>``); a
chunk inside it is read back with a ranged GET of the pinned version.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Callable

from s3archive.format.chunk_codec import EncodedChunk
from s3archive.format.model import pack_key


@dataclass(eq=False)
class Pack:
    """A pack being filled, sealed, then uploaded (``version_id`` set)."""

    number: int
    buffer: bytearray = field(default_factory=bytearray)
    chunks: list[tuple[str, int, int, int, str]] = field(default_factory=list)  # hash, offset, stored, size, enc
    key: str | None = None
    version_id: str | None = None
    size: int = 0


@dataclass(frozen=True, slots=True)
class ChunkLocation:
    pack: Pack
    offset: int
    stored: int
    size: int
    encoding: str


class Packer:
    """Thread-safe: chunks from many encoder threads go into the open pack."""

    def __init__(self, target_size: int, on_sealed: Callable[[Pack, bytearray], None]):
        self.target_size = target_size
        self.on_sealed = on_sealed
        self._lock = threading.Lock()
        self._count = 0
        self._open = self._new_pack()

    def _new_pack(self) -> Pack:
        self._count += 1
        return Pack(number=self._count)

    def add(self, chunk: EncodedChunk) -> ChunkLocation:
        full = None
        with self._lock:
            pack = self._open
            offset = len(pack.buffer)
            pack.buffer += chunk.data
            pack.chunks.append((chunk.hash, offset, len(chunk.data), chunk.size, chunk.encoding))
            location = ChunkLocation(pack, offset, len(chunk.data), chunk.size, chunk.encoding)
            if len(pack.buffer) >= self.target_size:
                full = self._take_locked()
        if full is not None:
            self._seal(full)
        return location

    def _take_locked(self) -> Pack | None:
        pack = self._open
        if not pack.buffer:
            return None
        self._open = self._new_pack()
        return pack

    def _seal(self, pack: Pack) -> None:
        """Name the full pack and hand its body over (no copy, outside the lock)."""
        body = pack.buffer
        pack.buffer = bytearray()
        pack.size = len(body)
        pack.key = pack_key(hashlib.sha256(body).hexdigest())
        self.on_sealed(pack, body)

    def flush(self) -> None:
        with self._lock:
            full = self._take_locked()
        if full is not None:
            self._seal(full)
