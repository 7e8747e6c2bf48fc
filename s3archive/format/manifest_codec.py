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
import math
import re
from typing import IO, Any, Iterator

import zstandard

from s3archive.clock import isoformat, parse_iso
from s3archive.errors import ManifestError
from s3archive.format import pack2
from s3archive.format.limits import INT64_MAX, LIMITS, MAX_CHUNK_SIZE, ManifestLimits
from s3archive.format.model import (BLOCKDEV, CHARDEV, DIR, ENCODINGS, FILE, FORMAT_VERSION,
                                    HARDLINK, KINDS, SYMLINK, ChunkRef, Entry, Header,
                                    Manifest, PackRef, Snapshot, Trailer, Warning_)

_HASH = re.compile(r"[0-9a-f]{64}")
_PACK_KEY = re.compile(r"packs/([0-9a-f]{2})/([0-9a-f]{64})")
_MODE = re.compile(r"[0-7]{3,4}")
_ID_MAX = (1 << 32) - 1  # uid, gid, device major/minor


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
    """Streams manifest lines through zstd into a binary file.

    Refuses (ManifestError) a line or a line count that a reader would refuse
    (format/limits.py): a writer never writes what its reader refuses.
    """

    def __init__(self, out: IO[bytes], level: int = 6, limits: ManifestLimits = LIMITS):
        self._stream = zstandard.ZstdCompressor(level=level).stream_writer(out, closefd=False)
        self._limits = limits
        self._lines = 0
        self._bytes = 0

    def write(self, obj: dict[str, Any]) -> None:
        self.write_raw_line(dumps(obj))

    def write_raw_line(self, line: bytes) -> None:
        if len(line) - 1 > self._limits.line_bytes:
            raise ManifestError(f"manifest line {self._lines + 1} would be {len(line) - 1} "
                                f"bytes, more than a reader accepts ({self._limits.line_bytes})")
        if (self._lines + 1 > self._limits.lines
                or self._bytes + len(line) > self._limits.plain_bytes):
            raise ManifestError(f"the manifest would exceed {self._limits.lines} lines or "
                                f"{self._limits.plain_bytes} bytes, more than a reader "
                                "accepts")
        self._lines += 1
        self._bytes += len(line)
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
    """Typed, bounded access to one decoded line; every failure names the line."""

    def __init__(self, obj: Any, number: int, where: str, limits: ManifestLimits):
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: line {number}: not a JSON object")
        self.obj = obj
        self.number = number
        self.where = where
        self.limits = limits

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

    def text(self, key: str, required: bool = True, default: str | None = None,
             limit: int | None = None) -> Any:
        """A string field of at most ``limit`` characters (default: ``text_chars``)."""
        value = self.get(key, str, required, default)
        limit = self.limits.text_chars if limit is None else limit
        if value is not None and len(value) > limit:
            raise self.fail(f"field {key!r} is longer than {limit} characters")
        return value

    def nat(self, key: str, required: bool = True, default: int | None = 0,
            limit: int = INT64_MAX) -> Any:
        value = self.get(key, int, required, default)
        if value is None:
            return None
        if value < 0:
            raise self.fail(f"field {key!r} is negative")
        if value > limit:
            raise self.fail(f"field {key!r} is larger than {limit}")
        return value

    def int64(self, key: str, required: bool = True) -> Any:
        value = self.get(key, int, required)
        if value is not None and not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise self.fail(f"field {key!r} is out of range")
        return value

    def bytes_field(self, key: str, limit: int, required: bool = True) -> bytes | None:
        if key in self.obj and self.obj[key] is not None:
            text = self.get(key, str)
            if len(text) > limit:  # a character is at least one byte
                raise self.fail(f"field {key!r} is longer than {limit} bytes")
            try:
                value = text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
                raise self.fail(f"field {key!r} is not valid UTF-8 (use {key}_b64)") from None
        elif f"{key}_b64" in self.obj:
            text = self.get(f"{key}_b64", str)
            if len(text) > (limit + 2) // 3 * 4:
                raise self.fail(f"field {key}_b64 is longer than {limit} bytes")
            try:
                value = base64.b64decode(text, validate=True)
            except ValueError:
                raise self.fail(f"field {key}_b64 is not base64") from None
        elif required:
            raise self.fail(f"missing field {key!r}")
        else:
            return None
        if len(value) > limit:
            raise self.fail(f"field {key!r} is longer than {limit} bytes")
        return value

    def time(self, key: str) -> Any:
        try:
            return parse_iso(self.text(key, limit=64))
        except (ValueError, OverflowError):
            raise self.fail(f"field {key!r} is not an ISO timestamp") from None

    def small_object(self, key: str) -> dict[str, Any]:
        value = self.get(key, dict, False, {})
        if len(value) > self.limits.object_keys:
            raise self.fail(f"field {key!r} has more than {self.limits.object_keys} keys")
        return value


