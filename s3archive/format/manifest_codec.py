"""Manifest lines <-> model objects.

Writing streams JSON Lines through zstd.  Reading is strict: a manifest comes
from the bucket and is untrusted input, so every field is type-checked and
every path is checked (absolute, normalised, no NUL, strictly increasing, not
below a symlink of the same manifest) before anything acts on it.
"""

from __future__ import annotations

import base64
import io
import json
import re
from typing import IO, Any, Iterator

import zstandard

from s3archive.clock import isoformat, parse_iso
from s3archive.errors import ManifestError
from s3archive.format.model import (BLOCKDEV, CHARDEV, ENCODINGS, FILE, FORMAT_VERSION, HARDLINK, KINDS,
                                      SYMLINK, ChunkRef, Entry, Header, Manifest, PackRef,
                                      Snapshot, Trailer, Warning_)

_HASH = re.compile(r"[0-9a-f]{64}")
_PACK_KEY = re.compile(r"packs/([0-9a-f]{2})/([0-9a-f]{64})")
_MODE = re.compile(r"[0-7]{3,4}")


# ------------------------------------------------------------------ encoding

def _put_bytes(obj: dict[str, Any], name: str, value: bytes | None) -> None:
    """``name`` when valid UTF-8, else ``name_b64`` (exact bytes)."""
    if value is None:
        return
    try:
        obj[name] = value.decode("utf-8")
    except UnicodeDecodeError:
        obj[f"{name}_b64"] = base64.b64encode(value).decode("ascii")


def encode_chunks(chunks: list[ChunkRef]) -> list[list[Any]]:
    return [[c.hash, c.size, c.pack, c.offset, c.stored, c.encoding] for c in chunks]


def encode_entry(entry: Entry, with_chunks: bool = True) -> dict[str, Any]:
    """The entry's line; ``with_chunks=False`` leaves ``chunks`` out (spooling)."""
    obj: dict[str, Any] = {"type": "entry"}
    _put_bytes(obj, "path", entry.path)
    obj.update(kind=entry.kind, mode=f"{entry.mode:04o}", uid=entry.uid, gid=entry.gid)
    if entry.user is not None:
        obj["user"] = entry.user
    if entry.group is not None:
        obj["group"] = entry.group
    obj["mtime_ns"] = entry.mtime_ns
    if entry.kind == FILE:
        obj["size"] = entry.size
    _put_bytes(obj, "target", entry.target)
    if entry.rdev is not None:
        obj["rdev"] = list(entry.rdev)
    if entry.acl_access:
        obj["acl_access"] = entry.acl_access
    if entry.acl_default:
        obj["acl_default"] = entry.acl_default
    if entry.xattrs:
        obj["xattrs"] = {k: base64.b64encode(v).decode("ascii") for k, v in sorted(entry.xattrs.items())}
    if entry.kind == FILE:
        if with_chunks:
            obj["chunks"] = encode_chunks(entry.chunks)
        if entry.extents is not None:
            obj["extents"] = [list(e) for e in entry.extents]
        if entry.ino is not None:
            obj["ino"] = entry.ino
        if entry.ctime_ns is not None:
            obj["ctime_ns"] = entry.ctime_ns
    return obj


def encode_snapshot(snap: Snapshot) -> dict[str, Any]:
    return {"type": "snapshot", "name": snap.name, "status": snap.status,
            "exit_status": snap.exit_status, "size": snap.size,
            "started": isoformat(snap.started), "duration_s": round(snap.duration_s, 3),
            "description": snap.description, "restore_through": snap.restore_through,
            "chunks": encode_chunks(snap.chunks)}


def encode_header(header: Header) -> dict[str, Any]:
    return {"type": "header", "format": header.format, "tool": header.tool,
            "host": header.host, "run_id": header.run_id,
            "started": isoformat(header.started), "lock_mode": header.lock_mode,
            "retain_until": isoformat(header.retain_until), "tier": header.tier,
            "legal_hold": header.legal_hold, "chunker": header.chunker}


def encode_pack(pack: PackRef) -> dict[str, Any]:
    obj = {"type": "pack", "id": pack.id, "key": pack.key, "version_id": pack.version_id,
           "size": pack.size}
    if pack.locked_until is not None:
        obj["locked_until"] = isoformat(pack.locked_until)
    if pack.lock_mode is not None:
        obj["lock_mode"] = pack.lock_mode
    return obj


def encode_warning(warning: Warning_) -> dict[str, Any]:
    obj: dict[str, Any] = {"source": warning.source, "message": warning.message}
    _put_bytes(obj, "path", warning.path)
    return obj


def encode_trailer(trailer: Trailer) -> dict[str, Any]:
    return {"type": "trailer", "finished": isoformat(trailer.finished),
            "counts": trailer.counts, "stats": trailer.stats,
            "warnings": [encode_warning(w) for w in trailer.warnings]}


def dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


class ManifestWriter:
    """Streams manifest lines through zstd into a binary file."""

    def __init__(self, out: IO[bytes], level: int = 6):
        self._stream = zstandard.ZstdCompressor(level=level).stream_writer(out, closefd=False)

    def write(self, obj: dict[str, Any]) -> None:
        self._stream.write(dumps(obj))

    def write_raw_line(self, line: bytes) -> None:
        self._stream.write(line)

    def close(self) -> None:
        self._stream.flush(zstandard.FLUSH_FRAME)
        self._stream.close()


def encode_manifest(manifest: Manifest, level: int = 6) -> bytes:
    """The whole manifest as compressed bytes (for small manifests and tests)."""
    out = io.BytesIO()
    writer = ManifestWriter(out, level)
    writer.write(encode_header(manifest.header))
    for pack in manifest.packs:
        writer.write(encode_pack(pack))
    for entry in manifest.entries:
        writer.write(encode_entry(entry))
    for snap in manifest.snapshots:
        writer.write(encode_snapshot(snap))
    writer.write(encode_trailer(manifest.trailer))
    writer.close()
    return out.getvalue()


# ------------------------------------------------------------------ decoding

class _Line:
    """Typed access to one decoded line; every failure names the line."""

    def __init__(self, obj: Any, number: int, where: str):
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: line {number}: not a JSON object")
        self.obj = obj
        self.number = number
        self.where = where

    def fail(self, why: str) -> ManifestError:
        return ManifestError(f"{self.where}: line {self.number}: {why}")

    def get(self, key: str, kind: type | tuple[type, ...], required: bool = True,
            default: Any = None) -> Any:
        if key not in self.obj or self.obj[key] is None:
            if required:
                raise self.fail(f"missing field {key!r}")
            return default
        value = self.obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.fail(f"field {key!r} has the wrong type")
        return value

    def nat(self, key: str, required: bool = True, default: int = 0) -> int:
        value = self.get(key, int, required, default)
        if value < 0:
            raise self.fail(f"field {key!r} is negative")
        return value

    def bytes_field(self, key: str, required: bool = True) -> bytes | None:
        if key in self.obj and self.obj[key] is not None:
            return self.get(key, str).encode("utf-8", "strict")
        if f"{key}_b64" in self.obj:
            try:
                return base64.b64decode(self.get(f"{key}_b64", str), validate=True)
            except ValueError:
                raise self.fail(f"field {key}_b64 is not base64") from None
        if required:
            raise self.fail(f"missing field {key!r}")
        return None

    def time(self, key: str) -> Any:
        try:
            return parse_iso(self.get(key, str))
        except ValueError:
            raise self.fail(f"field {key!r} is not an ISO timestamp") from None


def _is_nat(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_path(path: bytes) -> str | None:
    """Why an entry path is unacceptable, or None."""
    if not path.startswith(b"/"):
        return "path is not absolute"
    if b"\0" in path:
        return "path contains NUL"
    if path != b"/" and (path.endswith(b"/") or b"//" in path):
        return "path is not normalised"
    if any(part in (b".", b"..") for part in path.split(b"/")):
        return "path contains '.' or '..'"
    return None


def _decode_chunks(line: _Line, raw: Any, packs: list[PackRef]) -> list[ChunkRef]:
    if not isinstance(raw, list):
        raise line.fail("chunks must be a list")
    chunks = []
    for item in raw:
        if (not isinstance(item, list) or len(item) != 6
                or not isinstance(item[0], str) or not _HASH.fullmatch(item[0])
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in item[1:5])
                or item[5] not in ENCODINGS):
            raise line.fail(f"malformed chunk reference {str(item)[:80]}")
        if item[2] >= len(packs):
            raise line.fail(f"chunk refers to pack {item[2]}, not in the pack table")
        if item[3] + item[4] > packs[item[2]].size:
            raise line.fail(f"chunk lies beyond the end of pack {item[2]}")
        if item[4] == 0 or (item[5] == "raw" and item[4] != item[1]):
            raise line.fail("chunk stored length is inconsistent")
        chunks.append(ChunkRef(*item))
    return chunks


