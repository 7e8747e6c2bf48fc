"""The group index: what the hosts of one dedup group store (docs/FORMAT.md part 2, 16).

Every committed run of a sharing host writes one small object per part under
``index/<group-dir>/<day>/``: the packs of its table with the locks it made
sure of, and the blobs of the data packs it uploaded.  Before each run a host
lists the days since its cursor (O(1) list requests a day, whatever the
number of hosts), GETs the objects it has not read, checks each as untrusted
input and enters packs and blobs into its local cache (SQLite: memory is
bounded by one part).  Its chunk writer then reuses what another host
uploaded exactly as its own, and its pack lease extends the lock.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

import zstandard

from s3archive.archive.local_cache import UNLOCKED_UNTIL, CachedPack, LocalCache
from s3archive.archive.packer import ChunkLocation
from s3archive.clock import isoformat, parse_iso
from s3archive.crypto import primitives
from s3archive.crypto.dedup import DedupSecret, derive
from s3archive.errors import S3ArchiveError
from s3archive.format import pack2
from s3archive.format.model import PackRef
from s3archive.format.run_id import RUN_ID
from s3archive.repo.catalog import INDEX_PREFIX
from s3archive.store.base import ObjectLock, StoreReader, StoreWriter

log = logging.getLogger(__name__)

LABEL = b"s3archive/v2/group-index"
VERSION = 1
MAX_OBJECT = 64 << 20  # stored bytes of one object (listed size, checked before the GET)
MAX_PLAIN = 256 << 20  # decompressed bytes of one object
MAX_LINE = 4096
BLOBS_PER_PART = 262_144  # a writer starts a new part beyond this (a pack is never split)
MAX_BLOBS = 1_048_576  # a reader's bound per object: one pack's (pack2) at most
MAX_PACK_SIZE = 1 << 30
MAX_BLOB = 8 << 20
_NONCE = 12
_DAY = "%Y%m%d"
_WRITTEN = "%Y%m%dT%H%M%SZ"
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
# hosts' clocks are checked against the store's (the clock check allows minutes): an
# object is named at most this far from the time it becomes visible to a listing
CLOCK_MARGIN = timedelta(hours=1)
_BLOCK = 1 << 20  # decompressed bytes decoded at once
_SPOOL_BLOCK = 1 << 20  # spooled blob lines read and rewritten at once
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PART = re.compile(r"-(?P<run>" + RUN_ID.pattern + r")-p\d+\.idx")


class GroupIndexInvalid(ValueError):
    """A group index object that fails a check: skipped whole."""


def for_host(store: StoreReader, host: str, group: str | None,
             secret: DedupSecret | None) -> "GroupIndex | None":
    """The group index of a host (``[dedup] group``; an encrypting host's group is
    its dedup secret's), or None when it shares nothing."""
    directory = group_dir(group, secret)
    return GroupIndex(store, directory, host, secret) if directory is not None else None


def group_dir(group: str | None, secret: DedupSecret | None) -> str | None:
    """Where a host's group keeps its index; None: the host shares nothing."""
    if group is None:
        return None
    if secret is not None:
        return f"sealed-{secret.dedup_id}"
    return f"plain-{group}"


@dataclass(frozen=True)
class LearnReport:
    listed: int = 0  # list requests made
    objects: int = 0  # objects read and learned
    skipped: int = 0  # objects refused as invalid
    packs: int = 0
    blobs: int = 0


@dataclass
class GroupIndex:
    """One host's view of its dedup group's index objects."""

    store: StoreReader
    directory: str  # group_dir(...)
    host: str
    secret: DedupSecret | None = None  # an encrypted group: objects sealed with K_group
    _key: bytes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.secret is not None:
            self._key = derive(self.secret.secret, LABEL)

    @property
    def prefix(self) -> str:
        return f"{INDEX_PREFIX}{self.directory}/"

    def object_key(self, written: datetime, run_id: str, part: int) -> str:
        stamp = written.strftime(_WRITTEN)
        return f"{self.prefix}{stamp[:8]}/{stamp}-{self.host}-{run_id}-p{part}.idx"

    def _is_own(self, key: str) -> bool:
        name = key.rsplit("/", 1)[-1]
        rest = name[len("YYYYMMDDTHHMMSSZ-"):]
        return rest.startswith(self.host + "-") and \
            _PART.fullmatch(rest[len(self.host):]) is not None

    # ------------------------------------------------------------ writing
    def publish(self, store: StoreWriter, run_id: str, written: datetime,
                table: list[PackRef], uploaded: "UploadedBlobs", lock: ObjectLock | None
                ) -> list[str]:
        """PUT the run's index objects; returns their keys.  The blobs are those of the
        data packs the run uploaded and references (``uploaded``, spooled on disk)."""
        refs = {ref.key: ref for ref in table}
        parts: list[list[str]] = [[]]
        counts: list[int] = [0]
        for key, rows in uploaded.counts.items():
            if key not in refs:  # uploaded, then not referenced (rewritten, a restart)
                continue
            if counts[-1] and counts[-1] + rows > BLOBS_PER_PART:
                parts.append([])
                counts.append(0)
            parts[-1].append(key)
            counts[-1] += rows
        keys = []
        for number, packs in enumerate(parts):
            listed = [ref.key for ref in table if ref.key.startswith("data/")] \
                if number == 0 else packs
            body = self._encode(run_id, written, number, [refs[k] for k in listed],
                                set(packs), uploaded)
            key = self.object_key(written, run_id, number)
            store.put(key, self._seal(key, body), lock)
            keys.append(key)
        return keys

    def _encode(self, run_id: str, written: datetime, part: int, packs: list[PackRef],
                with_blobs: set[str], uploaded: "UploadedBlobs") -> bytes:
        out = io.BytesIO()
        # level 1: lines of hex ids pack as small as at 6 (20,000 blobs: 868 kB at 1,
        # 904 at 6) at a quarter of the CPU
        with zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False) as z:
            header = {"type": "group_index", "version": VERSION, "host": self.host,
                      "run_id": run_id, "written": isoformat(written), "part": part}
            z.write(_line(header))
            numbers: dict[str, int] = {}
            for ref in packs:
                numbers[ref.key] = len(numbers)
                z.write(_line(["P", numbers[ref.key], ref.key, ref.version_id, ref.size,
                               ref.lock_mode,
                               isoformat(ref.locked_until) if ref.locked_until else None]))
            for block in uploaded.blob_blocks({key: number for key, number in numbers.items()
                                               if key in with_blobs}):
                z.write(block)
        return out.getvalue()

    def _seal(self, key: str, body: bytes) -> bytes:
        if self._key is None:
            return body
        nonce = os.urandom(_NONCE)
        return nonce + primitives.ChaCha20Poly1305(self._key).encrypt(nonce, body, _aad(key))

    def _open(self, key: str, body: bytes) -> bytes:
        if self._key is None:
            return body
        try:
            return primitives.ChaCha20Poly1305(self._key).decrypt(body[:_NONCE], body[_NONCE:],
                                                                  _aad(key))
        except primitives.InvalidTag:
            raise GroupIndexInvalid("does not open with this group's dedup secret") from None

    # ------------------------------------------------------------ learning
    def refresh(self, cache: LocalCache, now: datetime, locked: bool) -> LearnReport:
        """Learn the objects written since the cursor (16.3)."""
        cursor_name = f"group-index-cursor:{self.directory}"
        cursor = cache.get_meta(cursor_name)
        listed = 0
        found: list[tuple[str, int]] = []
        if cursor is None:
            found += [(e.key, e.size) for e in self.store.list_keys(self.prefix)]
            listed += 1
        else:
            day = datetime.strptime(cursor, _DAY).replace(tzinfo=now.tzinfo)
            last = (now + CLOCK_MARGIN).strftime(_DAY)
            while day.strftime(_DAY) <= last:
                found += [(e.key, e.size)
                          for e in self.store.list_keys(f"{self.prefix}{day.strftime(_DAY)}/")]
                listed += 1
                day += timedelta(days=1)
        seen = cache.group_seen(k for k, _ in found)
        objects = skipped = packs = blobs = 0
        for key, size in found:
            day = key[len(self.prefix):].split("/", 1)[0]
            if key in seen or not key.endswith(".idx") or not re.fullmatch(r"\d{8}", day):
                continue
            if not self._is_own(key):
                try:
                    learned = self._learn(key, size, cache, locked)
                except (GroupIndexInvalid, S3ArchiveError) as err:
                    log.warning("group index object %s is unusable (%s): nothing of it is "
                                "reused", key, err)
                    skipped += 1
                else:
                    objects += 1
                    packs += learned[0]
                    blobs += learned[1]
            cache.add_group_seen(key, day)
        # every object named before now - CLOCK_MARGIN is visible: the next refresh starts
        # at that day (and keys seen of it are skipped)
        cursor = (now - CLOCK_MARGIN).strftime(_DAY)
        cache.set_meta(cursor_name, cursor)
        cache.forget_group_seen_before(cursor)
        return LearnReport(listed, objects, skipped, packs, blobs)

    def _learn(self, key: str, size: int, cache: LocalCache, locked: bool) -> tuple[int, int]:
        if size > MAX_OBJECT:
            raise GroupIndexInvalid(f"{size} bytes, more than {MAX_OBJECT}")
        body = self._open(key, self.store.get(key))
        # first pass: check every line; second: enter them (nothing of a bad object is learned)
        uploader = _check(_lines(body), tag=16 if self._key is not None else 0)
        cache.begin()
        try:
            return _enter(_lines(body), uploader, cache, locked)
        finally:
            cache.commit()


