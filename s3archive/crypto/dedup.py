"""The dedup secret: keyed blob ids and the other per-bucket keys (FORMAT2 5.3).

Hosts of one dedup group share a 32-byte secret.  Blob ids are
HMAC-SHA256 under keys derived from it, so someone who reads the bucket
without the secret cannot confirm that a known file is stored; hosts with it
deduplicate against each other without being able to read anything.  The
secret's text form is Bech32 ``S3ARCHIVE-DEDUP-1…``; the bucket keeps a copy
encrypted to the restore recipients (an age file) so that the key holder can
check ids when restoring.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from s3archive.crypto import age, bech32, primitives
from s3archive.crypto.blob import DATA, KINDS, PACK_ID_SIZE
from s3archive.crypto.errors import AgeFormatError, KeyFormatError
from s3archive.crypto.keys import Identity, Recipient
from s3archive.errors import IntegrityError

SECRET_HRP = "s3archive-dedup-"
SECRET_PREFIX = "S3ARCHIVE-DEDUP-1"
INDEX_LABEL = b"s3archive/v2/pack-index"


def derive(secret: bytes, info: bytes, salt: bytes = b"") -> bytes:
    return age.hkdf_sha256(secret, salt, info)


class HmacSha256:
    """HMAC-SHA256 (RFC 2104) under one fixed key, whose two padded key blocks
    are hashed once: ``digest(m)`` equals ``hmac.digest(key, m, "sha256")``
    without setting the key up again for every message (a keyed blob id, a
    cache row's name: 2.5x faster on short messages, the same on long ones).
    Thread-safe: each call works on copies of the prepared states."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __repr__(self) -> str:
        return "HmacSha256(<key>)"

    def digest(self, message: bytes | memoryview) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_BLOCK = 64  # SHA-256's block size


@dataclass(frozen=True)
class DedupSecret:
    secret: bytes  # 32 bytes

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise KeyFormatError("a dedup secret is 32 bytes")

    def __repr__(self) -> str:
        return f"DedupSecret(id={self.dedup_id})"

    @classmethod
    def generate(cls) -> DedupSecret:
        return cls(os.urandom(32))

    def __str__(self) -> str:
        return bech32.encode(SECRET_HRP, self.secret).upper()

    @classmethod
    def parse(cls, text: str) -> DedupSecret:
        text = text.strip()
        try:
            hrp, data = bech32.decode(text)
        except bech32.Bech32Error as err:
            raise KeyFormatError(f"dedup secret: {err}") from None
        if hrp != SECRET_HRP or len(data) != 32:
            raise KeyFormatError("not a dedup secret (expected S3ARCHIVE-DEDUP-1…)")
        return cls(data)

    @property
    def dedup_id(self) -> str:
        """Public name of the dedup group: 16 hex digits, reveals nothing of the secret."""
        return derive(self.secret, b"s3archive/v2/dedup-id")[:8].hex()

    def blob_id(self, kind: bytes, plain: bytes | memoryview) -> bytes:
        """HMAC-SHA256 of the plain bytes under the data key (kind D) or the
        metadata key (every other kind)."""
        if kind not in KINDS:
            raise ValueError(f"unknown blob kind {kind!r}")
        info = b"s3archive/v2/id/data" if kind == DATA else b"s3archive/v2/id/meta"
        return hmac.new(derive(self.secret, info), plain, hashlib.sha256).digest()

    def index_key(self, pack_id: bytes) -> bytes:
        if len(pack_id) != PACK_ID_SIZE:
            raise ValueError("pack id must be 16 bytes")
        return derive(self.secret, INDEX_LABEL, salt=pack_id)

    def cache_key(self) -> bytes:
        """Key for the names of paths in the local cache (HMAC, never the path)."""
        return derive(self.secret, b"s3archive/v2/cache")

    def seal_index(self, pack_id: bytes, index: bytes) -> bytes:
        """The pack index block: ChaCha20-Poly1305, zero nonce (the key is
        unique to the pack), associated data label ‖ pack id."""
        return primitives.ChaCha20Poly1305(self.index_key(pack_id)).encrypt(
            bytes(12), index, INDEX_LABEL + pack_id)

    def open_index(self, pack_id: bytes, sealed: bytes, pack_name: str = "") -> bytes:
        try:
            return primitives.ChaCha20Poly1305(self.index_key(pack_id)).decrypt(
                bytes(12), sealed, INDEX_LABEL + pack_id)
        except primitives.InvalidTag:
            where = f" of pack {pack_name}" if pack_name else ""
            raise IntegrityError(f"the index{where} fails authentication: changed, or "
                                 "written with another dedup secret") from None


def plain_blob_id(kind: bytes, plain: bytes | memoryview) -> bytes:
    """Blob ids of an unencrypted format-2 run: SHA-256 of the plain bytes
    (the same as format 1's chunk hash)."""
    if kind not in KINDS:
        raise ValueError(f"unknown blob kind {kind!r}")
    return hashlib.sha256(plain).digest()


def recipients_fingerprint(recipients: list[Recipient]) -> str:
    """16 hex digits naming a set of recipients (order and repeats ignored)."""
    text = "\n".join(sorted({str(r) for r in recipients})) + "\n"
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def dedup_secret_key(secret: DedupSecret, recipients: list[Recipient]) -> str:
    """Bucket key (relative to the prefix) of the secret's copy for these recipients."""
    return f"keys/dedup/{secret.dedup_id}/{recipients_fingerprint(recipients)}.age"


def seal_dedup_secret(secret: DedupSecret, recipients: list[Recipient]) -> bytes:
    """The bucket's copy: an age file whose payload is the 32 raw bytes
    (``age -d -i KEYFILE`` gives them back)."""
    return age.encrypt(secret.secret, recipients)


def open_dedup_secret(data: bytes, identities: list[Identity], expected_id: str) -> DedupSecret:
    raw = age.decrypt(data, identities, max_plaintext=32)
    if len(raw) != 32:
        raise AgeFormatError("the dedup secret object does not hold a 32-byte secret")
    secret = DedupSecret(raw)
    if secret.dedup_id != expected_id:
        raise AgeFormatError(f"the dedup secret object holds the secret of group "
                             f"{secret.dedup_id}, not {expected_id}")
    return secret
