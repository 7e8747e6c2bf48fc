"""Get data out without restoring it: one file to a stream (``cat``), or a run
or subtree as a POSIX (pax) tar stream (``dump``).

Both stream: chunks are fetched ahead within the downloader's window and
written as they arrive, each verified against its SHA-256; memory does not
grow with the size of a file or of the run.

The tar stream carries what tar can: pax headers for long and non-UTF-8
names (``hdrcharset=BINARY``), nanosecond mtimes, owners by number and name,
xattrs (``SCHILY.xattr.*``) and POSIX ACLs (``SCHILY.acl.access`` /
``.default``) as GNU tar and star read them, hardlinks, symlinks, FIFOs,
devices, and sparse files in GNU's pax sparse format 1.0 (holes are not
written).  A damaged chunk stops the stream with an error naming the file:
a tar member cannot be shortened once its header is out, and handing over
wrong bytes silently is worse than stopping.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from s3archive.errors import IntegrityError, UsageError
from s3archive.format.model import BLOCKDEV, CHARDEV, DIR, FIFO, FILE, SYMLINK, Entry
from s3archive.format.model import Manifest
from s3archive.repo.pack_reader import DEFAULT_WINDOW, DEFAULT_WORKERS, ChunkResult, PackReader
from s3archive.restore.plan import PlannedEntry, file_chunks, normalise_selection, plan_entries
from s3archive.store.base import StoreReader

_ZEROS = bytes(1 << 20)
_BLOCK = tarfile.BLOCKSIZE


@dataclass
class DumpStats:
    entries: int = 0
    files: int = 0
    bytes: int = 0  # file bytes written (holes of sparse files not counted)


def _name(path: bytes) -> str:
    return os.fsdecode(path) if path else "."


def _check(result: ChunkResult, path: bytes) -> bytes | memoryview:
    if result.data is None:
        raise IntegrityError(f"{_name(path)}: {result.error}; the stream stops here")
    return result.data


def _data_pieces(entry: Entry, results: Iterator[ChunkResult]) -> Iterator[bytes | memoryview]:
    """The entry's stored bytes (its data extents back to back), verified."""
    for _ in entry.chunks:
        yield _check(next(results), entry.path)


def _with_holes(entry: Entry, results: Iterator[ChunkResult]) -> Iterator[bytes | memoryview]:
    """The entry's bytes as a reader of the file sees them: holes as zeros."""
    if entry.extents is None:
        yield from _data_pieces(entry, results)
        return
    pieces = _data_pieces(entry, results)
    pending = memoryview(b"")
    position = 0
    for offset, length in entry.extents:
        yield from _zeros(offset - position)
        left = length
        while left:
            if not pending:
                pending = memoryview(next(pieces))
            take = pending[:left]
            pending = pending[len(take):]
            left -= len(take)
            yield take
        position = offset + length
    yield from _zeros(entry.size - position)


def _zeros(count: int) -> Iterator[bytes]:
    while count > 0:
        piece = min(count, len(_ZEROS))
        yield _ZEROS[:piece]
        count -= piece


def _results(store: StoreReader, manifest: Manifest, planned: list[PlannedEntry],
             workers: int, window: int) -> Iterator[ChunkResult]:
    return iter(PackReader(store, manifest.packs, workers, window,
                           manifest.opener).chunks(file_chunks(planned)))


# ------------------------------------------------------------------ cat

def cat_file(store: StoreReader, manifest: Manifest, path: bytes, out: BinaryIO,
             workers: int = DEFAULT_WORKERS, window: int = DEFAULT_WINDOW) -> int:
    """Write the bytes of the file at ``path`` to ``out``; the number written."""
    wanted_path = normalise_selection(path)
    found = next((p for p in plan_entries(manifest, [wanted_path])
                  if b"/" + b"/".join(p.parts) == wanted_path), None)
    if found is None:
        raise UsageError(f"not in this run: {_name(path)}")
    wanted = found.entry
    if wanted.kind != FILE:
        raise UsageError(f"{_name(wanted.path)} is a {wanted.kind}, not a file")
    item = [PlannedEntry(wanted, found.parts)]
    written = 0
    for data in _with_holes(wanted, _results(store, manifest, item, workers, window)):
        out.write(data)
        written += len(data)
    out.flush()
    return written


# ------------------------------------------------------------------ tar