class UploadedBlobs:
    """The blobs of the data packs a run uploads, spooled to a temporary file as each
    pack is stored (from the upload threads); memory: one count and one byte range
    per pack."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="s3archive-group-index-")
        self._lock = threading.Lock()
        self._end = 0
        # each add's lines, in the order written: (pack key, first byte, end)
        self._ranges: list[tuple[str, int, int]] = []
        self.counts: dict[str, int] = {}

    def add(self, pack: str, rows: list[ChunkLocation]) -> None:
        if not (pack.isascii() and pack.isprintable()) or '"' in pack or "\\" in pack:
            # (its line starts with the key as json.dumps writes it: blob_blocks swaps it)
            raise ValueError(f"pack key {pack!r}: not a key this writer makes")
        prefix = b'["' + pack.encode("ascii") + b'","'
        lines = b"".join(
            # _line's bytes, written directly: an id and an encoding are hex and a name
            (prefix + b'%s",%d,%d,%d,"%s"]\n' % (r.hash.encode("ascii"), r.offset, r.stored,
                                                  r.size, r.encoding.encode("ascii"))
             if r.hash.isalnum() and r.encoding.isalnum() and r.hash.isascii()
             and r.encoding.isascii() and type(r.offset) is int and type(r.stored) is int
             and type(r.size) is int
             else _line([pack, r.hash, r.offset, r.stored, r.size, r.encoding]))
            for r in rows)
        with self._lock:
            self._file.write(lines)
            self._ranges.append((pack, self._end, self._end + len(lines)))
            self._end += len(lines)
            self.counts[pack] = self.counts.get(pack, 0) + len(rows)

    def blob_blocks(self, numbers: dict[str, int]) -> Iterator[bytes]:
        """The ``B`` lines of every blob in a pack of ``numbers`` (pack key -> its number
        in the object), a block of whole lines at a time: the spooled lines with their
        pack's key replaced by ``"B",N`` — the bytes ``_line(["B", N, hash, offset,
        stored, size, encoding])`` gives for each — one bytes.replace a block (a
        pack's lines are spooled together; a line at a time was most of a 1M-file
        initial run's last seconds)."""
        with self._lock:
            self._file.flush()
            fd = self._file.fileno()
            for pack, start, end in self._ranges:
                number = numbers.get(pack)
                if number is None:
                    continue
                old = b'\n["' + pack.encode("ascii") + b'",'
                new = b'\n["B",%d,' % number
                rest = b""
                while start < end:
                    piece = rest + os.pread(fd, min(_SPOOL_BLOCK, end - start), start)
                    start += len(piece) - len(rest)
                    cut = piece.rfind(b"\n") + 1 if start < end else len(piece)
                    block, rest = piece[:cut], piece[cut:]
                    if not block:
                        continue
                    lines = block.count(b"\n")
                    swapped = (b"\n" + block).replace(old, new)
                    if len(swapped) != len(block) + 1 + lines * (len(new) - len(old)):
                        raise AssertionError(f"blob lines of {pack} spooled unlike written")
                    yield swapped[1:]

    def close(self) -> None:
        self._file.close()


def _line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def _aad(key: str) -> bytes:
    return LABEL + b"\x00" + key.encode()


def _lines(body: bytes) -> Iterator[Any]:
    """The decoded lines of an object, checked for length; decoded a block of lines at a
    time (one ``json.loads`` of up to :data:`_BLOCK` bytes: a call a line cost 4x more)."""
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body),
                                                            read_across_frames=True)
        total = 0
        rest = b""
        while True:
            piece = reader.read(_BLOCK)
            total += len(piece)
            if total > MAX_PLAIN:
                raise GroupIndexInvalid(f"more than {MAX_PLAIN} bytes decompressed")
            if not piece:
                if rest:
                    raise GroupIndexInvalid("a truncated last line")
                return
            lines = (rest + piece).split(b"\n")
            rest = lines.pop()
            if len(rest) > MAX_LINE or (lines and max(map(len, lines)) >= MAX_LINE):
                raise GroupIndexInvalid("a line longer than 4 KiB")
            if lines:
                try:
                    decoded = json.loads(b"[" + b",".join(lines) + b"]")
                except ValueError:
                    raise GroupIndexInvalid("a line is not JSON") from None
                if len(decoded) != len(lines):  # a line of two values ("1,2")
                    raise GroupIndexInvalid("a line is not one JSON value")
                yield from decoded
    except zstandard.ZstdError as err:
        raise GroupIndexInvalid(f"not zstd: {err}") from None


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check(lines: Iterator[Any], tag: int) -> str:
    """Check every line of one object; returns its host.  ``tag``: the bytes sealing
    adds to a blob (16 in an encrypted group, 5.5)."""
    header = next(lines, None)
    if not isinstance(header, dict) or header.get("type") != "group_index" \
            or header.get("version") != VERSION or not isinstance(header.get("host"), str):
        raise GroupIndexInvalid("no group index header of version 1")
    sizes: dict[int, int] = {}
    blobs = 0
    for line in lines:
        if not isinstance(line, list) or not line:
            raise GroupIndexInvalid("a line is not a P or B line")
        if line[0] == "P" and len(line) == 7:
            _, n, key, version, size, mode, until = line
            if not _is_int(n, 0, MAX_BLOBS) or n in sizes or n != len(sizes):
                raise GroupIndexInvalid(f"pack number {n!r} out of order")
            if not isinstance(key, str) or not key.startswith("data/") or \
                    not pack2.is_pack2_key(key):
                raise GroupIndexInvalid(f"{key!r} is not a data pack key")
            if not isinstance(version, str) or not 0 < len(version) <= 1024 \
                    or not _is_int(size, 45, MAX_PACK_SIZE):
                raise GroupIndexInvalid(f"{key}: bad version or size")
            if (mode is None) != (until is None) or (mode is not None and mode not in LOCK_MODES):
                raise GroupIndexInvalid(f"{key}: bad lock {mode!r}")
            if until is not None:
                try:
                    parse_iso(until)
                except (TypeError, ValueError):
                    raise GroupIndexInvalid(f"{key}: bad locked_until {until!r}") from None
            sizes[n] = size
        elif line[0] == "B" and len(line) == 7:
            # the common line: plain type checks (``type(x) is int`` refuses bools)
            _, n, digest, offset, stored, plain, encoding = line
            size = sizes.get(n) if type(n) is int else None
            if size is None:
                raise GroupIndexInvalid(f"a blob in undeclared pack {n!r}")
            if type(digest) is not str or _HEX64.fullmatch(digest) is None:
                raise GroupIndexInvalid(f"bad blob id {digest!r}")
            if not (type(stored) is int and type(plain) is int and type(offset) is int
                    and 1 <= stored <= MAX_BLOB and 0 <= plain <= MAX_BLOB
                    and (encoding == "zstd" or (encoding == "raw" and stored == plain + tag))
                    and 29 <= offset and offset + stored <= size - 16):
                raise GroupIndexInvalid(f"blob {digest}: bad place or length")
            blobs += 1
            if blobs > MAX_BLOBS:
                raise GroupIndexInvalid(f"more than {MAX_BLOBS} blobs")
        else:
            raise GroupIndexInvalid("a line is not a P or B line")
    return header["host"]


