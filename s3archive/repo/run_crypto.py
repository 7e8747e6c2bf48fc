"""Open the blobs of an encrypted format-2 run with the restore key(s).

The run's header pins a copy of the dedup secret, encrypted to the restore
recipients: with it a reader checks every blob's keyed id.  Each pack's key
is in its key block (an age file to the recipients), read once per pack.
Every blob is opened with the associated data of its place (pack id,
offset, kind, encoding, id): a changed byte, a blob moved to another pack or
offset, a wrong key — each is refused and named, never used as data.
"""

from __future__ import annotations

import threading

from s3archive.crypto import blob as sealing
from s3archive.crypto.dedup import HmacSha256, derive, open_dedup_secret
from s3archive.crypto.errors import AgeFormatError, WrongKeyError
from s3archive.crypto.keys import Identity
from s3archive.errors import IntegrityError, ManifestError, NoSuchVersion, UsageError
from s3archive.format import pack2
from s3archive.format.model import ChunkRef, PackRef
from s3archive.store.base import StoreReader

KEY_BLOCK_GUESS = 1024  # bytes read first: the preamble and a key block to a few recipients
MAX_SECRET_COPY = 65536


class KeyNeeded(UsageError):
    """An encrypted run was asked for without a restore key."""


class RunCrypto:
    """The keys of one encrypted run, as a reader holds them."""

    def __init__(self, store: StoreReader, encryption: dict, identities: list[Identity],
                 where: str):
        if not identities:
            raise KeyNeeded(f"{where} is encrypted: give --key FILE or set S3ARCHIVE_KEY_FILE")
        self.store = store
        self.identities = identities
        copy = encryption["dedup_key"]
        try:
            data = store.get(copy["key"], copy["version_id"], (0, MAX_SECRET_COPY - 1))
        except NoSuchVersion:
            raise ManifestError(f"{where}: the copy of its dedup secret "
                                f"{copy['key']}@{copy['version_id']} is gone") from None
        if len(data) != copy["size"]:
            raise ManifestError(f"{where}: the copy of its dedup secret is {len(data)} bytes, "
                                f"the run says {copy['size']}")
        try:
            secret = open_dedup_secret(data, identities, encryption["dedup_id"])
        except WrongKeyError:
            raise WrongKeyError(f"{where}: none of the keys given opens its dedup secret "
                                f"{copy['key']} (the run is encrypted to "
                                f"{', '.join(encryption['recipients'])})") from None
        except AgeFormatError as err:
            raise ManifestError(f"{where}: dedup secret {copy['key']}: {err}") from None
        self.dedup_secret = secret  # verify opens the group index with it (FORMAT2 16.6)
        self._data_mac = HmacSha256(derive(secret.secret, b"s3archive/v2/id/data"))
        self._meta_mac = HmacSha256(derive(secret.secret, b"s3archive/v2/id/meta"))
        self._packs: dict[str, tuple[bytes, bytes]] = {}
        self._lock = threading.Lock()

    def data_id(self, plain: bytes | memoryview) -> str:
        return self._data_mac.digest(plain).hex()

    def meta_id(self, plain: bytes | memoryview) -> str:
        return self._meta_mac.digest(plain).hex()

    def blob_id(self, kind: bytes, plain: bytes | memoryview) -> str:
        return self.data_id(plain) if kind == pack2.KIND_DATA else self.meta_id(plain)

    def pack_key(self, pack: PackRef) -> tuple[bytes, bytes]:
        """(pack id, pack key) from the pack's preamble and key block."""
        with self._lock:
            known = self._packs.get(pack.key)
        if known is not None:
            return known
        name = f"{pack.key}@{pack.version_id}"
        if not pack2.is_pack2_key(pack.key):
            raise ManifestError(f"{name}: an encrypted run references a format-1 pack")
        head = self.store.get(pack.key, pack.version_id, (0, KEY_BLOCK_GUESS - 1))
        try:
            preamble = pack2.parse_preamble(head)
        except pack2.PackLayoutError as err:
            raise IntegrityError(f"{name}: {err}") from None
        if preamble.flags != pack2.FLAG_ENCRYPTED:
            raise IntegrityError(f"{name}: a plain pack in an encrypted run")
        end = preamble.body_start
        if end > pack.size:
            raise IntegrityError(f"{name}: the key block runs past the end of the pack")
        if end > len(head):
            head += self.store.get(pack.key, pack.version_id, (len(head), end - 1))
        block = bytes(head[pack2.PREAMBLE_FIXED:end])
        try:
            key = sealing.open_key_block(block, self.identities, name)
        except AgeFormatError as err:
            raise IntegrityError(str(err)) from None
        found = (preamble.pack_id, key)
        with self._lock:
            self._packs[pack.key] = found
        return found

    def open(self, pack: PackRef, ref: ChunkRef, sealed: bytes | memoryview,
             kind: bytes) -> bytes:
        """The stored (encoded) bytes of one blob, authenticated in its place."""
        pack_id, key = self.pack_key(pack)
        place = sealing.BlobPlace(pack_id, ref.offset, kind, pack2.ENCODING_BYTE[ref.encoding],
                                  bytes.fromhex(ref.hash))
        return sealing.open_sealed(key, place, sealed, pack.key)