def _is_nat(value: Any, limit: int = INT64_MAX) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def check_path(path: bytes, limits: ManifestLimits = LIMITS) -> str | None:
    """Why an entry path is unacceptable, or None."""
    if not path.startswith(b"/"):
        return "path is not absolute"
    if b"\0" in path:
        return "path contains NUL"
    if len(path) > limits.path_bytes:
        return f"path is longer than {limits.path_bytes} bytes"
    if path != b"/" and (path.endswith(b"/") or b"//" in path):
        return "path is not normalised"
    if b"/." in path and any(part in (b".", b"..") for part in path.split(b"/")):
        return "path contains '.' or '..'"
    if len(path) > limits.name_bytes and \
            max(map(len, path.split(b"/"))) > limits.name_bytes:
        return f"a path component is longer than {limits.name_bytes} bytes"
    return None


def _decode_chunks(line: _Line, raw: Any, packs: list[PackRef], overhead: int = 0
                   ) -> list[ChunkRef]:
    """``overhead``: bytes a stored chunk has beyond its encoding (format 2's
    authentication tag in an encrypted run)."""
    if not isinstance(raw, list):
        raise line.fail("chunks must be a list")
    chunks = []
    for item in raw:
        if (not isinstance(item, list) or len(item) != 6
                or not isinstance(item[0], str) or not _HASH.fullmatch(item[0])
                or not all(_is_nat(v) for v in item[1:5])
                or item[5] not in ENCODINGS):
            raise line.fail(f"malformed chunk reference {str(item)[:80]}")
        if item[1] > MAX_CHUNK_SIZE or item[4] > MAX_CHUNK_SIZE:
            raise line.fail(f"chunk is larger than the format's maximum of {MAX_CHUNK_SIZE} "
                            "bytes")
        if item[2] >= len(packs):
            raise line.fail(f"chunk refers to pack {item[2]}, not in the pack table")
        if item[3] + item[4] > packs[item[2]].size:
            raise line.fail(f"chunk lies beyond the end of pack {item[2]}")
        if item[4] <= overhead or (item[5] == "raw" and item[4] != item[1] + overhead):
            raise line.fail("chunk stored length is inconsistent")
        chunks.append(ChunkRef(*item))
    return chunks