def _enter(lines: Iterator[Any], uploader: str, cache: LocalCache,
           locked: bool) -> tuple[int, int]:
    """Enter a checked object, streaming: its packs (a pack only leased by the run
    updates the lock of a pack the cache knows), then their blobs in batches, never
    replacing a location the cache has.  Memory: one batch, whatever the object's size."""
    next(lines)
    packs: dict[int, CachedPack] = {}
    learning: dict[int, str | None] = {}  # pack number -> uploader to record, if learned
    batch: list[ChunkLocation] = []
    batch_pack = -1
    blobs = 0

    def flush() -> None:
        nonlocal batch
        if batch:
            cache.learn_group_pack(packs[batch_pack], learning[batch_pack], batch)
            batch = []

    def learn(n: int) -> bool:
        if n not in learning:
            known = cache.get_pack(packs[n].key)
            if known is not None and known.version_id != packs[n].version_id:
                return False  # another version of that key: keep what the cache knows
            learning[n] = uploader if known is None else None
        return True

    usable = False  # whether the blobs of pack ``batch_pack`` are learned
    for line in lines:
        if line[0] == "P":
            _, n, key, version, size, mode, until = line
            if until is None:
                if locked:  # the pack's lock is unknown: never count on it
                    continue
                when = UNLOCKED_UNTIL
            else:
                when = parse_iso(until)
            packs[n] = CachedPack(key, version, size, mode, when)
            continue
        _, n, digest, offset, stored, plain, encoding = line
        if n != batch_pack or len(batch) >= 10_000:
            flush()
            batch_pack = n
            usable = n in packs and learn(n)
        if usable:
            batch.append(ChunkLocation(digest, packs[n].key, offset, stored, plain, encoding))
            blobs += 1
    flush()
    for n, pack in packs.items():  # packs the run only leased: a newer lock, if known
        if n not in learning:
            known = cache.get_pack(pack.key)
            if known is not None and known.version_id == pack.version_id:
                cache.learn_group_pack(pack, None, [])
                learning[n] = None
    return len(learning), blobs


