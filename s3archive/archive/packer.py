"""Packs: stored chunks concatenated into objects of about ``pack_size`` bytes.

A pack is named by the SHA-256 of its body (``packs/<h[0:2]>/<hash>``); a
chunk inside it is read back with a ranged GET of the pinned version.

Two small value types cross the archive path from here: :class:`ChunkId`
(what a file or snapshot is made of, in order) and :class:`ChunkLocation`
(where one chunk's stored bytes are: the writer's new packs and the local
cache's index speak it alike).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, NamedTuple, Protocol, Sequence

from s3archive.archive.fresh_memory import release_tail, unzeroed
from s3archive.format import pack2
from s3archive.format.chunk_codec import EncodedChunk
from s3archive.format.model import pack_key

_new_tuple = tuple.__new__

if TYPE_CHECKING:  # (a content worker imports the file rows' codec, not the crypto)
    from s3archive.crypto.blob import BlobSealer


# room past a pack's target in its buffer: the largest blob (a zstd frame of the largest
# chunk, 4 MiB, with its header); a larger one grows the buffer
BLOB_ROOM = (4 << 20) + (64 << 10)
# A packer's first pack is sealed at RAMP_START bytes (or its target if smaller), each
# next one at twice the last, up to the target: a run that stores little (20,000
# small files: 18 MB) never holds a full-size body, filled for most of the run, while
# the walk's own memory is at its largest.  A run that stores much makes two more
# packs (16 MiB target: 4, 8, then 16 MiB); the bodies alive are bounded as before.
RAMP_START = 4 << 20


class ChunkId(NamedTuple):
    """One chunk of a file or stream: the SHA-256 of its plain bytes, and their length."""

    hash: str
    size: int


class ChunkLocation(NamedTuple):
    """Where a chunk's stored bytes are: ``stored`` bytes at ``offset`` of pack ``pack``.
    (A tuple: made for every chunk a run stores and every one its trees locate, three
    times cheaper than a frozen dataclass: 0.24 vs 0.71 us.)"""

    hash: str
    pack: str  # the pack's key
    offset: int
    stored: int
    size: int  # plain size
    encoding: str


@dataclass(eq=False)
class Pack:
    """A pack being filled, then sealed: ``key`` and ``size`` are set when sealed.

    ``chunks`` lists what went in, at ``pack = ""`` until the key is known
    (:meth:`located` gives them their pack).  The body is ``buffer[:fill]``:
    the buffer is made as long as a full pack at once
    (:func:`~archive.fresh_memory.unzeroed`: nothing written twice, huge
    pages) and filled in place, blobs copied or sealed into it.
    """

    number: int
    buffer: bytearray = field(default_factory=bytearray)
    fill: int = 0
    chunks: list[ChunkLocation] = field(default_factory=list)
    key: str | None = None
    size: int = 0
    index: list[pack2.IndexItem] = field(default_factory=list)  # format 2
    blobs: int = 0  # blobs added (a format-2 pack starts with its preamble)
    pack_id: bytes = b""
    sealer: BlobSealer | None = field(default=None, repr=False)  # encrypted: dropped when sealed

    def write(self, data: bytes | memoryview) -> None:
        """Put ``data`` at the body's end (into the buffer's room while it lasts)."""
        end = self.fill + len(data)
        if end <= len(self.buffer):
            # (a memoryview: a slice of the bytearray itself would copy ``data`` first)
            with memoryview(self.buffer) as view:
                view[self.fill:end] = data
        else:
            del self.buffer[self.fill:]
            self.buffer += data
        self.fill = end

    def take_body(self) -> bytearray:
        """The body, handed over (the pack keeps none of it)."""
        body, self.buffer = self.buffer, bytearray()
        del body[self.fill:]
        return body

    def located(self) -> list[ChunkLocation]:
        assert self.key is not None, "a pack has a key once sealed"
        if self.chunks and self.chunks[0].pack == self.key:  # (format 2: placed when added)
            return self.chunks
        return [ChunkLocation(c.hash, self.key, c.offset, c.stored, c.size, c.encoding)
                for c in self.chunks]


class Sealer(Protocol):
    """Encryption of a format-2 pack (archive/encryption.py)."""

    def new_pack(self) -> tuple[bytes, bytes, bytes]:
        """A fresh (pack id, key block, pack key)."""
        ...

    def blob_sealer(self, pack_key: bytes, pack_id: bytes) -> BlobSealer:
        """What seals the blobs of the pack as they are appended (holds its key)."""
        ...

    def seal_index(self, pack_id: bytes, block: bytes) -> bytes: ...


class Packer:
    """Thread-safe: chunks from many encoder threads go into the open pack.

    With ``prefix`` (``data`` or ``meta``) packs have format 2's layout: a
    preamble, the blobs, the index and footer, and a key known from the
    start (named after a random pack id), so :meth:`add` returns the final
    location at once.  Without it they are format 1's bare concatenation,
    named after the body's hash when sealed.
    """

    def __init__(self, target_size: int, on_sealed: Callable[[Pack, bytearray], None],
                 prefix: str | None = None, sealer: Sealer | None = None,
                 bodies: threading.Semaphore | None = None):
        self.target_size = target_size
        self.on_sealed = on_sealed
        self.prefix = prefix
        self.sealer = sealer
        # bounds the pack bodies alive: one is taken before a pack is opened (under
        # the lock: adders wait), and given back by whoever ``on_sealed`` hands the
        # body to once it is done with it, or here when an open pack is discarded
        self.bodies = bodies
        self.created: set[str] = set()  # format 2: the keys of the packs opened
        self._lock = threading.Lock()
        self._count = 0
        # opened at its first blob: a sealed body is handed over before the next
        # pack's buffer is made, and a run that adds nothing makes none
        self._open: Pack | None = None

    def _new_pack(self) -> Pack:
        if self.bodies is not None:
            self.bodies.acquire()
        self._count += 1
        pack = Pack(number=self._count)
        if self.sealer is not None:
            # a fresh key and pack id for every body built, so offsets never repeat
            # as nonces under one key
            pack.pack_id, key_block, key = self.sealer.new_pack()
            pack.sealer = self.sealer.blob_sealer(key, pack.pack_id)
            pack.key = pack2.pack_key(self.prefix or pack2.DATA_PREFIX, pack.pack_id)
        elif self.prefix is not None:
            pack.pack_id = os.urandom(pack2.PACK_ID_SIZE)
            pack.key = pack2.pack_key(self.prefix, pack.pack_id)
        pack.buffer = unzeroed(self._buffer_size(pack.number))
        if self.sealer is not None:
            pack.write(pack2.preamble(pack.pack_id, key_block))
        elif self.prefix is not None:
            pack.write(pack2.preamble(pack.pack_id))
        if pack.key is not None:
            self.created.add(pack.key)
        return pack

    def _target(self, number: int) -> int:
        """The size at which the ``number``-th pack (from 1) is sealed."""
        return min(self.target_size, RAMP_START << min(number - 1, 16))

    def _buffer_size(self, number: int) -> int:
        """A pack's buffer: room for its target and the largest blob that may cross it."""
        target = self._target(number)
        return target + min(target, BLOB_ROOM)

    def add(self, chunk: EncodedChunk, kind: bytes = pack2.KIND_DATA) -> ChunkLocation:
        full = None
        with self._lock:
            pack = self._open
            if pack is None:
                pack = self._open = self._new_pack()
            location = self._add_locked(pack, chunk, kind)
            if pack.fill >= self._target(pack.number):
                full = self._take_locked()
        if full is not None:
            self._seal(full)
        return location

    def _add_locked(self, pack: Pack, chunk: EncodedChunk, kind: bytes) -> ChunkLocation:
        offset = pack.fill
        blob_id = bytes.fromhex(chunk.hash) if self.prefix is not None else b""
        if pack.sealer is not None:
            stored = pack.sealer.seal_at(pack.buffer, offset, kind,
                                         pack2.ENCODING_BYTE[chunk.encoding], blob_id,
                                         chunk.data)
            pack.fill = offset + stored
        else:
            pack.write(chunk.data)
            stored = len(chunk.data)
        location = ChunkLocation(chunk.hash, pack.key or "", offset, stored,
                                 chunk.size, chunk.encoding)
        pack.chunks.append(location)
        pack.blobs += 1
        if self.prefix is not None:
            pack.index.append(pack2.IndexItem(kind, chunk.encoding, stored, blob_id))
        return location

    def add_many(self, chunks: Sequence[EncodedChunk], kind: bytes = pack2.KIND_DATA
                 ) -> list[ChunkLocation]:
        """:meth:`add` of each chunk in order, the lock taken once a pack rather than a
        chunk: their locations.  (A content worker's batch, 64 small files' chunks: 1.7-2.2
        rather than 3.1-3.4 µs a chunk, on the main thread.)"""
        if self.sealer is not None:  # (each blob sealed in place: add's own way)
            return [self.add(chunk, kind) for chunk in chunks]
        locations: list[ChunkLocation] = []
        format2 = self.prefix is not None
        at, count = 0, len(chunks)
        while at < count:
            full = None
            with self._lock:
                pack = self._open
                if pack is None:
                    pack = self._open = self._new_pack()
                key, target, placed = pack.key or "", self._target(pack.number), pack.chunks
                index, first, fill, room = pack.index, at, pack.fill, len(pack.buffer)
                with memoryview(pack.buffer) as view:  # (Pack.write's copy, in its room)
                    while at < count and fill < target:
                        chunk = chunks[at]
                        data = chunk.data
                        stored = len(data)
                        if fill + stored > room:
                            break  # (past the buffer: Pack.write's own way, below)
                        view[fill:fill + stored] = data
                        at += 1
                        # (tuple.__new__: a NamedTuple's own __new__ is a Python call)
                        location = _new_tuple(ChunkLocation, (chunk.hash, key, fill, stored,
                                                              chunk.size, chunk.encoding))
                        placed.append(location)
                        locations.append(location)
                        if format2:
                            index.append(_new_tuple(pack2.IndexItem, (
                                kind, chunk.encoding, stored, bytes.fromhex(chunk.hash))))
                        fill += stored
                pack.fill = fill
                pack.blobs += at - first
                if at < count and fill < target:  # the next chunk is past the buffer's room
                    locations.append(self._add_locked(pack, chunks[at], kind))
                    at += 1
                if pack.fill >= target:
                    full = self._take_locked()
            if full is not None:
                self._seal(full)
        return locations

    def _take_locked(self) -> Pack | None:
        pack = self._open
        if pack is None or not pack.blobs:
            return None
        self._open = None
        return pack

    def _seal(self, pack: Pack) -> None:
        """Name the full pack and hand its body over (no copy, outside the lock)."""
        body = pack.take_body()
        if self.sealer is not None:
            block = self.sealer.seal_index(pack.pack_id, pack2.index_block(pack.index))
            body += pack2.index_tail(pack.index, block)
            pack.index = []
            pack.sealer = None  # the host cannot open this pack again
        elif self.prefix is not None:
            body += pack2.index_tail(pack.index)
            pack.index = []
        else:
            pack.key = pack_key(hashlib.sha256(body).hexdigest())
        pack.size = len(body)
        # the room left in its buffer is not kept while the body waits for an uploader
        release_tail(body, self._buffer_size(pack.number))
        self.on_sealed(pack, body)

    def discard_open(self) -> Pack | None:
        """Drop the open pack, unsealed and never uploaded (a run building its
        metadata again); returns it (emptied) if it held anything."""
        with self._lock:
            pack, self._open = self._open, None
        if pack is None:
            return None
        pack.take_body()
        pack.sealer = None
        if self.bodies is not None:
            self.bodies.release()
        return pack if pack.blobs else None

    def flush(self) -> None:
        with self._lock:
            full = self._take_locked()
        if full is not None:
            self._seal(full)
