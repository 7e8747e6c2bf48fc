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
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from s3archive.archive.local_cache import UNLOCKED_UNTIL, CachedPack, LocalCache
from s3archive.archive.packer import ChunkLocation
from s3archive.crypto.dedup import DedupSecret, _derive
from s3archive.errors import S3ArchiveError
from s3archive.format import pack2
from s3archive.store.base import ObjectLock, StoreReader, StoreWriter

log = logging.getLogger(__name__)

LABEL = b"s3archive/v2/pack-index-object"
MAX_OBJECT = 64 << 20  # a 512 MiB pack of 256 KiB chunks: 2048 rows; far below
_NONCE = 12


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
        return _derive(self.secret.secret, LABEL)

    def seal(self, pack: str, version_id: str, size: int, blobs: list[ChunkLocation]) -> bytes:
        rows = [[b.hash, b.offset, b.stored, b.size, b.encoding] for b in blobs]
        plain = json.dumps({"pack": pack, "version_id": version_id, "size": size,
                            "blobs": rows}, separators=(",", ":")).encode()
        packed = zstandard.ZstdCompressor(level=3).compress(plain)
        nonce = os.urandom(_NONCE)
        return nonce + ChaCha20Poly1305(self._key()).encrypt(nonce, packed, LABEL)

    def write(self, pack: str, version_id: str, size: int, blobs: list[ChunkLocation],
              lock: ObjectLock | None) -> str:
        """PUT the pack's index object; returns its version."""
        body = self.seal(pack, version_id, size, blobs)
        return self.store.put(index_key(self.host, pack), body, lock).version_id


def learn(store: StoreReader, host: str, secret: DedupSecret, cache: LocalCache,
          locked: bool) -> int:
    """Fill an empty cache from the host's index objects; returns the packs learned.

    Each object is untrusted input: one that does not open with the dedup
    secret, or that names something malformed, is skipped (its pack is then
    simply not reused)."""
    key = _derive(secret.secret, LABEL)
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
                packed = ChaCha20Poly1305(key).decrypt(body[:_NONCE], body[_NONCE:], LABEL)
                plain = zstandard.ZstdDecompressor().decompress(packed, max_output_size=MAX_OBJECT)
                obj = json.loads(plain)
                pack, version, size = obj["pack"], obj["version_id"], obj["size"]
                if not pack2.is_pack2_key(pack) or index_key(host, pack) != object_key \
                        or not isinstance(version, str) or not isinstance(size, int):
                    raise ValueError("names another pack")
                rows = [ChunkLocation(h, pack, int(o), int(st), int(sz), str(enc))
                        for h, o, st, sz, enc in obj["blobs"]]
                if any(len(r.hash) != 64 or r.encoding not in ("zstd", "raw") for r in rows):
                    raise ValueError("malformed blob row")
            except (S3ArchiveError, InvalidTag, ValueError, KeyError, TypeError,
                    zstandard.ZstdError) as err:
                log.warning("index object %s is unusable (%s): its pack is not reused",
                            object_key, type(err).__name__)
                continue
            until = info.retain_until
            if until is None:
                if locked:  # the pack's lock is unknown: never count on it
                    continue
                until = UNLOCKED_UNTIL
            cache.add_pack(CachedPack(pack, version, size, info.lock_mode, until))
            cache.add_chunks(rows)
            cache.set_meta(cache_name(pack), version_id)
            learned += 1
    finally:
        cache.commit()
    return learned