class _Stream(io.RawIOBase):
    """A read-only file object over an iterator of byte pieces (for tarfile)."""

    def __init__(self, pieces: Iterable[bytes | memoryview]):
        self._pieces = iter(pieces)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._pending = memoryview(piece).cast("B")
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _sparse_map(entry: Entry) -> bytes:
    """GNU pax sparse 1.0: the map that precedes the data, padded to a block."""
    extents = list(entry.extents or [])
    end = extents[-1][0] + extents[-1][1] if extents else 0
    if end < entry.size or not extents:
        extents.append((entry.size, 0))  # the file ends in a hole: say where it ends
    text = f"{len(extents)}\n" + "".join(f"{o}\n{n}\n" for o, n in extents)
    raw = text.encode("ascii")
    return raw + bytes(-len(raw) % _BLOCK)


def _tar_info(item: PlannedEntry) -> tarfile.TarInfo:
    entry = item.entry
    name = _name(b"/".join(item.parts))
    info = tarfile.TarInfo(name)
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname, info.gname = entry.user or "", entry.group or ""
    seconds, nanos = divmod(abs(entry.mtime_ns), 1_000_000_000)
    sign = "-" if entry.mtime_ns < 0 else ""
    info.mtime = int(entry.mtime_ns // 1_000_000_000)  # tarfile moves it to pax when < 0
    pax: dict[str, str] = {"mtime": f"{sign}{seconds}.{nanos:09d}"}
    for attr, value in sorted(entry.xattrs.items()):
        # GNU tar escapes '%' and '=' in the keyword (xattrs.c, xattr_encode_keyword)
        keyword = attr.replace("%", "%25").replace("=", "%3D")
        pax[f"SCHILY.xattr.{keyword}"] = value.decode("utf-8", "surrogateescape")
    if entry.acl_access:
        pax["SCHILY.acl.access"] = entry.acl_access
    if entry.kind == DIR and entry.acl_default:
        pax["SCHILY.acl.default"] = entry.acl_default
    if item.link_to is not None:
        info.type = tarfile.LNKTYPE
        info.linkname = _name(b"/".join(item.link_to))
    elif entry.kind == DIR:
        info.type = tarfile.DIRTYPE
    elif entry.kind == SYMLINK:
        info.type = tarfile.SYMTYPE
        info.linkname = os.fsdecode(entry.target or b"")
    elif entry.kind == FIFO:
        info.type = tarfile.FIFOTYPE
    elif entry.kind in (CHARDEV, BLOCKDEV):
        info.type = tarfile.CHRTYPE if entry.kind == CHARDEV else tarfile.BLKTYPE
        info.devmajor, info.devminor = entry.rdev or (0, 0)
        if max(info.devmajor, info.devminor) >= 8 ** 7:  # ustar's 7 octal digits
            raise IntegrityError(f"{name}: device number {entry.rdev} does not fit a tar header")
    elif entry.kind == FILE:
        info.type = tarfile.REGTYPE
        if entry.extents is not None:
            stored = sum(length for _, length in entry.extents)
            info.size = len(_sparse_map(entry)) + stored
            head, tail = os.path.split(name)
            info.name = os.path.join(head, "GNUSparseFile.0", tail)
            pax.update({"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                        "GNU.sparse.name": name, "GNU.sparse.realsize": str(entry.size)})
        else:
            info.size = entry.size
    else:  # HARDLINK without a planned target cannot occur: plan_entries resolves them
        raise IntegrityError(f"{name}: cannot put a {entry.kind} into a tar stream")
    info.pax_headers = pax
    return info


def write_tar(store: StoreReader, manifest: Manifest, selections: Iterable[bytes],
              out: BinaryIO, workers: int = DEFAULT_WORKERS,
              window: int = DEFAULT_WINDOW) -> DumpStats:
    """Stream the selected entries of ``manifest`` (all when none) to ``out`` as pax tar."""
    planned = plan_entries(manifest, selections)
    results = _results(store, manifest, planned, workers, window)
    stats = DumpStats()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        for item in planned:
            tar.members.clear()  # tarfile keeps every member's header: keep memory flat
            entry = item.entry
            info = _tar_info(item)
            stats.entries += 1
            if info.type != tarfile.REGTYPE:
                tar.addfile(info)
                continue
            pieces = _counting(_data_pieces(entry, results), stats)
            if entry.extents is not None:
                pieces = _prefixed(_sparse_map(entry), pieces)
            tar.addfile(info, io.BufferedReader(_Stream(pieces), 1 << 20))
            stats.files += 1
    return stats


def _prefixed(first: bytes, rest: Iterator[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    yield first
    yield from rest


def _counting(pieces: Iterator[bytes | memoryview], stats: DumpStats
              ) -> Iterator[bytes | memoryview]:
    for piece in pieces:
        stats.bytes += len(piece)
        yield piece

