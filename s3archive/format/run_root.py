"""The format-2 run root object: header, pack table, root line, trailer (no I/O).

docs/FORMAT.md, part 2, section 7.  JSON Lines in one zstd frame, like a
format-1 manifest, but without entries: it grows with the packs a run
references, not with its files.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

from s3archive.errors import ManifestError
from s3archive.format.limits import MiB, ManifestLimits
from s3archive.format.manifest_codec import (ManifestWriter, _Line, decode_header, decode_pack,
                                             decode_trailer, encode_header, encode_pack,
                                             encode_trailer, iter_lines)
from s3archive.format.model import ChunkRef, Header, PackRef, Trailer
from s3archive.format.pack2 import is_pack2_key
from s3archive.format.tree_codec import _ref

TAG_SIZE = 16  # the authentication tag a sealed blob carries

FORMAT = 2

# Bounds a reader enforces on a root object (section 9).
ROOT_LIMITS = ManifestLimits(stored_bytes=16 * MiB, plain_bytes=64 * MiB, line_bytes=1 * MiB,
                             lines=262_144 + 3)


@dataclass(slots=True)
class RunRoot:
    header: Header
    packs: list[PackRef]
    record: ChunkRef  # the run record (kind R)
    entries: int  # filesystem entries of the run: a walk stops past it
    trailer: Trailer
    encryption: dict[str, Any] | None = None


def encode_root(root: RunRoot, out: io.BufferedIOBase | Any) -> None:
    writer = ManifestWriter(out, limits=ROOT_LIMITS)
    header = encode_header(root.header)
    header["encryption"] = root.header.encryption
    writer.write(header)
    for pack in root.packs:
        writer.write(encode_pack(pack))
    ref = root.record
    writer.write({"type": "root",
                  "record": [ref.hash, ref.size, ref.pack, ref.offset, ref.stored, ref.encoding],
                  "entries": root.entries})
    trailer = encode_trailer(root.trailer)
    trailer.pop("warnings", None)  # in the run record (encrypted when the run is)
    writer.write(trailer)
    writer.close()


def decode_root(blob: bytes, where: str, limits: ManifestLimits = ROOT_LIMITS) -> RunRoot:
    lines = iter_lines(blob, where, limits)
    first = next(lines, None)
    if first is None:
        raise ManifestError(f"{where}: empty root object")
    header = decode_header(first, formats=(FORMAT,))
    encryption = _encryption(first)
    header.encryption = encryption
    overhead = TAG_SIZE if encryption is not None else 0
    packs: list[PackRef] = []
    record: ChunkRef | None = None
    entries = 0
    trailer: Trailer | None = None
    for line in lines:
        kind = line.text("type")
        if trailer is not None:
            raise line.fail("lines after the trailer")
        if kind == "pack" and record is None:
            packs.append(decode_pack(line, len(packs), format2=True))
        elif kind == "root" and record is None:
            record = _ref(line.obj.get("record"), packs, f"{where}: line {line.number}",
                          meta=True, overhead=overhead)
            entries = line.nat("entries")
        elif kind == "trailer" and record is not None:
            trailer = decode_trailer(line)
        else:
            raise line.fail(f"unexpected {str(kind)[:20]!r} line here (header, packs, root, "
                            "trailer expected)")
    if record is None or trailer is None:
        raise ManifestError(f"{where}: truncated: no root or trailer line")
    if len({p.key for p in packs}) != len(packs):
        raise ManifestError(f"{where}: a pack is listed twice")
    if encryption is not None and any(not is_pack2_key(p.key) for p in packs):
        raise ManifestError(f"{where}: an encrypted run references a format-1 pack")
    return RunRoot(header, packs, record, entries, trailer, encryption)


SCHEME = "age-x25519/chacha20poly1305/hmac-sha256"
_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


def _encryption(line: _Line) -> dict[str, Any] | None:
    """The header's ``encryption``, checked: null, or exactly the known scheme."""
    value = line.obj.get("encryption")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise line.fail("field 'encryption' must be an object or null")
    if value.get("scheme") != SCHEME:
        raise line.fail(f"unknown encryption scheme {str(value.get('scheme'))[:60]!r}")
    recipients = value.get("recipients")
    if (not isinstance(recipients, list) or not 1 <= len(recipients) <= 16
            or not all(isinstance(r, str) and _RECIPIENT.fullmatch(r) for r in recipients)):
        raise line.fail("encryption.recipients must be 1 to 16 age1... recipients")
    dedup_id = value.get("dedup_id")
    if not isinstance(dedup_id, str) or not _HEX16.fullmatch(dedup_id):
        raise line.fail("encryption.dedup_id must be 16 hex digits")
    copy = value.get("dedup_key")
    if not isinstance(copy, dict):
        raise line.fail("encryption.dedup_key must be an object")
    key, version, size = copy.get("key"), copy.get("version_id"), copy.get("size")
    if (not isinstance(key, str)
            or not re.fullmatch(rf"keys/dedup/{dedup_id}/[0-9a-f]{{16}}\.age", key)
            or not isinstance(version, str) or not 0 < len(version) <= 1024
            or not isinstance(size, int) or isinstance(size, bool)
            or not 0 < size <= 65536):
        raise line.fail("encryption.dedup_key must name keys/dedup/<dedup_id>/<16 hex>.age, "
                        "a version and a size of at most 64 KiB")
    started = value.get("encryption_started", False)
    if not isinstance(started, bool):
        raise line.fail("encryption.encryption_started must be true or false")
    return {"scheme": SCHEME, "recipients": list(recipients), "dedup_id": dedup_id,
            "dedup_key": {"key": key, "version_id": version, "size": size},
            "encryption_started": started}