def decode_entry(line: _Line, packs: list[PackRef]) -> Entry:
    path = line.bytes_field("path")
    problem = check_path(path)
    if problem:
        raise line.fail(f"{problem}: {path!r}")
    kind = line.get("kind", str)
    if kind not in KINDS:
        raise line.fail(f"unknown kind {kind!r}")
    mode_text = line.get("mode", str)
    if not _MODE.fullmatch(mode_text):
        raise line.fail(f"mode {mode_text[:10]!r} is not 3 or 4 octal digits")
    mode = int(mode_text, 8)
    entry = Entry(path=path, kind=kind, mode=mode, uid=line.nat("uid"), gid=line.nat("gid"),
                  mtime_ns=line.get("mtime_ns", int), user=line.get("user", str, False),
                  group=line.get("group", str, False), size=line.nat("size", False),
                  target=line.bytes_field("target", required=kind in (SYMLINK, HARDLINK)),
                  acl_access=line.get("acl_access", str, False),
                  acl_default=line.get("acl_default", str, False))
    if kind in (CHARDEV, BLOCKDEV) or "rdev" in line.obj:
        rdev = line.obj.get("rdev")
        if (not isinstance(rdev, list) or len(rdev) != 2
                or not all(_is_nat(v) for v in rdev)):
            raise line.fail("rdev must be [major, minor]")
        entry.rdev = (rdev[0], rdev[1])
    if entry.target is not None and (b"\0" in entry.target or not entry.target):
        raise line.fail("target is empty or contains NUL")
    xattrs = line.get("xattrs", dict, False, {})
    for name, value in xattrs.items():
        if not isinstance(value, str) or not name or "\0" in name:
            raise line.fail("malformed xattrs")
        try:
            entry.xattrs[name] = base64.b64decode(value, validate=True)
        except ValueError:
            raise line.fail(f"xattr {name!r} is not base64") from None
    if kind == HARDLINK:
        problem = check_path(entry.target)
        if problem:
            raise line.fail(f"hardlink target: {problem}")
    if kind == FILE:
        entry.chunks = _decode_chunks(line, line.get("chunks", list), packs)
        data = sum(c.size for c in entry.chunks)
        if "extents" in line.obj:
            entry.extents = _decode_extents(line, entry.size)
            covered = sum(length for _, length in entry.extents)
        else:
            covered = entry.size
        if data != covered:
            raise line.fail(f"chunks hold {data} bytes, the file needs {covered}")
        entry.ino = line.get("ino", int, False)
        entry.ctime_ns = line.get("ctime_ns", int, False)
    return entry


def _decode_extents(line: _Line, size: int) -> list[tuple[int, int]]:
    raw = line.get("extents", list)
    extents: list[tuple[int, int]] = []
    end = 0
    for item in raw:
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in item)
                or item[0] < end or item[0] + item[1] > size):
            raise line.fail("malformed or overlapping extents")
        extents.append((item[0], item[1]))
        end = item[0] + item[1]
    return extents


def entry_problem(entry: Entry) -> str | None:
    """Why the reader would refuse this entry's line, or None: the writer's guard.

    The entry's line is decoded again with the reader's own rules, so the
    writer cannot write what its reader refuses (about 15 µs an entry; file
    cache hits, most entries of a run, are not described again).  A file's chunks and
    extents are left out (the writer fills them in later from its own
    chunker); everything read from the filesystem is checked.
    """
    obj = encode_entry(entry, with_chunks=False)
    # (the JSON round trip, twice as slow, would show only this:)
    for name, value in [*obj.items(), *obj.get("xattrs", {}).items()]:
        try:
            name.encode("utf-8")
            if isinstance(value, str):
                value.encode("utf-8")
        except UnicodeEncodeError:
            return f"field {name!r} cannot be encoded as UTF-8"
    if entry.kind == FILE:
        obj.update(size=0, chunks=[])
        obj.pop("extents", None)
    try:
        decode_entry(_Line(obj, 0, "-"), [])
    except ManifestError as err:
        return str(err).removeprefix("-: line 0: ")
    return None


def decode_header(line: _Line) -> Header:
    if line.get("type", str) != "header":
        raise line.fail("the first line must be the header")
    fmt = line.get("format", int)
    if fmt != FORMAT_VERSION:
        raise line.fail(f"unsupported manifest format {fmt} (this tool reads {FORMAT_VERSION})")
    host = line.get("host", str)
    if not host or "/" in host:
        raise line.fail("bad host name")
    return Header(host=host, run_id=line.get("run_id", str), started=line.time("started"),
                  lock_mode=line.get("lock_mode", str, False),
                  retain_until=line.time("retain_until"), tier=line.get("tier", str),
                  tool=line.get("tool", str, False, ""),
                  legal_hold=line.get("legal_hold", bool, False, False),
                  chunker=line.get("chunker", dict, False, {}), format=fmt)


def decode_pack(line: _Line, expected_id: int) -> PackRef:
    pack = PackRef(id=line.nat("id"), key=line.get("key", str),
                   version_id=line.get("version_id", str), size=line.nat("size"),
                   locked_until=line.time("locked_until") if "locked_until" in line.obj else None,
                   lock_mode=line.get("lock_mode", str, False))
    if pack.lock_mode not in (None, "GOVERNANCE", "COMPLIANCE"):
        raise line.fail(f"unknown lock mode {pack.lock_mode!r}")
    if pack.id != expected_id:
        raise line.fail(f"pack ids must count up from 0 (expected {expected_id})")
    if not _PACK_KEY.fullmatch(pack.key) or pack.key[6:8] != pack.key[9:11]:
        raise line.fail(f"bad pack key {pack.key!r}")
    return pack


