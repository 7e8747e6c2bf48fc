"""Build runs by hand: chunks, locked packs and a manifest, uploaded via the store.

Independent of the archiver, so restore, verify and inspect can be tested on
exactly the manifests a test wants — hostile ones included (``upload`` does
not validate; the codec's strict decoder is what a restore meets)::

    run = RunBuilder(store, host="web1")
    run.dir(b"/etc", mode=0o755)
    run.file(b"/etc/motd", b"hello\\n")
    ref = run.upload()           # -> RunInfo(host, run_id, key, version_id)

``add_tree`` records a real directory tree the way the archiver does (lstat,
owners, ACLs, xattrs, hardlinks, sparse extents), which gives restore a round
trip of its own.
"""

from __future__ import annotations

import dataclasses
import grp
import hashlib
import os
import pwd
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from s3archive.format.chunk_codec import ChunkCodec
from s3archive.format.manifest_codec import encode_manifest, entry_sort_key
from s3archive.format.model import (BLOCKDEV, CHARDEV, DIR, FIFO, FILE, HARDLINK, SYMLINK,
                                      ChunkRef, Entry, Header, Manifest, PackRef, Snapshot,
                                      Trailer, Warning_, pack_key, run_key)
from s3archive.store.base import ObjectLock, ObjectStore


@dataclass(frozen=True)
class RunInfo:
    host: str
    run_id: str
    key: str
    version_id: str
    manifest: Manifest


