"""Sealing one stored blob of a format-2 pack (docs/FORMAT2.md 5.5).

Every blob of an encrypted pack is ChaCha20-Poly1305 under the pack's key,
with the nonce derived from the blob's offset in the pack body (unique per
key: a pack key is random and used for one pack only) and associated data
binding the blob to its pack id, kind, encoding and id.  A blob copied to
another pack, another offset or presented under another id or kind fails to
open, as does any changed byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from s3archive.crypto.errors import BlobAuthError

PACK_KEY_SIZE = 32
PACK_ID_SIZE = 16
BLOB_ID_SIZE = 32
TAG_SIZE = 16
AAD_LABEL = b"s3archive/v2/blob"

# Blob kinds (one ASCII byte in the associated data and the pack index).
DATA = b"D"  # a chunk of a file's or a snapshot stream's content
TREE = b"T"  # a tree node: a directory's entries, or an inner node of a large one
CHUNK_LIST = b"L"  # the chunk references of a large file or snapshot stream
RUN_RECORD = b"R"  # a run's snapshot records and warnings
KINDS = (DATA, TREE, CHUNK_LIST, RUN_RECORD)

# Stored encodings.
ZSTD = b"z"
RAW = b"r"
ENCODINGS = (ZSTD, RAW)


@dataclass(frozen=True)
class BlobPlace:
    """Where a blob belongs: everything its associated data and nonce bind."""

    pack_id: bytes  # 16 random bytes from the pack's preamble
    offset: int  # of the sealed blob in the pack body
    kind: bytes
    encoding: bytes
    blob_id: bytes  # 32 bytes, the keyed id of the plain bytes

    def __post_init__(self) -> None:
        if len(self.pack_id) != PACK_ID_SIZE or len(self.blob_id) != BLOB_ID_SIZE:
            raise ValueError("pack id must be 16 bytes, blob id 32 bytes")
        if self.kind not in KINDS or self.encoding not in ENCODINGS:
            raise ValueError(f"unknown blob kind {self.kind!r} or encoding {self.encoding!r}")
        if not 0 <= self.offset < 1 << 96:
            raise ValueError("offset out of range")

    def nonce(self) -> bytes:
        return self.offset.to_bytes(12, "big")

    def associated_data(self) -> bytes:
        return AAD_LABEL + self.pack_id + self.kind + self.encoding + self.blob_id

    def describe(self) -> str:
        kind = {DATA: "data", TREE: "tree", CHUNK_LIST: "chunk-list",
                RUN_RECORD: "run-record"}[self.kind]
        return f"{kind} blob {self.blob_id.hex()} at offset {self.offset}"


def seal(pack_key: bytes, place: BlobPlace, stored: bytes | memoryview) -> bytes:
    """Ciphertext ‖ tag of the stored (encoded) bytes of one blob."""
    return ChaCha20Poly1305(pack_key).encrypt(place.nonce(), bytes(stored),
                                              place.associated_data())


def open_sealed(pack_key: bytes, place: BlobPlace, sealed: bytes | memoryview,
                pack_name: str = "") -> bytes:
    """The stored bytes, or :class:`BlobAuthError` naming the blob and the pack."""
    if len(sealed) < TAG_SIZE:
        raise BlobAuthError(f"{place.describe()}{_in(pack_name)}: shorter than its tag")
    try:
        return ChaCha20Poly1305(pack_key).decrypt(place.nonce(), bytes(sealed),
                                                  place.associated_data())
    except InvalidTag:
        raise BlobAuthError(
            f"{place.describe()}{_in(pack_name)} fails authentication: its bytes were "
            "changed, or it was moved there from another pack, offset, id or kind, "
            "or the pack key is wrong") from None


def _in(pack_name: str) -> str:
    return f" in pack {pack_name}" if pack_name else ""
