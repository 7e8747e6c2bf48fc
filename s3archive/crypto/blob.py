"""Sealing one stored blob of a format-2 pack (docs/FORMAT2.md 5.5).

Every blob of an encrypted pack is ChaCha20-Poly1305 under the pack's key,
with the nonce derived from the blob's offset in the pack body (unique per
key: a pack key is random and used for one pack only) and associated data
binding the blob to its pack id, kind, encoding and id.  A blob copied to
another pack, another offset or presented under another id or kind fails to
open, as does any changed byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from s3archive.crypto import age, primitives
from s3archive.crypto.errors import AgeFormatError, BlobAuthError, WrongKeyError
from s3archive.crypto.keys import Identity, Recipient

PACK_KEY_SIZE = 32
MAX_KEY_BLOCK = 65536
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


def blob_nonce(offset: int) -> bytes:
    """The nonce of the blob at ``offset`` of the pack body: 12 bytes, big-endian."""
    return offset.to_bytes(12, "big")


def blob_associated_data(pack_id: bytes, kind: bytes, encoding: bytes, blob_id: bytes) -> bytes:
    return AAD_LABEL + pack_id + kind + encoding + blob_id


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
        return blob_nonce(self.offset)

    def associated_data(self) -> bytes:
        return blob_associated_data(self.pack_id, self.kind, self.encoding, self.blob_id)

    def describe(self) -> str:
        kind = {DATA: "data", TREE: "tree", CHUNK_LIST: "chunk-list",
                RUN_RECORD: "run-record"}[self.kind]
        return f"{kind} blob {self.blob_id.hex()} at offset {self.offset}"


@dataclass(frozen=True)
class PackKey:
    """The key of one pack being built: its id, its key and the key block
    (an age file of the key to the recipients).  Drop it once the pack is
    sealed: nothing else can open the pack's blobs but the key block."""

    pack_id: bytes
    key: bytes = field(repr=False)
    key_block: bytes = field(repr=False)


def new_pack_key(recipients: list[Recipient]) -> PackKey:
    """A fresh random key and pack id, the key wrapped to every recipient."""
    if not 1 <= len(recipients) <= 16:
        raise ValueError("a pack is encrypted to 1 to 16 recipients")
    key = os.urandom(PACK_KEY_SIZE)
    return PackKey(os.urandom(PACK_ID_SIZE), key, age.encrypt(key, recipients))


def open_key_block(key_block: bytes, identities: list[Identity], pack_name: str) -> bytes:
    """The pack key from a key block read from the bucket, or an error naming the pack."""
    if not 1 <= len(key_block) <= MAX_KEY_BLOCK:
        raise AgeFormatError(f"pack {pack_name}: key block of {len(key_block)} bytes "
                             f"(1 to {MAX_KEY_BLOCK})")
    try:
        key = age.decrypt(key_block, identities, max_plaintext=PACK_KEY_SIZE)
    except WrongKeyError as err:
        raise WrongKeyError(f"pack {pack_name}: {err}") from None
    except AgeFormatError as err:
        raise AgeFormatError(f"pack {pack_name}: key block: {err}") from None
    if len(key) != PACK_KEY_SIZE:
        raise AgeFormatError(f"pack {pack_name}: key block holds {len(key)} bytes, "
                             f"not a {PACK_KEY_SIZE}-byte key")
    return key


def seal(pack_key: bytes, place: BlobPlace, stored: bytes | memoryview) -> bytes:
    """Ciphertext ‖ tag of the stored (encoded) bytes of one blob."""
    return primitives.ChaCha20Poly1305(pack_key).encrypt(place.nonce(), stored,
                                                        place.associated_data())


_TAG_ROOM = bytes(TAG_SIZE)


class BlobSealer:
    """The writer's :func:`seal`: seals the blobs of one pack as they are appended to
    its body, with the pack's cipher set up once (not once a blob), its own values
    (no :class:`BlobPlace` built and checked for every blob), and the ciphertext
    written into the body in place (no sealed copy of a large blob allocated, then
    copied).  Dropped with the pack key once the pack is sealed.

    cryptography's AEAD holds the GIL while it works (48.0: no ``allow_threads`` in
    its Rust ``aead.rs``), so sealing in another thread of this process would not run
    beside the main thread's Python: cheaper is what helps."""

    __slots__ = ("_cipher", "_into", "_pack_id")

    def __init__(self, pack_key: bytes, pack_id: bytes):
        self._cipher = primitives.ChaCha20Poly1305(pack_key)
        # the ciphertext written straight into the pack body (cryptography >= 45); before,
        # a copy
        self._into = hasattr(self._cipher, "encrypt_into")
        self._pack_id = pack_id

    def __repr__(self) -> str:
        return "BlobSealer(<key>)"

    def append(self, body: bytearray, kind: bytes, encoding: bytes, blob_id: bytes,
               stored: bytes | memoryview) -> int:
        """Append the sealed blob at the body's end (its offset); returns its length."""
        return self.seal_at(body, len(body), kind, encoding, blob_id, stored)

    def seal_at(self, body: bytearray, offset: int, kind: bytes, encoding: bytes,
                blob_id: bytes, stored: bytes | memoryview) -> int:
        """Write the sealed blob at ``offset`` of ``body`` (the body's end: what
        follows is room, written over; a body too short for it grows); returns its
        length."""
        nonce = blob_nonce(offset)
        aad = blob_associated_data(self._pack_id, kind, encoding, blob_id)
        if not self._into:  # (cryptography < 45: a sealed copy, then copied in)
            sealed = self._cipher.encrypt(nonce, stored, aad)
            del body[offset:]
            body += sealed
            return len(sealed)
        size = len(stored) + TAG_SIZE
        if offset + size > len(body):  # room for the ciphertext (then written over)
            del body[offset:]
            body += stored
            body += _TAG_ROOM
        with memoryview(body) as view, view[offset:offset + size] as room:
            self._cipher.encrypt_into(nonce, stored, aad, room)
        return size


def open_sealed(pack_key: bytes, place: BlobPlace, sealed: bytes | memoryview,
                pack_name: str = "") -> bytes:
    """The stored bytes, or :class:`BlobAuthError` naming the blob and the pack."""
    if len(sealed) < TAG_SIZE:
        raise BlobAuthError(f"{place.describe()}{_in(pack_name)}: shorter than its tag")
    try:
        return primitives.ChaCha20Poly1305(pack_key).decrypt(place.nonce(), sealed,
                                                  place.associated_data())
    except primitives.InvalidTag:
        raise BlobAuthError(
            f"{place.describe()}{_in(pack_name)} fails authentication: its bytes were "
            "changed, or it was moved there from another pack, offset, id or kind, "
            "or the pack key is wrong") from None


def _in(pack_name: str) -> str:
    return f" in pack {pack_name}" if pack_name else ""