def decode_entry(line: _Line, packs: list[PackRef], with_chunks: bool = True,
                 overhead: int = 0) -> Entry:
    """One entry; ``with_chunks=False`` (format 2, chunks in chunk lists) leaves
    ``chunks`` empty and their sum unchecked: the caller checks it when it reads them."""
    limits = line.limits
    path = line.bytes_field("path", limits.path_bytes)
    assert path is not None
    problem = check_path(path, limits)
    if problem:
        raise line.fail(f"{problem}: {path[:200]!r}")
    kind = line.text("kind")
    if kind not in KINDS:
        raise line.fail(f"unknown kind {kind[:20]!r}")
    mode_text = line.text("mode")
    if not _MODE.fullmatch(mode_text):
        raise line.fail(f"mode {mode_text[:10]!r} is not 3 or 4 octal digits")
    mode = int(mode_text, 8)
    entry = Entry(path=path, kind=kind, mode=mode, uid=line.nat("uid", limit=_ID_MAX),
                  gid=line.nat("gid", limit=_ID_MAX), mtime_ns=line.int64("mtime_ns"),
                  user=line.text("user", False, limit=limits.owner_chars),
                  group=line.text("group", False, limit=limits.owner_chars),
                  size=line.nat("size", False),
                  target=line.bytes_field("target", limits.target_bytes,
                                          required=kind in (SYMLINK, HARDLINK)),
                  acl_access=line.text("acl_access", False, limit=limits.acl_chars),
                  acl_default=line.text("acl_default", False, limit=limits.acl_chars))
    if kind in (CHARDEV, BLOCKDEV) or "rdev" in line.obj:
        rdev = line.obj.get("rdev")
        if (not isinstance(rdev, list) or len(rdev) != 2
                or not all(_is_nat(v, _ID_MAX) for v in rdev)):
            raise line.fail("rdev must be [major, minor]")
        entry.rdev = (rdev[0], rdev[1])
    if entry.target is not None and (b"\0" in entry.target or not entry.target):
        raise line.fail("target is empty or contains NUL")
    _decode_xattrs(line, entry)
    if kind == HARDLINK:
        assert entry.target is not None
        problem = check_path(entry.target, limits)
        if problem:
            raise line.fail(f"hardlink target: {problem}")
    if kind == FILE:
        if "extents" in line.obj:
            entry.extents = _decode_extents(line, entry.size)
        if with_chunks:
            entry.chunks = _decode_chunks(line, line.get("chunks", list), packs, overhead)
            data = sum(c.size for c in entry.chunks)
            if data != covered_bytes(entry):
                raise line.fail(f"chunks hold {data} bytes, the file needs "
                                f"{covered_bytes(entry)}")
        entry.ino = line.nat("ino", False, None)
        entry.ctime_ns = line.int64("ctime_ns", False)
    return entry


def covered_bytes(entry: Entry) -> int:
    """The bytes a file's chunks must hold: its size, or its extents' (sparse)."""
    if entry.extents is not None:
        return sum(length for _, length in entry.extents)
    return entry.size


def _decode_xattrs(line: _Line, entry: Entry) -> None:
    limits = line.limits
    xattrs = line.get("xattrs", dict, False, {})
    names = 0
    for name, value in xattrs.items():
        if not isinstance(value, str) or not name or "\0" in name:
            raise line.fail("malformed xattrs")
        try:
            size = len(name.encode("utf-8"))  # the writer records only UTF-8 names
        except UnicodeEncodeError:
            raise line.fail("an xattr name is not valid UTF-8") from None
        names += size + 1
        if size > limits.name_bytes or names > limits.xattr_names_bytes:
            raise line.fail("xattr names are too long")
        if len(value) > (limits.xattr_value_bytes + 2) // 3 * 4:
            raise line.fail(f"xattr {name[:40]!r} is longer than {limits.xattr_value_bytes} "
                            "bytes")
        try:
            entry.xattrs[name] = base64.b64decode(value, validate=True)
        except ValueError:
            raise line.fail(f"xattr {name[:40]!r} is not base64") from None