class RunBuilder:
    def __init__(self, store: ObjectStore, host: str = "testhost", run_id: str | None = None,
                 lock_mode: str | None = "GOVERNANCE", retain_until: datetime | None = None,
                 pack_lock_until: datetime | None = None, chunk_size: int = 64 << 10,
                 pack_size: int = 1 << 20, tier: str = "daily",
                 started: datetime | None = None, pack_lock_mode: str | None = "",
                 legal_hold: bool = False):
        now = datetime.now(timezone.utc).replace(microsecond=0)
        self.store = store
        self.host = host
        self.started = started or now
        self.run_id = run_id or self.started.strftime("%Y%m%dT%H%M%SZ")
        self.lock_mode = lock_mode
        self.retain_until = retain_until or now + timedelta(days=1)
        self.pack_lock_until = pack_lock_until or self.retain_until
        self.pack_lock_mode = lock_mode if pack_lock_mode == "" else pack_lock_mode
        self.legal_hold = legal_hold
        self.chunk_size = chunk_size
        self.pack_size = pack_size
        self.tier = tier
        self.codec = ChunkCodec()
        self.packs: list[PackRef] = []
        self.entries: list[Entry] = []
        self.snapshots: list[Snapshot] = []
        self.warnings: list[Warning_] = []
        self.stats: dict[str, int] = {}
        self._known: dict[str, ChunkRef] = {}
        self._buffer = bytearray()

    # ------------------------------------------------------------ content

    def store_bytes(self, data: bytes) -> list[ChunkRef]:
        """Chunk, dedup, encode and pack ``data``; the refs point at packs to come."""
        refs = []
        for start in range(0, len(data), self.chunk_size):
            piece = data[start:start + self.chunk_size]
            digest = hashlib.sha256(piece).hexdigest()
            if digest not in self._known:
                encoded = self.codec.encode(piece, digest)
                offset = len(self._buffer)
                self._buffer += encoded.data
                self._known[digest] = ChunkRef(digest, len(piece), len(self.packs), offset,
                                               len(encoded.data), encoded.encoding)
                if len(self._buffer) >= self.pack_size:
                    self.flush_pack()
            refs.append(self._known[digest])
        return refs

    def flush_pack(self) -> PackRef | None:
        if not self._buffer:
            return None
        body = bytes(self._buffer)
        key = pack_key(hashlib.sha256(body).hexdigest())
        lock = ObjectLock(self.pack_lock_mode, self.pack_lock_until) \
            if self.pack_lock_mode else None
        put = self.store.put(key, body, lock, legal_hold=self.legal_hold)
        pack = PackRef(id=len(self.packs), key=key, version_id=put.version_id, size=len(body))
        self.packs.append(pack)
        self._buffer = bytearray()
        return pack

    # ------------------------------------------------------------ entries

    def _meta(self, kw: dict) -> dict:
        base = dict(uid=0, gid=0, user="root", group="root", mtime_ns=1_700_000_000_000_000_000)
        base.update(kw)
        return base

    def add(self, entry: Entry) -> Entry:
        self.entries.append(entry)
        return entry

    def dir(self, path: bytes, mode: int = 0o755, **kw: object) -> Entry:
        return self.add(Entry(path=path, kind=DIR, mode=mode, **self._meta(kw)))

    def file(self, path: bytes, data: bytes, mode: int = 0o644,
             extents: list[tuple[int, int]] | None = None, size: int | None = None,
             **kw: object) -> Entry:
        entry = Entry(path=path, kind=FILE, mode=mode, size=len(data) if size is None else size,
                      chunks=self.store_bytes(data), extents=extents, **self._meta(kw))
        return self.add(entry)

    def symlink(self, path: bytes, target: bytes, **kw: object) -> Entry:
        return self.add(Entry(path=path, kind=SYMLINK, mode=0o777, target=target,
                              **self._meta(kw)))

    def hardlink(self, path: bytes, target: bytes, mode: int = 0o644, **kw: object) -> Entry:
        return self.add(Entry(path=path, kind=HARDLINK, mode=mode, target=target,
                              **self._meta(kw)))

    def snapshot(self, name: str, data: bytes, restore_through: str | None = None,
                 description: str = "") -> Snapshot:
        snap = Snapshot(name=name, status="ok", exit_status=0, size=len(data),
                        started=self.started, duration_s=0.5, description=description,
                        restore_through=restore_through, chunks=self.store_bytes(data))
        self.snapshots.append(snap)
        return snap

    # ------------------------------------------------------------ real trees

    def add_tree(self, root: Path) -> None:
        """Record ``root`` as ``/`` (its contents as ``/a``, ``/a/b`` ...)."""
        root_b = os.fsencode(root)
        found: list[tuple[bytes, bytes]] = []  # (manifest path, real path)

        def walk(real: bytes, logical: bytes) -> None:
            found.append((logical or b"/", real))
            if stat.S_ISDIR(os.lstat(real).st_mode):
                for name in os.listdir(real):
                    walk(real + b"/" + name, logical + b"/" + name)

        walk(root_b, b"")
        found.sort(key=lambda item: entry_sort_key(item[0]))
        first_of_inode: dict[tuple[int, int], bytes] = {}
        for logical, real in found:
            self.add(self._entry_for(logical, real, first_of_inode))

    def _entry_for(self, logical: bytes, real: bytes,
                   first_of_inode: dict[tuple[int, int], bytes]) -> Entry:
        st = os.lstat(real)
        meta = dict(mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                    user=_user(st.st_uid), group=_group(st.st_gid), mtime_ns=st.st_mtime_ns,
                    xattrs=_xattrs(real))
        if not stat.S_ISLNK(st.st_mode):
            meta["acl_access"], meta["acl_default"] = _acls(real, stat.S_ISDIR(st.st_mode))
        if stat.S_ISDIR(st.st_mode):
            return Entry(path=logical, kind=DIR, **meta)
        if stat.S_ISLNK(st.st_mode):
            return Entry(path=logical, kind=SYMLINK, target=os.readlink(real), **meta)
        if stat.S_ISFIFO(st.st_mode):
            return Entry(path=logical, kind=FIFO, **meta)
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            kind = CHARDEV if stat.S_ISCHR(st.st_mode) else BLOCKDEV
            return Entry(path=logical, kind=kind, rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)),
                         **meta)
        if st.st_nlink > 1:
            inode = (st.st_dev, st.st_ino)
            if inode in first_of_inode:
                return Entry(path=logical, kind=HARDLINK, target=first_of_inode[inode], **meta)
            first_of_inode[inode] = logical
        extents = _data_extents(real, st)
        with open(real, "rb") as handle:
            if extents is None:
                data = handle.read()
            else:
                parts = []
                for offset, length in extents:
                    handle.seek(offset)
                    parts.append(handle.read(length))
                data = b"".join(parts)
        return Entry(path=logical, kind=FILE, size=st.st_size, chunks=self.store_bytes(data),
                     extents=extents, **meta)

    # ------------------------------------------------------------ upload

    def manifest(self, sort: bool = True) -> Manifest:
        self.flush_pack()
        entries = sorted(self.entries, key=lambda e: entry_sort_key(e.path)) if sort \
            else list(self.entries)
        files = [e for e in entries if e.kind == FILE]
        stats = {"files": len(files), "bytes": sum(e.size for e in files), **self.stats}
        header = Header(host=self.host, run_id=self.run_id, started=self.started,
                        lock_mode=self.lock_mode, retain_until=self.retain_until,
                        tier=self.tier, tool="manifest_builder")
        trailer = Trailer(finished=self.started + timedelta(seconds=42),
                          counts={"entries": len(entries), "files": len(files)},
                          stats=stats, warnings=self.warnings)
        return Manifest(header=header, packs=list(self.packs), entries=entries,
                        snapshots=sorted(self.snapshots, key=lambda s: s.name), trailer=trailer)

    def upload(self, sort: bool = True, manifest: Manifest | None = None) -> RunInfo:
        manifest = manifest or self.manifest(sort)
        key = run_key(self.host, self.run_id)
        lock = ObjectLock(self.lock_mode, self.retain_until) if self.lock_mode else None
        put = self.store.put(key, encode_manifest(manifest), lock, legal_hold=self.legal_hold)
        return RunInfo(self.host, self.run_id, key, put.version_id, manifest)


