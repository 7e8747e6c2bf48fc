"""Per-pack index objects of an encrypting host: deduplication after a lost cache.

An encrypting host cannot read its runs back (that is the point), so a lost
cache cannot be rebuilt from its trees.  Instead, for every pack it uploads
it writes ``runs/<host>/packs/<h>.idx`` in its own prefix (which only it and
the restore role can read): the pack's key, version and size and, for each
blob, its keyed id, offset, stored and plain length and encoding — never a
name, never content — sealed with a key derived from the dedup secret.  The
object is locked with the pack and its lock extended with the pack's, so it
lives as long as a run may reuse the pack.  A host that lost its cache lists
its index objects and deduplicates against everything they name.

The object is binary (docs/FORMAT.md 10.3): a few fixed-size fields and one
49-byte row per blob, cheap to write for every pack and to read back for a
million blobs.  Objects written before, zstd-compressed JSON, are still read.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass

import zstandard

from s3archive.archive.local_cache import UNLOCKED_UNTIL, CachedPack, LocalCache
from s3archive.archive.packer import ChunkLocation
from s3archive.crypto import primitives
from s3archive.crypto.dedup import DedupSecret, derive
from s3archive.errors import S3ArchiveError
from s3archive.format import pack2
from s3archive.store.base import ObjectLock, StoreReader, StoreWriter

log = logging.getLogger(__name__)

LABEL = b"s3archive/v2/pack-index-object"
MAX_OBJECT = 64 << 20  # a 512 MiB pack of 256 KiB chunks: 2048 rows; far below
_NONCE = 12
MAGIC = b"s3aidx2\n"  # the binary payload; the earlier JSON one is a zstd frame
_HEAD = struct.Struct(">Q I")  # pack size, blob count (after the two names)
_ROW = struct.Struct(">32s Q I I c")  # id, offset, stored length, plain length, encoding
_NAME = struct.Struct(">H")  # the length of the pack's key, then of its version


class IndexObjectError(ValueError):
    """An index object that does not describe its pack (skipped, never trusted)."""


def index_key(host: str, pack: str) -> str:
    return f"runs/{host}/packs/{pack.rsplit('/', 1)[1]}.idx"


def cache_name(pack: str) -> str:
    """Where the local cache remembers the version of a pack's index object."""
    return f"pack-index:{pack}"


@dataclass
class PackIndexWriter:
    store: StoreWriter
    host: str
    secret: DedupSecret

    def _key(self) -> bytes:
        return derive(self.secret.secret, LABEL)

    def seal(self, pack: str, version_id: str, size: int, blobs: list[ChunkLocation]) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + primitives.ChaCha20Poly1305(self._key()).encrypt(
            nonce, encode(pack, version_id, size, blobs), LABEL)

    def write(self, pack: str, version_id: str, size: int, blobs: list[ChunkLocation],
              lock: ObjectLock | None) -> str:
        """PUT the pack's index object; returns its version."""
        body = self.seal(pack, version_id, size, blobs)
        return self.store.put(index_key(self.host, pack), body, lock).version_id


def encode(pack: str, version_id: str, size: int, blobs: list[ChunkLocation]) -> bytes:
    """The plain payload of an index object (FORMAT.md 10.3)."""
    names = b"".join(_NAME.pack(len(text)) + text
                     for text in (pack.encode(), version_id.encode()))
    row, codes = _ROW.pack, pack2.ENCODING_BYTE
    return b"".join([MAGIC, names, _HEAD.pack(size, len(blobs)),
                     *(row(bytes.fromhex(b.hash), b.offset, b.stored, b.size, codes[b.encoding])
                       for b in blobs)])


@dataclass(frozen=True)
class PackIndex:
    """What one index object says: its pack, the pack's version and size, its blobs."""

    pack: str
    version_id: str
    size: int
    blobs: list[ChunkLocation]


