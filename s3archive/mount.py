"""Browse the bucket as a read-only filesystem (FUSE, pyfuse3).

Layout: ``MOUNTPOINT/HOST/RUN-ID/...`` — one directory per host, one per run
of it, and below each run the host's paths as archived (``/etc/hosts`` of
run R of host H is ``MOUNTPOINT/H/R/etc/hosts``).

* A run's metadata is loaded when its directory is first entered; a few runs
  stay loaded (least recently used first out), and a run keeps its inode
  numbers when it is loaded again.
* Files are read with random access: a read fetches only the chunks it
  overlaps (one ranged GET each, verified against its SHA-256) through a
  bounded cache of decoded chunks; holes of sparse files read as zeros.  A
  damaged chunk fails that read with EIO and is logged, never served.
* Hardlinks share an inode; symlinks, devices and FIFOs appear as such;
  owners, modes, mtimes and xattrs (``getfattr``) are the archived ones.

Everything read from the bucket is untrusted: names come from the strict
manifest decoder (no ``/``, ``.`` or ``..`` components).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from s3archive.format.model import (BLOCKDEV, CHARDEV, DIR, FIFO, FILE, HARDLINK, SYMLINK,
                                    ChunkRef, Entry, Manifest)
from s3archive.repo.catalog import RunRef, first_versions
from s3archive.repo.pack_reader import PackReader, ReadRequest
from s3archive.store.base import StoreReader

log = logging.getLogger(__name__)

ROOT = 1
_KIND_BITS = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, SYMLINK: stat.S_IFLNK,
              FIFO: stat.S_IFIFO, CHARDEV: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK}
_RUN_SPAN = 1 << 40  # inode numbers reserved per loaded run


class NotFound(Exception):
    """No such name or inode (ENOENT)."""


class Damaged(Exception):
    """A chunk could not be read or did not verify (EIO)."""


@dataclass
class Attributes:
    inode: int
    mode: int
    size: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    nlink: int = 1
    rdev: int = 0


@dataclass
class _LoadedRun:
    manifest: Manifest
    base: int  # inode of the run's directory; entry i is base + 1 + i
    children: dict[int, list[tuple[bytes, int]]]  # dir inode -> sorted (name, inode)
    by_inode: dict[int, Entry] = field(default_factory=dict)
    nlink: dict[int, int] = field(default_factory=dict)
    offsets: dict[int, list[int]] = field(default_factory=dict)  # file inode -> chunk starts


class RunFilesystem:
    """The filesystem's logic, independent of FUSE (tested directly and through it)."""

    def __init__(self, store: StoreReader, runs: list[RunRef],
                 load: Callable[[RunRef], Manifest], loaded_runs: int = 3,
                 cache_bytes: int = 64 << 20):
        self.store = store
        self.load = load
        self.hosts: dict[str, dict[str, RunRef]] = {}
        for run in first_versions(runs):
            if not (_fit_name(run.host) and _fit_name(run.run_id)):
                log.warning("skipped run %r of host %r: not a usable directory name",
                            run.run_id, run.host)
                continue
            self.hosts.setdefault(run.host, {})[run.run_id] = run
        self._host_inode = {h: 2 + i for i, h in enumerate(sorted(self.hosts))}
        self._host_by_inode = {i: h for h, i in self._host_inode.items()}
        self._run_base: dict[tuple[str, str], int] = {}
        self._run_by_base: dict[int, tuple[str, str]] = {}
        for number, (host, run_id) in enumerate(
                (h, r) for h in sorted(self.hosts) for r in sorted(self.hosts[h])):
            base = (number + 1) * _RUN_SPAN
            self._run_base[(host, run_id)] = base
            self._run_by_base[base] = (host, run_id)
        self._loaded: OrderedDict[int, _LoadedRun] = OrderedDict()
        self._loaded_max = max(1, loaded_runs)
        self._chunks: OrderedDict[tuple[str, str, ChunkRef], bytes] = OrderedDict()
        self._chunk_bytes = 0
        self._cache_max = cache_bytes
        self._lock = threading.Lock()
        self._load_locks: dict[int, threading.Lock] = {}  # one load of a run at a time
        self._failed: dict[int, tuple[float, Exception]] = {}  # recent load failures

    # ------------------------------------------------------------ runs

    def _run_of(self, inode: int) -> _LoadedRun:
        base = inode - inode % _RUN_SPAN
        key = self._run_by_base.get(base)
        if key is None:
            raise NotFound(inode)
        with self._lock:
            loaded = self._loaded.get(base)
            if loaded is not None:
                self._loaded.move_to_end(base)
                return loaded
            load_lock = self._load_locks.setdefault(base, threading.Lock())
        with load_lock:  # single flight: concurrent first accesses wait for one load
            with self._lock:
                loaded = self._loaded.get(base)
                failed = self._failed.get(base)
            if loaded is not None:
                return loaded
            if failed is not None and time.monotonic() - failed[0] < _RETRY_FAILED_S:
                raise failed[1]
            host, run_id = key
            try:
                loaded = self._index(self.load(self.hosts[host][run_id]), base)
            except Exception as err:
                with self._lock:
                    self._failed[base] = (time.monotonic(), err)
                raise
            with self._lock:
                self._failed.pop(base, None)
                self._loaded[base] = loaded
                while len(self._loaded) > self._loaded_max:
                    self._loaded.popitem(last=False)
        return loaded

    @staticmethod
    def _index(manifest: Manifest, base: int) -> _LoadedRun:
        run = _LoadedRun(manifest, base, {base: []})
        dirs: dict[bytes, int] = {b"/": base}
        files: dict[bytes, int] = {}
        for number, entry in enumerate(manifest.entries):
            inode = base + 1 + number
            if entry.path == b"/":
                run.by_inode[base] = entry
                continue
            parent, _, name = entry.path.rpartition(b"/")
            parent_inode = dirs.get(parent or b"/")
            if parent_inode is None:  # the decoder guarantees parents; be safe anyway
                continue
            if entry.kind == HARDLINK and entry.target in files:
                inode = files[entry.target]
                run.nlink[inode] = run.nlink.get(inode, 1) + 1
            else:
                run.by_inode[inode] = entry
                if entry.kind == DIR:
                    dirs[entry.path] = inode
                    run.children[inode] = []
                elif entry.kind == FILE:
                    files[entry.path] = inode
                    starts, position = [], 0
                    for ref in entry.chunks:
                        starts.append(position)
                        position += ref.size
                    run.offsets[inode] = starts
            run.children[parent_inode].append((name, inode))
        return run

    # ------------------------------------------------------------ lookups

    def attributes(self, inode: int) -> Attributes:
        if inode == ROOT or inode in self._host_by_inode:
            return Attributes(inode, stat.S_IFDIR | 0o555, nlink=2)
        if inode in self._run_by_base:
            host, run_id = self._run_by_base[inode]
            with self._lock:
                loaded = self._loaded.get(inode)
            entry = loaded.by_inode.get(inode) if loaded is not None else None
            when = self.hosts[host][run_id].last_modified
            if entry is None:
                return Attributes(inode, stat.S_IFDIR | 0o555, nlink=2,
                                  mtime_ns=int(when.timestamp()) * 1_000_000_000)
        run = self._run_of(inode)
        entry = run.by_inode.get(inode)
        if entry is None:
            if inode == run.base:
                return Attributes(inode, stat.S_IFDIR | 0o555, nlink=2)
            raise NotFound(inode)
        rdev = os.makedev(*entry.rdev) if entry.rdev else 0
        return Attributes(inode, _KIND_BITS[entry.kind] | entry.mode, entry.size, entry.uid,
                          entry.gid, entry.mtime_ns, run.nlink.get(inode, 1), rdev)

    def children(self, inode: int) -> list[tuple[bytes, int]]:
        if inode == ROOT:
            return [(h.encode("utf-8", "surrogateescape"), i)
                    for h, i in sorted(self._host_inode.items())]
        if inode in self._host_by_inode:
            host = self._host_by_inode[inode]
            return [(r.encode("ascii", "replace"), self._run_base[(host, r)])
                    for r in sorted(self.hosts[host])]
        run = self._run_of(inode)
        if inode not in run.children:
            raise NotFound(inode)
        return run.children[inode]

    def lookup(self, parent: int, name: bytes) -> int:
        children = self.children(parent)  # sorted by name (manifest order is path order)
        index = bisect_left(children, (name, 0))
        if index < len(children) and children[index][0] == name:
            return children[index][1]
        for child, inode in children:  # not sorted after all (a crafted manifest): scan
            if child == name:
                return inode
        raise NotFound(name)

    def readlink(self, inode: int) -> bytes:
        entry = self._run_of(inode).by_inode.get(inode)
        if entry is None or entry.kind != SYMLINK:
            raise NotFound(inode)
        return entry.target or b""

    def xattrs(self, inode: int) -> dict[bytes, bytes]:
        """Names as the kernel gets them (bytes); a name that is not UTF-8 is left out."""
        if inode < _RUN_SPAN:
            return {}
        entry = self._run_of(inode).by_inode.get(inode)
        found: dict[bytes, bytes] = {}
        for name, value in (entry.xattrs.items() if entry is not None else ()):
            try:
                found[name.encode("utf-8")] = value
            except UnicodeEncodeError:
                continue
        return found

    # ------------------------------------------------------------ reads

    def read(self, inode: int, offset: int, size: int) -> bytes:
        run = self._run_of(inode)
        entry = run.by_inode.get(inode)
        if entry is None or entry.kind != FILE:
            raise NotFound(inode)
        end = min(entry.size, offset + size)
        if offset >= end:
            return b""
        out = bytearray(end - offset)  # holes stay zeros
        for file_start, data_start, length in _extent_map(entry):
            lo, hi = max(offset, file_start), min(end, file_start + length)
            if lo >= hi:
                continue
            piece = self._data(run, inode, entry, data_start + lo - file_start, hi - lo)
            out[lo - offset:hi - offset] = piece
        return bytes(out)

    def _data(self, run: _LoadedRun, inode: int, entry: Entry, start: int, length: int) -> bytes:
        """``length`` bytes at ``start`` of the file's stored data (extents back to back)."""
        starts = run.offsets[inode]
        parts = []
        index = bisect_right(starts, start) - 1
        while length > 0 and 0 <= index < len(entry.chunks):
            ref = entry.chunks[index]
            data = self._chunk(run, ref)
            inner = start - starts[index]
            take = data[inner:inner + length]
            parts.append(take)
            start += len(take)
            length -= len(take)
            index += 1
        return b"".join(parts)

    def _chunk(self, run: _LoadedRun, ref: ChunkRef) -> bytes:
        pack = run.manifest.packs[ref.pack]
        # the whole reference: another run's reference to the same bytes with another
        # hash, size or encoding must be checked on its own, never served from here
        key = (pack.key, pack.version_id, ref)
        with self._lock:
            cached = self._chunks.get(key)
            if cached is not None:
                self._chunks.move_to_end(key)
                return cached
        reader = PackReader(self.store, run.manifest.packs, workers=1,
                            opener=run.manifest.opener)
        request = ReadRequest(ref.pack, ref.offset, ref.offset + ref.stored - 1, (ref,))
        result = reader.fetch(request)[0]
        if result.data is None:
            log.error("chunk %s of %s: %s", ref.hash[:16], pack.key, result.error)
            raise Damaged(result.error)
        data = bytes(result.data)
        with self._lock:
            old = self._chunks.pop(key, None)  # two readers fetched it at once
            if old is not None:
                self._chunk_bytes -= len(old)
            self._chunks[key] = data
            self._chunk_bytes += len(data)
            while self._chunk_bytes > self._cache_max and len(self._chunks) > 1:
                _, dropped = self._chunks.popitem(last=False)
                self._chunk_bytes -= len(dropped)
        return data