def _decode_extents(line: _Line, size: int) -> list[tuple[int, int]]:
    raw = line.get("extents", list)
    extents: list[tuple[int, int]] = []
    end = 0
    for item in raw:
        if (not isinstance(item, list) or len(item) != 2
                or not all(_is_nat(v) for v in item)
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

    ``decode_entry`` checks the path and the mtime each on its own, and the other
    fields together: an entry whose other fields (all plain values) are those of an
    entry it accepted, with a path ``check_path`` accepts and an mtime in range, is
    accepted without decoding it again (most entries of a run share their owner,
    mode and kind: 20 µs of a content worker's 80 a file).
    """
    plain = _plain_file_key(entry)
    if plain is not None and plain in _ACCEPTED and _own_fields_ok(entry):
        return None
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
    others = _others_of(obj, LIMITS)
    if others is not None and others in _ACCEPTED and _own_fields_ok(entry):
        return None
    try:
        decode_entry(_Line(obj, 0, "-", LIMITS), [])
    except ManifestError as err:
        return str(err).removeprefix("-: line 0: ")
    for accepted in (others, plain):
        if accepted is not None and len(_ACCEPTED) < _ACCEPTED_MAX:
            _ACCEPTED.add(accepted)
    return None


def _own_fields_ok(entry: Entry) -> bool:
    """Whether the reader accepts the entry's own fields, its path and mtime (the
    others are those of an entry it accepted)."""
    return (type(entry.mtime_ns) is int and -INT64_MAX - 1 <= entry.mtime_ns <= INT64_MAX
            and check_path(entry.path, LIMITS) is None)


def _plain_file_key(entry: Entry) -> tuple[Any, ...] | None:
    """A plain file's other fields as remembered (no xattrs, ACLs, inode or ctime;
    plain values): its line's other fields follow from these alone (kind, mode,
    uid, gid, user, group; size and extents are not the guard's), so this key
    stands for :func:`_others_of` without encoding the entry (most entries of an
    initial run: 4 of a content worker's ~6 µs here).  None: any other entry."""
    if (entry.kind != FILE or entry.xattrs or entry.acl_access is not None
            or entry.acl_default is not None or entry.target is not None
            or entry.rdev is not None or entry.ino is not None or entry.ctime_ns is not None
            or type(entry.path) is not bytes or type(entry.mode) is not int
            or type(entry.uid) is not int or type(entry.gid) is not int
            or not (entry.user is None or type(entry.user) is str)
            or not (entry.group is None or type(entry.group) is str)):
        return None
    return (LIMITS, entry.mode, entry.uid, entry.gid, entry.user, entry.group)


# the other fields (and limits) of entries entry_problem accepted (bounded: a few
# owners, modes and kinds in most runs)
_ACCEPTED: set[tuple[Any, ...]] = set()
_ACCEPTED_MAX = 4096
_OWN_FIELDS = ("path", "path_b64", "mtime_ns", "chunks")


def _others_of(obj: dict[str, Any], limits: ManifestLimits) -> tuple[Any, ...] | None:
    """The entry's fields but its own (path, mtime; a file's chunks are always none
    here), when all are plain values (None: not remembered, always decoded)."""
    others: list[Any] = [limits]
    for name, value in obj.items():
        if name in _OWN_FIELDS:
            continue
        if type(value) not in (str, int):  # (bool, None, lists, xattrs: decoded each time)
            return None
        others.append((name, value))
    return tuple(others)


READABLE_FORMATS = (1, 2)


def decode_header(line: _Line, formats: tuple[int, ...] = (FORMAT_VERSION,)) -> Header:
    if line.get("type", str) != "header":
        raise line.fail("the first line must be the header")
    fmt = line.get("format", int)
    if fmt not in formats:
        raise line.fail(f"unsupported manifest format {str(fmt)[:20]} (this tool reads "
                        f"{', '.join(map(str, READABLE_FORMATS))})")
    host = line.text("host")
    if not host or "/" in host:
        raise line.fail("bad host name")
    return Header(host=host, run_id=line.text("run_id"), started=line.time("started"),
                  lock_mode=line.text("lock_mode", False),
                  retain_until=line.time("retain_until"), tier=line.text("tier"),
                  tool=line.text("tool", False, ""),
                  legal_hold=line.get("legal_hold", bool, False, False),
                  chunker=line.small_object("chunker"), format=fmt)


def decode_pack(line: _Line, expected_id: int, format2: bool = False) -> PackRef:
    pack = PackRef(id=line.nat("id"), key=line.text("key"),
                   version_id=line.text("version_id"), size=line.nat("size"),
                   locked_until=line.time("locked_until") if "locked_until" in line.obj else None,
                   lock_mode=line.text("lock_mode", False))
    if pack.lock_mode not in (None, "GOVERNANCE", "COMPLIANCE"):
        raise line.fail(f"unknown lock mode {pack.lock_mode[:20]!r}")
    if pack.id != expected_id:
        raise line.fail(f"pack ids must count up from 0 (expected {expected_id})")
    format1_key = _PACK_KEY.fullmatch(pack.key) and pack.key[6:8] == pack.key[9:11]
    if not (format1_key or (format2 and pack2.is_pack2_key(pack.key))):
        raise line.fail(f"bad pack key {pack.key[:100]!r}")
    return pack


def decode_snapshot(line: _Line, packs: list[PackRef], overhead: int = 0) -> Snapshot:
    limits = line.limits
    name = line.text("name", limit=limits.snapshot_name_chars)
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise line.fail(f"bad snapshot name {name!r}")
    duration = float(line.get("duration_s", (int, float)))
    if not math.isfinite(duration):
        raise line.fail("field 'duration_s' is not a finite number")
    exit_status = line.get("exit_status", int, False)
    if exit_status is not None and not -1024 <= exit_status <= 1024:
        raise line.fail("field 'exit_status' is out of range")
    snap = Snapshot(name=name, status=line.text("status"), exit_status=exit_status,
                    size=line.nat("size"), started=line.time("started"), duration_s=duration,
                    description=line.text("description", False, "",
                                          limit=limits.description_chars),
                    restore_through=line.text("restore_through", False,
                                              limit=limits.command_chars),
                    chunks=_decode_chunks(line, line.get("chunks", list), packs, overhead))
    if sum(c.size for c in snap.chunks) != snap.size:
        raise line.fail("snapshot chunks do not add up to its size")
    return snap


def decode_trailer(line: _Line) -> Trailer:
    limits = line.limits
    raw = line.get("warnings", list, False, [])
    if len(raw) > limits.warnings:
        raise line.fail(f"more than {limits.warnings} warnings")
    warnings = []
    for item in raw:
        sub = _Line(item, line.number, line.where, limits)
        warnings.append(Warning_(source=sub.text("source"),
                                 message=sub.text("message", limit=limits.warning_chars),
                                 path=sub.bytes_field("path", limits.path_bytes,
                                                      required=False)))
    return Trailer(finished=line.time("finished"), counts=line.small_object("counts"),
                   stats=line.small_object("stats"), warnings=warnings)


_BLOCK = 1 << 20


def _plain_stream(blob: bytes) -> Any:
    """The decompressed bytes of every frame of ``blob`` (``zstdcat`` reads them all)."""
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True)