def with_entry(entry: Entry, **changes: object) -> Entry:
    return dataclasses.replace(entry, **changes)


# ------------------------------------------------------------------ metadata

def _user(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def _xattrs(path: bytes) -> dict[str, bytes]:
    out = {}
    for name in os.listxattr(path, follow_symlinks=False):
        if name.startswith("system.posix_acl_"):
            continue
        out[name] = os.getxattr(path, name, follow_symlinks=False)
    return out


def acl_text(acl: object) -> str:
    import posix1e
    return acl.to_any_text(options=posix1e.TEXT_NUMERIC_IDS | posix1e.TEXT_ABBREVIATE,  # type: ignore[attr-defined]
                           separator=b",").decode()


def _acls(path: bytes, is_dir: bool) -> tuple[str | None, str | None]:
    import posix1e
    access = None
    if posix1e.has_extended(path):
        access = acl_text(posix1e.ACL(file=path))
    default = None
    if is_dir:
        acl = posix1e.ACL(filedef=path)
        if len(list(acl)):
            default = acl_text(acl)
    return access, default


def _data_extents(path: bytes, st: os.stat_result) -> list[tuple[int, int]] | None:
    """Data regions of a sparse file (None when the file has no holes)."""
    if st.st_blocks * 512 >= st.st_size:
        return None
    extents = []
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while offset < st.st_size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end - start))
            offset = end
    finally:
        os.close(fd)
    return extents


# ------------------------------------------------------------------ a bucket per test

@dataclass(frozen=True)
class BucketEnv:
    """A fresh Object Lock bucket, a config.toml pointing at it, and a store."""

    config_path: Path
    bucket: str
    store: ObjectStore
    client: object  # boto3 S3 client (admin: may bypass governance)


_bucket_counter = iter(range(1, 1_000_000))


def make_bucket_env(rgw: object, directory: Path, host: str = "testhost",
                    prefix: str = "") -> BucketEnv:
    """Create a bucket with Object Lock on ``rgw`` and a config for the CLI."""
    from s3archive.config import load_config
    from s3archive.store.factory import open_store

    bucket = f"t{os.getpid()}-{next(_bucket_counter)}"
    client = rgw.client()  # type: ignore[attr-defined]
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    credentials = directory / "credentials"
    credentials.write_text(f"[default]\naws_access_key_id = {rgw.access_key}\n"  # type: ignore[attr-defined]
                           f"aws_secret_access_key = {rgw.secret_key}\n")  # type: ignore[attr-defined]
    credentials.chmod(0o600)
    config_path = directory / "config.toml"
    prefix_line = f'prefix = "{prefix}"\n' if prefix else ""
    config_path.write_text(
        f'[s3]\nbucket = "{bucket}"\nendpoint_url = "{rgw.endpoint_url}"\n'  # type: ignore[attr-defined]
        f'region = "{rgw.region}"\ncredentials_file = "{credentials}"\n{prefix_line}'  # type: ignore[attr-defined]
        f'\n[host]\nname = "{host}"\n'
        f'\n[local]\ncache_dir = "{directory / "cache"}"\n'
        f'state_file = "{directory / "state" / "last-run.json"}"\n')
    store = open_store(load_config(config_path))
    return BucketEnv(config_path=config_path, bucket=bucket, store=store, client=client)


