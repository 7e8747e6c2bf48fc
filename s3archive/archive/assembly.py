"""Assemble the manifest of a run once every pack it needs is secured.

During the walk, entry lines are spooled with their chunks as bare
:class:`ChunkId` s; only here, when every chunk's pack version is known,
are they resolved into chunk references and the pack table is built (ids in
order of first use).  Output: header, pack table, entries, snapshots,
trailer, compressed with zstd.
"""

from __future__ import annotations

import dataclasses
import tempfile
from datetime import datetime
from typing import IO, Callable, Mapping

from s3archive.archive.chunk_writer import NewPack
from s3archive.archive.pack_lease import LeasedPack
from s3archive.archive.packer import ChunkId, ChunkLocation
from s3archive.archive.snapshot_stage import PendingSnapshot
from s3archive.format import manifest_codec as codec
from s3archive.format.model import ChunkRef, Header, PackRef, Trailer
from s3archive.store.base import ObjectLock


class ManifestAssembler:
    def __init__(self, locations: Mapping[str, ChunkLocation], new_packs: Mapping[str, NewPack],
                 reused: Mapping[str, LeasedPack], new_packs_lock: ObjectLock | None):
        self.locations = locations
        self.new_packs = new_packs
        self.reused = reused
        self.new_until = new_packs_lock.retain_until if new_packs_lock else None
        self.new_mode = new_packs_lock.mode if new_packs_lock else None
        self.table: dict[str, PackRef] = {}

    def _pack_id(self, key: str, version: str, size: int, until: datetime | None,
                 mode: str | None) -> int:
        ref = self.table.get(key)
        if ref is None:
            ref = self.table[key] = PackRef(len(self.table), key, version, size, until, mode)
        return ref.id

    def resolve(self, chunks: list[ChunkId]) -> list[ChunkRef]:
        refs = []
        for digest, size in chunks:
            location = self.locations[digest]
            new = self.new_packs.get(location.pack)
            if new is not None:
                pid = self._pack_id(new.key, new.version_id, new.size, self.new_until,
                                    self.new_mode)
            else:
                leased = self.reused[location.pack]
                pid = self._pack_id(location.pack, leased.version_id, leased.size,
                                    leased.locked_until, leased.lock_mode)
            refs.append(ChunkRef(digest, size, pid, location.offset, location.stored,
                                 location.encoding))
        return refs

    def write(self, out: IO[bytes], header: Header, spool: IO[bytes],
              snapshots: list[PendingSnapshot], make_trailer: Callable[[], Trailer]) -> None:
        """Resolve the spooled entries and snapshots, then write the whole manifest.

        Spool lines are an entry's JSON without ``chunks``, then (files only) a
        TAB and its chunks as ``hash:size,hash:size...`` in file order.
        """
        spool.seek(0)
        with tempfile.TemporaryFile(prefix="s3archive-entries-resolved-") as body:
            for raw in spool:
                line, tab, listed = raw.rstrip(b"\n").partition(b"\t")
                if not tab:
                    body.write(line + b"\n")
                    continue
                pairs = [item.split(b":") for item in listed.split(b",")] if listed else []
                refs = self.resolve([ChunkId(h.decode("ascii"), int(n)) for h, n in pairs])
                body.write(line[:-1] + b',"chunks":' + _chunk_list(refs) + b"}\n")
            resolved = [dataclasses.replace(snap, chunks=self.resolve(chunks))
                        for snap, chunks in snapshots]
            writer = codec.ManifestWriter(out)
            writer.write(codec.encode_header(header))
            for ref in self.table.values():
                writer.write(codec.encode_pack(ref))
            body.seek(0)
            for line in body:
                writer.write_raw_line(line)
            for snap in sorted(resolved, key=lambda s: s.name):
                writer.write(codec.encode_snapshot(snap))
            writer.write(codec.encode_trailer(make_trailer()))
            writer.close()


def _chunk_list(refs: list[ChunkRef]) -> bytes:
    """``[[hash,size,pack,offset,stored,"enc"],...]``: json.dumps output, made faster."""
    return ("[" + ",".join(f'["{r.hash}",{r.size},{r.pack},{r.offset},{r.stored},"{r.encoding}"]'
                           for r in refs) + "]").encode("ascii")