def _scan(blob: bytes, where: str, limits: ManifestLimits) -> None:
    """Check the sizes of a manifest in one streaming pass, holding one block at a time.

    Refuses, without buffering a line or allocating anything per line: a
    compressed or decompressed size, a line or a number of lines over the
    limits.  Runs before any JSON is parsed, so a bomb costs a bounded read.
    """
    if len(blob) > limits.stored_bytes:
        raise ManifestError(f"{where}: manifest is larger than {limits.stored_bytes} bytes "
                            "(compressed)")
    block_size = max(1, min(_BLOCK, limits.line_bytes))
    total = newlines = current = 0
    try:
        with _plain_stream(blob) as reader:
            while block := reader.read(block_size):
                total += len(block)
                if total > limits.plain_bytes:
                    raise ManifestError(f"{where}: manifest decompresses to more than "
                                        f"{limits.plain_bytes} bytes")
                first = block.find(b"\n")
                if first < 0:
                    current += len(block)
                else:
                    current += first
                    if current > limits.line_bytes:
                        break
                    newlines += block.count(b"\n")
                    current = len(block) - block.rfind(b"\n") - 1
                if current > limits.line_bytes:
                    break
                if newlines > limits.lines + limits.blank_lines:
                    raise ManifestError(f"{where}: manifest has more than {limits.lines} lines")
    except zstandard.ZstdError as err:
        raise ManifestError(f"{where}: not a zstd stream: {err}") from None
    if current > limits.line_bytes:
        raise ManifestError(f"{where}: line {newlines + 1} is longer than "
                            f"{limits.line_bytes} bytes")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_JSON = json.JSONDecoder(parse_constant=_reject_constant)  # one, not one per line


