"""The writer's side of encrypted runs (docs/FORMAT.md, format 2, encryption).

A host holds recipients (public keys) and the dedup secret, never a restore
key.  Every pack gets a fresh random key, wrapped to the recipients in the
pack's key block and dropped once the pack is sealed; blob ids are HMACs
under keys derived from the dedup secret, so hosts of one group deduplicate
without anyone who reads the bucket being able to confirm a known file.
The local cache names paths and directories by HMAC and seals each file's
line with a stream derived from the path and its inode, size and times: only
who has the file as it is now can open its row.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from s3archive.crypto import blob as sealing
from s3archive.crypto.dedup import (DedupSecret, HmacSha256, derive, dedup_secret_key,
                                    seal_dedup_secret)
from s3archive.crypto.keys import Recipient
from s3archive.format.run_root import SCHEME


@dataclass
class RunEncryption:
    """Seals the packs of one encrypted run (a :class:`~archive.packer.Sealer`)."""

    recipients: list[Recipient]
    secret: DedupSecret = field(repr=False)

    def __post_init__(self) -> None:
        # the key of data ids, also handed to content workers (archive/content_workers.py)
        self.data_id_key = derive(self.secret.secret, b"s3archive/v2/id/data")
        self._data_mac = HmacSha256(self.data_id_key)
        self._meta_mac = HmacSha256(derive(self.secret.secret, b"s3archive/v2/id/meta"))

    # -- ids
    def data_id(self, plain: bytes | memoryview) -> str:
        return self._data_mac.digest(plain).hex()

    def meta_id(self, plain: bytes | memoryview) -> str:
        return self._meta_mac.digest(plain).hex()

    # -- packs
    def new_pack(self) -> tuple[bytes, bytes, bytes]:
        key = sealing.new_pack_key(self.recipients)
        return key.pack_id, key.key_block, key.key

    def blob_sealer(self, pack_key: bytes, pack_id: bytes) -> sealing.BlobSealer:
        return sealing.BlobSealer(pack_key, pack_id)

    def seal_index(self, pack_id: bytes, block: bytes) -> bytes:
        return self.secret.seal_index(pack_id, block)

    # -- the secret's copy for the key holder
    @property
    def secret_key(self) -> str:
        return dedup_secret_key(self.secret, self.recipients)

    def sealed_secret(self) -> bytes:
        return seal_dedup_secret(self.secret, self.recipients)

    def header(self, secret_version: str, secret_size: int, started: bool) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "scheme": SCHEME, "recipients": [str(r) for r in self.recipients],
            "dedup_id": self.secret.dedup_id,
            "dedup_key": {"key": self.secret_key, "version_id": secret_version,
                          "size": secret_size}}
        if started:
            obj["encryption_started"] = True
        return obj

    def file_cipher(self) -> "FileCipher":
        return FileCipher(self.secret.cache_key(), self.secret.dedup_id)


_NONCE = 12
_CHECK = 16  # of the stream, in the row: another path, stat or secret is told, not misread
_STAT = struct.Struct(">QQqq")  # ino, size, mtime_ns, ctime_ns in a row's stream input


class FileCipher:
    """Names and seals the local cache's file rows of an encrypting host.

    A row's line is XORed with a stream only its path and stat derive
    (SHAKE256 keyed by a key of the dedup secret's; docs/FORMAT.md 10.2): one
    hash a row, where an HMAC and an AEAD key set up for every row cost twice
    as much in an unchanged run."""

    def __init__(self, key: bytes, label: str):
        self._mac = HmacSha256(key)
        # SHAKE256(K_stream ‖ …): the key absorbed once, copied for every row
        self._stream = hashlib.shake_256(self._mac.digest(b"line-stream"))
        self.label = label  # which secret keyed the rows (rows of another are dropped)

    def name(self, path: bytes) -> bytes:
        return self._mac.digest(b"name\0" + path)[:16]

    def directory(self, path: bytes) -> bytes:
        """The name of a directory whose files have rows (their rows are read together)."""
        return self._mac.digest(b"files-dir\0" + path)[:16]

    def _stream_of(self, nonce: bytes, path: bytes, stat: tuple[int, int, int, int],
                   length: int) -> bytes:
        stream = self._stream.copy()
        stream.update(nonce + _STAT.pack(*stat) + path)
        return stream.digest(_CHECK + length)

    def seal(self, path: bytes, stat: tuple[int, int, int, int], line: bytes) -> bytes:
        """nonce ‖ check ‖ line XOR stream (``stat``: ino, size, mtime_ns, ctime_ns)."""
        nonce = os.urandom(_NONCE)
        stream = self._stream_of(nonce, path, stat, len(line))
        return nonce + stream[:_CHECK] + _xor(line, stream[_CHECK:])

    def open(self, path: bytes, stat: tuple[int, int, int, int], sealed: bytes) -> bytes | None:
        """The line of a row sealed for this path and stat, else None (a changed or
        deleted file's row opens for nobody)."""
        length = len(sealed) - _NONCE - _CHECK
        if length < 0:
            return None
        stream = self._stream_of(sealed[:_NONCE], path, stat, length)
        if not hmac.compare_digest(stream[:_CHECK], sealed[_NONCE:_NONCE + _CHECK]):
            return None
        return _xor(sealed[_NONCE + _CHECK:], stream[_CHECK:])


def _xor(data: bytes, stream: bytes) -> bytes:
    """``data`` XOR ``stream`` (as long): one big integer, no loop in Python."""
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        len(data), "little")