def decode(plain: bytes, object_key: str, host: str) -> PackIndex:
    """An index object's payload, checked: it names the pack its key names, and
    every blob lies inside that pack; :class:`IndexObjectError` otherwise."""
    if plain.startswith(MAGIC):
        found = _decode_binary(plain)
    else:  # written before the binary form: zstd-compressed JSON
        found = _decode_json(plain)
    if not pack2.is_pack2_key(found.pack) or index_key(host, found.pack) != object_key:
        raise IndexObjectError("names another pack")
    if not found.version_id or found.size <= 0:
        raise IndexObjectError("no version or size")
    for blob in found.blobs:
        if len(blob.hash) != 64 or blob.encoding not in pack2.ENCODING_BYTE \
                or blob.offset < 0 or blob.stored <= 0 or blob.size < 0 \
                or blob.offset + blob.stored > found.size:
            raise IndexObjectError("malformed blob row")
    return found


def _decode_binary(plain: bytes) -> PackIndex:
    at = len(MAGIC)
    names: list[str] = []
    for _ in range(2):
        if at + _NAME.size > len(plain):
            raise IndexObjectError("truncated")
        (length,) = _NAME.unpack_from(plain, at)
        at += _NAME.size + length
        if at > len(plain):
            raise IndexObjectError("truncated")
        names.append(plain[at - length:at].decode())
    if at + _HEAD.size > len(plain):
        raise IndexObjectError("truncated")
    size, count = _HEAD.unpack_from(plain, at)
    at += _HEAD.size
    if len(plain) - at != count * _ROW.size:
        raise IndexObjectError(f"{count} rows announced, {len(plain) - at} bytes follow")
    pack, encodings = names[0], pack2.ENCODING_NAME
    try:
        blobs = [ChunkLocation(blob_id.hex(), pack, offset, stored, plain_size, encodings[code])
                 for blob_id, offset, stored, plain_size, code
                 in _ROW.iter_unpack(memoryview(plain)[at:])]
    except KeyError:
        raise IndexObjectError("unknown encoding") from None
    return PackIndex(pack, names[1], size, blobs)


def _decode_json(packed: bytes) -> PackIndex:
    plain = zstandard.ZstdDecompressor().decompress(packed, max_output_size=MAX_OBJECT)
    obj = json.loads(plain)
    pack, version, size = obj["pack"], obj["version_id"], obj["size"]
    if not isinstance(pack, str) or not isinstance(version, str) or not isinstance(size, int):
        raise IndexObjectError("malformed header")
    blobs = [ChunkLocation(bytes.fromhex(h).hex(), pack, int(o), int(st), int(sz), str(enc))
             for h, o, st, sz, enc in obj["blobs"]]
    return PackIndex(pack, version, size, blobs)


def learn(store: StoreReader, host: str, secret: DedupSecret, cache: LocalCache,
          locked: bool) -> int:
    """Fill an empty cache from the host's index objects; returns the packs learned.

    Each object is untrusted input: one that does not open with the dedup
    secret, or that names something malformed, is skipped (its pack is then
    simply not reused)."""
    key = primitives.ChaCha20Poly1305(derive(secret.secret, LABEL))
    newest: dict[str, tuple[str, int]] = {}
    for item in store.list_versions(f"runs/{host}/packs/"):
        if item.is_delete_marker or not item.key.endswith(".idx") or item.size > MAX_OBJECT:
            continue
        known = newest.get(item.key)
        if known is None or item.last_modified.timestamp() > known[1]:
            newest[item.key] = (item.version_id, int(item.last_modified.timestamp()))
    learned = 0
    cache.begin()
    try:
        for object_key, (version_id, _) in sorted(newest.items()):
            try:
                body = store.get(object_key, version_id)
                info = store.head(object_key, version_id)
                index = decode(key.decrypt(body[:_NONCE], body[_NONCE:], LABEL),
                               object_key, host)
            except (S3ArchiveError, primitives.InvalidTag, ValueError, KeyError, TypeError,
                    zstandard.ZstdError) as err:
                log.warning("index object %s is unusable (%s): its pack is not reused",
                            object_key, err if isinstance(err, IndexObjectError)
                            else type(err).__name__)
                continue
            until = info.retain_until
            if until is None:
                if locked:  # the pack's lock is unknown: never count on it
                    continue
                until = UNLOCKED_UNTIL
            cache.add_pack(CachedPack(index.pack, index.version_id, index.size,
                                      info.lock_mode, until))
            cache.add_chunks(index.blobs)
            cache.set_meta(cache_name(index.pack), version_id)
            learned += 1
    finally:
        cache.commit()
    return learned