def iter_lines(blob: bytes, where: str, limits: ManifestLimits = LIMITS) -> Iterator[_Line]:
    """The manifest's non-empty lines, parsed; every size limit checked first."""
    _scan(blob, where, limits)
    blanks = count = 0
    try:
        with _plain_stream(blob) as reader:
            # the scan bounded every line of these very bytes: iterating buffers no more
            for number, raw in enumerate(io.BufferedReader(reader, buffer_size=_BLOCK), 1):
                if not raw.strip():
                    blanks += 1
                    if blanks > limits.blank_lines:
                        raise ManifestError(f"{where}: more than {limits.blank_lines} "
                                            "empty lines")
                    continue
                count += 1
                if count > limits.lines:
                    raise ManifestError(f"{where}: manifest has more than {limits.lines} "
                                        "lines")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ManifestError(f"{where}: line {number}: not valid UTF-8") from None
                try:
                    obj = _JSON.decode(text)
                except json.JSONDecodeError as err:
                    raise ManifestError(f"{where}: line {number}: not JSON: {err.msg}") from None
                except (ValueError, RecursionError) as err:  # huge numbers, deep nesting
                    raise ManifestError(f"{where}: line {number}: not acceptable JSON: "
                                        f"{str(err)[:100]}") from None
                yield _Line(obj, number, where, limits)
    except zstandard.ZstdError as err:
        raise ManifestError(f"{where}: not a zstd stream: {err}") from None


def decode_manifest(blob: bytes, where: str = "manifest",
                    limits: ManifestLimits = LIMITS) -> Manifest:
    """Parse and validate a whole manifest (docs/FORMAT.md, section 6)."""
    lines = iter_lines(blob, where, limits)
    first = next(lines, None)
    if first is None:
        raise ManifestError(f"{where}: empty manifest")
    header = decode_header(first)
    packs: list[PackRef] = []
    entries: list[Entry] = []
    snapshots: list[Snapshot] = []
    trailer: Trailer | None = None
    last_path: bytes | None = None
    parents = _Parents()
    files: set[bytes] = set()
    section = "pack"
    order = {"pack": 0, "entry": 1, "snapshot": 2, "trailer": 3}
    for line in lines:
        kind = line.text("type")
        if kind not in order or kind == "header":
            raise line.fail(f"unexpected line type {kind[:20]!r}")
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
                raise line.fail(f"duplicate or unsorted path {entry.path[:200]!r}")
            parents.check(line, entry)
            if entry.kind == HARDLINK and entry.target not in files:
                raise line.fail(f"hardlink to {entry.target[:200]!r}, which is no earlier file")
            if entry.kind == FILE:
                files.add(entry.path)
            last_path = entry.path
            entries.append(entry)
        elif kind == "snapshot":
            if len(snapshots) >= limits.snapshots:
                raise line.fail(f"more than {limits.snapshots} snapshots")
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


class _Parents:
    """The chain of recorded ancestors of the current entry (path order makes it a stack).

    Every entry below a recorded path must be below a ``dir`` entry: nothing
    lies below a symlink, a file or a device, and ``/`` is a directory.
    """

    def __init__(self) -> None:
        self._stack: list[tuple[bytes, str]] = []

    def check(self, line: _Line, entry: Entry) -> None:
        if entry.path == b"/" and entry.kind != DIR:
            raise line.fail(f"'/' is a {entry.kind}, not a directory")
        while self._stack and not _is_below(entry.path, self._stack[-1][0]):
            self._stack.pop()
        if self._stack:
            parent, kind = self._stack[-1]
            if kind == SYMLINK:
                raise line.fail(f"{entry.path[:200]!r} lies below the symlink {parent[:200]!r}")
            if kind != DIR:
                raise line.fail(f"{entry.path[:200]!r} lies below {parent[:200]!r}, which is a "
                                f"{kind}, not a directory")
        self._stack.append((entry.path, entry.kind))


def _is_below(path: bytes, parent: bytes) -> bool:
    return parent == b"/" or path.startswith(parent + b"/")


def entry_sort_key(path: bytes) -> tuple[bytes, ...]:
    return _sort_key(path)