# ---------------------------------------------------------------- verifying
_NAME = re.compile(r"(?P<stamp>\d{8}T\d{6}Z)-(?P<host>.+)-(?P<run>" + RUN_ID.pattern +
                   r")-p(?P<part>\d+)\.idx")
_STRENGTH = {None: 0, "GOVERNANCE": 1, "COMPLIANCE": 2}
# the lock a pack version holds, as a HEAD says: (mode, retain-until), or None if unknown
LockOf = Callable[[PackRef], "tuple[str | None, datetime | None] | None"]


@dataclass(frozen=True)
class WrittenObject:
    """A group index object as listed, by the host and run its name says wrote it."""

    key: str
    size: int
    directory: str  # the group's (group_dir)
    host: str
    run_id: str
    part: int


def written_objects(store: StoreReader) -> dict[tuple[str, str], list[WrittenObject]]:
    """Every group index object of the bucket by (host, run id) of its name (one listing
    of ``index/``; keys of another shape are not a run's and are left out)."""
    found: dict[tuple[str, str], list[WrittenObject]] = {}
    for entry in store.list_keys(INDEX_PREFIX):
        parts = entry.key[len(INDEX_PREFIX):].split("/")
        name = _NAME.fullmatch(parts[-1])
        if len(parts) != 3 or name is None:
            continue
        written = WrittenObject(entry.key, entry.size, parts[0], name["host"], name["run"],
                                int(name["part"]))
        found.setdefault((written.host, written.run_id), []).append(written)
    return found