_RETRY_FAILED_S = 30.0  # a run that failed to load is not fetched again for this long


def _fit_name(name: str) -> bool:
    """A host or run name usable as one directory entry."""
    return name not in ("", ".", "..") and "/" not in name and name.isascii() \
        and name.isprintable()


def _extent_map(entry: Entry) -> Iterator[tuple[int, int, int]]:
    """(file offset, offset in the stored data, length) of each data extent."""
    extents = entry.extents if entry.extents is not None else [(0, entry.size)]
    data = 0
    for offset, length in extents:
        yield offset, data, length
        data += length


# ------------------------------------------------------------------ FUSE glue

def serve(fs: RunFilesystem, mountpoint: str, debug: bool = False) -> None:
    """Mount ``fs`` read-only at ``mountpoint`` until unmounted, SIGINT or SIGTERM."""
    import signal

    import pyfuse3
    import trio

    class Operations(pyfuse3.Operations):  # type: ignore[misc]
        def _attrs(self, a: Attributes) -> pyfuse3.EntryAttributes:
            e = pyfuse3.EntryAttributes()
            e.st_ino = a.inode
            e.st_mode = a.mode
            e.st_size = a.size
            e.st_uid, e.st_gid = a.uid, a.gid
            e.st_nlink = a.nlink
            e.st_rdev = a.rdev
            e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = a.mtime_ns
            e.st_blksize = 1 << 20
            e.st_blocks = (a.size + 511) // 512
            e.attr_timeout = e.entry_timeout = 300.0  # nothing in a run ever changes
            return e

        async def _call(self, func: Callable, *args: object) -> object:
            try:
                return await trio.to_thread.run_sync(func, *args)
            except NotFound:
                raise pyfuse3.FUSEError(errno.ENOENT) from None
            except Damaged:
                raise pyfuse3.FUSEError(errno.EIO) from None
            except Exception as err:  # a store error: report, never crash the mount
                log.error("%s", err)
                raise pyfuse3.FUSEError(errno.EIO) from None

        async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
            return self._attrs(await self._call(fs.attributes, inode))

        async def lookup(self, parent: int, name: bytes, ctx: object = None
                         ) -> pyfuse3.EntryAttributes:
            inode = await self._call(fs.lookup, parent, name)
            return self._attrs(await self._call(fs.attributes, inode))

        async def opendir(self, inode: int, ctx: object) -> int:
            await self._call(fs.children, inode)
            return inode

        async def readdir(self, fh: int, start_id: int, token: object) -> None:
            children = await self._call(fs.children, fh)
            for number in range(start_id, len(children)):
                name, inode = children[number]
                attrs = self._attrs(await self._call(fs.attributes, inode))
                if not pyfuse3.readdir_reply(token, name, attrs, number + 1):
                    break

        async def readlink(self, inode: int, ctx: object) -> bytes:
            return await self._call(fs.readlink, inode)

        async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
                raise pyfuse3.FUSEError(errno.EROFS)
            info = pyfuse3.FileInfo(fh=inode)
            info.keep_cache = True
            return info

        async def read(self, fh: int, off: int, size: int) -> bytes:
            return await self._call(fs.read, fh, off, size)

        async def listxattr(self, inode: int, ctx: object) -> list[bytes]:
            return list(await self._call(fs.xattrs, inode))

        async def getxattr(self, inode: int, name: bytes, ctx: object) -> bytes:
            values = await self._call(fs.xattrs, inode)
            value = values.get(name)
            if value is None:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
            return value

    options = set(pyfuse3.default_options)
    options.update({"fsname=s3archive", "ro", "default_permissions"})
    if debug:
        options.add("debug")
    pyfuse3.init(Operations(), mountpoint, options)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return
            nursery.start_soon(stop_on_signal)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()  # unmounted from outside (fusermount -u)

    try:
        trio.run(main)
    finally:
        pyfuse3.close(unmount=True)