# ------------------------------------------------------------------ a tree with everything

OLD_MTIME_NS = -1_000_000_000 * 1_000_000_000 + 123_456_789  # 1938
FUTURE_MTIME_NS = 4_102_444_800 * 1_000_000_000 + 987_654_321  # 2100


def make_rich_tree(root: Path, large_mib: int = 3) -> None:
    """Every kind of entry and metadata restore must bring back (run as root).

    Regular, empty, large and duplicate files, hardlink groups, relative,
    absolute and dangling symlinks, a fifo, devices, setuid/setgid/sticky,
    a read-only directory with files, owners with and without names, access
    and default ACLs, user and trusted xattrs (binary and empty), a sparse
    file, non-UTF-8 and odd names, a deep path, old and far-future mtimes.
    """
    import random
    import subprocess

    rng = random.Random(1234)
    root.mkdir(parents=True, exist_ok=True)
    r = os.fsencode(root)

    def p(*parts: bytes) -> bytes:
        return b"/".join((r,) + parts)

    def write(path: bytes, data: bytes, mode: int = 0o644) -> None:
        with open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, mode)

    os.mkdir(p(b"etc"))
    write(p(b"etc", b"motd"), b"hello world\n")
    write(p(b"etc", b"empty"), b"")
    write(p(b"etc", b"shadow"), b"root:*:19000:0:99999:7:::\n", 0o640)
    big = rng.randbytes(large_mib << 20) + b"compressible " * 100_000
    write(p(b"etc", b"big.bin"), big)
    write(p(b"etc", b"big-copy.bin"), big)  # duplicate content, not a hardlink
    os.mkdir(p(b"links"))
    write(p(b"links", b"a"), b"group one\n" * 1000)
    os.link(p(b"links", b"a"), p(b"links", b"b"))
    os.link(p(b"links", b"a"), p(b"etc", b"a-elsewhere"))
    write(p(b"links", b"x"), b"group two\n")
    os.link(p(b"links", b"x"), p(b"links", b"y"))
    os.symlink(b"a", p(b"links", b"rel"))
    os.symlink(b"/etc/passwd", p(b"links", b"abs"))
    os.symlink(b"../nowhere/at/all", p(b"links", b"dangling"))
    os.mkdir(p(b"dev"))
    os.mkfifo(p(b"dev", b"fifo"), 0o620)
    if os.geteuid() == 0:
        os.mknod(p(b"dev", b"null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(p(b"dev", b"loop9"), stat.S_IFBLK | 0o660, os.makedev(7, 9))
    os.mkdir(p(b"modes"))
    write(p(b"modes", b"suid"), b"#!/bin/sh\n", 0o4755)
    write(p(b"modes", b"sgid"), b"#!/bin/sh\n", 0o2711)
    os.mkdir(p(b"modes", b"sticky"))
    os.chmod(p(b"modes", b"sticky"), 0o1777)
    os.mkdir(p(b"modes", b"setgid-dir"))
    os.chmod(p(b"modes", b"setgid-dir"), 0o2775)
    os.mkdir(p(b"readonly"))
    write(p(b"readonly", b"inside"), b"cannot write here later\n", 0o444)
    os.mkdir(p(b"readonly", b"sub"))
    write(p(b"readonly", b"sub", b"deeper"), b"x\n")
    os.mkdir(p(b"owners"))
    write(p(b"owners", b"nobody"), b"n\n")
    write(p(b"owners", b"numeric"), b"u\n")
    os.mkdir(p(b"acl"))
    write(p(b"acl", b"file"), b"acl\n")
    os.mkdir(p(b"acl", b"dir"))
    subprocess.run(["setfacl", "-m", "u:65534:r--,g:65534:rw-",
                    os.fsdecode(p(b"acl", b"file"))], check=True)
    subprocess.run(["setfacl", "-m", "u:65534:rwx", "-d", "-m", "u:65534:r-x,g::rwx",
                    os.fsdecode(p(b"acl", b"dir"))], check=True)
    os.mkdir(p(b"xattr"))
    write(p(b"xattr", b"f"), b"attrs\n")
    os.setxattr(p(b"xattr", b"f"), "user.binary", bytes(range(256)))
    os.setxattr(p(b"xattr", b"f"), "user.empty", b"")
    os.setxattr(p(b"xattr", b"f"), "trusted.secret", b"\x00\x01trusted")
    os.setxattr(p(b"xattr"), "user.on-dir", b"dir value")
    os.symlink(b"f", p(b"xattr", b"link"))
    os.setxattr(p(b"xattr", b"link"), "trusted.on-link", b"L", follow_symlinks=False)
    with open(p(b"sparse.img"), "wb") as handle:
        handle.truncate(64 << 20)
        handle.seek(1 << 20)
        handle.write(rng.randbytes(200_000))
        handle.seek(40 << 20)
        handle.write(b"middle" * 10_000)
    with open(p(b"sparse-tail.img"), "wb") as handle:
        handle.write(b"head" * 5000)
        handle.truncate(16 << 20)  # ends in a hole
    os.mkdir(p(b"names"))
    for name in (b"caf\xe9-latin1", b"with space", b"new\nline", b"-dash", b"*star?",
                 b"\xff\xfe\x80", "ünïcødé-名前".encode(), b"tab\tname", b"x" * 255):
        write(p(b"names", name), name + b"\n")
    deep = p(b"deep")
    os.mkdir(deep)
    for level in range(40):
        deep += b"/level-%02d-with-a-long-directory-name" % level
        os.mkdir(deep)
    write(deep + b"/bottom.txt", b"bottom\n")
    write(p(b"times-old"), b"old\n")
    write(p(b"times-future"), b"future\n")
    if os.geteuid() == 0:
        os.chown(p(b"owners", b"nobody"), 65534, 65534)
        os.chown(p(b"owners", b"numeric"), 12345, 23456)
        os.chown(p(b"modes", b"suid"), 0, 0)
        os.chown(p(b"links", b"rel"), 65534, 65534, follow_symlinks=False)
    os.chmod(p(b"modes", b"suid"), 0o4755)  # chown cleared it
    os.utime(p(b"times-old"), ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    os.utime(p(b"times-future"), ns=(FUTURE_MTIME_NS, FUTURE_MTIME_NS))
    os.utime(p(b"links", b"abs"), ns=(OLD_MTIME_NS, OLD_MTIME_NS), follow_symlinks=False)
    # directory times last, deepest first; then the read-only directory
    for dirpath, _, _ in sorted(os.walk(r), key=lambda item: -len(item[0])):
        os.utime(dirpath, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_000_000))
    os.chmod(p(b"readonly"), 0o555)


def tree_differences(src: Path, dst: Path) -> dict[str, str]:
    """What rsync (-naHAXS --numeric-ids -c --delete), getfacl -R and getfattr -R see.

    Empty strings everywhere mean the trees agree in content and metadata.
    """
    import subprocess

    rsync = subprocess.run(["rsync", "-naHAXS", "--numeric-ids", "-c", "--delete",
                            f"{src}/", f"{dst}/", "--itemize-changes"],
                           capture_output=True, check=True)
    out = {"rsync": rsync.stdout.decode(errors="backslashreplace")}

    def listing(command: list[str], where: Path) -> bytes:
        """The output's blocks (one per file), sorted: directory order may differ."""
        raw = subprocess.run(command, cwd=where, capture_output=True, check=True).stdout
        return b"\n\n".join(sorted(b.strip() for b in raw.split(b"\n\n") if b.strip()))

    for name, command in (("getfacl", ["getfacl", "-R", "-P", "-n", "."]),
                          ("getfattr", ["getfattr", "-R", "-P", "-h", "-d", "-m", "-",
                                        "-e", "hex", "."])):
        a, b = listing(command, src), listing(command, dst)
        out[name] = "" if a == b else (f"{name} differs:\n--- source\n{a.decode(errors='replace')}"
                                       f"\n--- restored\n{b.decode(errors='replace')}")
    return out


def invoke(env: BucketEnv, *args: str, input: str | None = None) -> object:
    """Run the real CLI in-process against ``env``'s configuration."""
    from click.testing import CliRunner

    from s3archive.cli.main import cli

    return CliRunner().invoke(cli, ["--config", str(env.config_path), *args],
                              catch_exceptions=False, input=input)