@dataclass
class ObjectAudit:
    """What one group index object claims that its run does not bear out."""

    problems: list[str] = field(default_factory=list)
    packs: list[PackRef] = field(default_factory=list)  # its P lines, numbered as in it
    blob_count: int = 0  # its B lines
    body: bytes = b""  # the object opened (compressed): its blobs are decoded again from it

    def blobs(self) -> Iterator[tuple[str, int, int, int, int, str]]:
        """(id, pack n, offset, stored, size, encoding) of its B lines, to be read with
        --read-data: decoded a block at a time, never listed whole (a part may name
        262,144 blobs)."""
        lines = _lines(self.body)
        next(lines, None)  # the header
        for line in lines:
            if line[0] != "P":
                yield line[2], line[1], line[3], line[4], line[5], line[6]


def audit_object(store: StoreReader, written: WrittenObject, secret: DedupSecret | None,
                 table: dict[str, PackRef], lock_of: LockOf) -> ObjectAudit:
    """Check one object a run wrote against the run (docs/FORMAT.md part 2, 16.6): it
    opens and is well formed (16.3), its header names the run of its key, every pack it
    names is a data pack of the run's table (same version and size), and the lock it
    claims for it is no later and no stronger than the pack holds (``lock_of``: the
    pack's mode and retain-until, as a HEAD says, or None if unknown).  Its blobs are
    returned for reading (their ids are checked only by reading them)."""
    audit = ObjectAudit()
    if written.directory.startswith("sealed-") and (
            secret is None or written.directory != f"sealed-{secret.dedup_id}"):
        audit.problems.append(f"{written.key}: sealed for dedup id "
                              f"{written.directory[len('sealed-'):]}, not the run's")
        return audit
    reader = GroupIndex(store, written.directory, written.host,
                        secret if written.directory.startswith("sealed-") else None)
    try:
        if written.size > MAX_OBJECT:
            raise GroupIndexInvalid(f"{written.size} bytes, more than {MAX_OBJECT}")
        body = reader._open(written.key, store.get(written.key))
        _check(_lines(body), tag=16 if reader._key is not None else 0)
        lines = _lines(body)
        header = next(lines)
    except GroupIndexInvalid as err:
        audit.problems.append(f"{written.key}: unusable ({err})")
        return audit
    for field_, expected in (("host", written.host), ("run_id", written.run_id),
                             ("part", written.part)):
        if header.get(field_) != expected:
            audit.problems.append(f"{written.key}: its header says {field_} "
                                  f"{header.get(field_)!r}, its name {expected!r}")
    for line in lines:
        if line[0] == "P":
            _, n, key, version, size, mode, until = line
            claimed = PackRef(n, key, version, size,
                              parse_iso(until) if until is not None else None, mode)
            audit.packs.append(claimed)
            ours = table.get(key)
            if ours is None or ours.version_id != version or ours.size != size:
                audit.problems.append(f"{written.key}: names pack {key}@{version} "
                                      f"({size} bytes), which its run does not reference")
                continue
            held = lock_of(ours)
            if held is not None and claimed.locked_until is not None and (
                    held[1] is None or held[1] < claimed.locked_until
                    or _STRENGTH.get(held[0], 0) < _STRENGTH.get(mode, 0)):
                audit.problems.append(
                    f"{written.key}: claims pack {key}@{version} locked in {mode} until "
                    f"{until}; it is locked in {held[0]} until "
                    f"{isoformat(held[1]) if held[1] is not None else 'never'}")
        else:
            audit.blob_count += 1
    audit.body = body
    return audit
