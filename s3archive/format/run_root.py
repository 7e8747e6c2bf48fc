"""The format-2 run root object: header, pack table, root line, trailer (no I/O).

docs/FORMAT.md, part 2, section 7.  JSON Lines in one zstd frame, like a
format-1 manifest, but without entries: it grows with the packs a run
references, not with its files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from s3archive.errors import ManifestError
from s3archive.format.limits import MiB, ManifestLimits
from s3archive.format.manifest_codec import (ManifestWriter, decode_header, decode_pack,
                                             decode_trailer, encode_header, encode_pack,
                                             encode_trailer, iter_lines)
from s3archive.format.model import ChunkRef, Header, PackRef, Trailer
from s3archive.format.tree_codec import _ref

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
    header["encryption"] = root.encryption
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
    encryption = first.obj.get("encryption")
    if encryption is not None:
        raise first.fail("encrypted runs need a key; this reader does not open them yet")
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
                          meta=True)
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
    return RunRoot(header, packs, record, entries, trailer, encryption)