def decode_snapshot(line: _Line, packs: list[PackRef]) -> Snapshot:
    name = line.get("name", str)
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise line.fail(f"bad snapshot name {name!r}")
    snap = Snapshot(name=name, status=line.get("status", str),
                    exit_status=line.get("exit_status", int, False), size=line.nat("size"),
                    started=line.time("started"),
                    duration_s=float(line.get("duration_s", (int, float))),
                    description=line.get("description", str, False, ""),
                    restore_through=line.get("restore_through", str, False),
                    chunks=_decode_chunks(line, line.get("chunks", list), packs))
    if sum(c.size for c in snap.chunks) != snap.size:
        raise line.fail("snapshot chunks do not add up to its size")
    return snap


def decode_trailer(line: _Line) -> Trailer:
    warnings = []
    for item in line.get("warnings", list, False, []):
        sub = _Line(item, line.number, line.where)
        warnings.append(Warning_(source=sub.get("source", str), message=sub.get("message", str),
                                 path=sub.bytes_field("path", required=False)))
    counts = line.get("counts", dict, False, {})
    stats = line.get("stats", dict, False, {})
    return Trailer(finished=line.time("finished"), counts=counts, stats=stats, warnings=warnings)


def iter_lines(blob: bytes, where: str) -> Iterator[_Line]:
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob))
        text = io.TextIOWrapper(io.BufferedReader(reader), encoding="utf-8", errors="strict")
        for number, raw in enumerate(text, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{where}: line {number}: not JSON: {err.msg}") from None
            yield _Line(obj, number, where)
    except zstandard.ZstdError as err:
        raise ManifestError(f"{where}: not a zstd stream: {err}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{where}: manifest is not valid UTF-8") from None


def decode_manifest(blob: bytes, where: str = "manifest") -> Manifest:
    """Parse and validate a whole manifest."""
    lines = iter_lines(blob, where)
    first = next(lines, None)
    if first is None:
        raise ManifestError(f"{where}: empty manifest")
    header = decode_header(first)
    packs: list[PackRef] = []
    entries: list[Entry] = []
    snapshots: list[Snapshot] = []
    trailer: Trailer | None = None
    last_path: bytes | None = None
    symlinks: set[bytes] = set()
    files: set[bytes] = set()
    section = "pack"
    order = {"pack": 0, "entry": 1, "snapshot": 2, "trailer": 3}
    for line in lines:
        kind = line.get("type", str)
        if kind not in order or kind == "header":
            raise line.fail(f"unexpected line type {kind!r}")
        if trailer is not None:
            raise line.fail("lines after the trailer")
        if order[kind] < order[section]:
            raise line.fail(f"{kind} line after {section} lines")
        section = kind
        if kind == "pack":
            packs.append(decode_pack(line, len(packs)))
        elif kind == "entry":
            entry = decode_entry(line, packs)
            if last_path is not None and _sort_key(entry.path) <= _sort_key(last_path):
                raise line.fail(f"duplicate or unsorted path {entry.path!r}")
            _check_not_below_symlink(line, entry.path, symlinks)
            if entry.kind == HARDLINK and entry.target not in files:
                raise line.fail(f"hardlink to {entry.target!r}, which is no earlier file")
            if entry.kind == SYMLINK:
                symlinks.add(entry.path)
            elif entry.kind == FILE:
                files.add(entry.path)
            last_path = entry.path
            entries.append(entry)
        elif kind == "snapshot":
            snap = decode_snapshot(line, packs)
            if snapshots and snap.name <= snapshots[-1].name:
                raise line.fail(f"duplicate or unsorted snapshot {snap.name!r}")
            snapshots.append(snap)
        else:
            trailer = decode_trailer(line)
    if trailer is None:
        raise ManifestError(f"{where}: truncated: no trailer line")
    return Manifest(header=header, packs=packs, entries=entries, snapshots=snapshots,
                    trailer=trailer)


def _sort_key(path: bytes) -> tuple[bytes, ...]:
    """Entries are sorted component-wise, so a directory precedes its contents."""
    return tuple(path.split(b"/"))


def _check_not_below_symlink(line: _Line, path: bytes, symlinks: set[bytes]) -> None:
    parent = path
    while True:
        parent = parent.rpartition(b"/")[0]
        if not parent:
            return
        if parent in symlinks:
            raise line.fail(f"{path!r} lies below the symlink {parent!r}")


def entry_sort_key(path: bytes) -> tuple[bytes, ...]:
    return _sort_key(path)
