"""Fuzzing the manifest decoder: hostile bytes end in a result or one line, fast and small.

Issue 9 ("Must be true" 2, defect 4).  Every case must end in either a
manifest that the writer can write again, or a :class:`ManifestError` whose
message is one short line — never another exception, never unbounded time or
memory.  Seeded, so a failure reproduces; counts and bounds are stated here:

* ``CASES`` random mutations of a valid manifest (bytes flipped in the plain
  text and in the zstd stream, lines dropped, duplicated, swapped, truncated,
  fields given other types, huge numbers, deep and long paths): each under
  ``CASE_SECONDS``, all together under ``FUZZ_PEAK`` bytes of Python memory.
* crafted bombs against the real limits (format/limits.py): a zstd bomb, one
  3 GiB line (~100 KB compressed), 4 GiB of empty lines, 6 million tiny
  entries in ~5 MB, deep nesting, huge numbers, a 3 GiB chunk reference:
  each refused in under ``BOMB_SECONDS`` with a peak under ``BOMB_PEAK``.

Measured on the 2-core CI machine: the whole module takes about 6 s.
"""

from __future__ import annotations

import io
import json
import random
import re
import time
import tracemalloc
from datetime import datetime, timezone
from typing import Any, Callable

import pytest
import zstandard

from s3archive.errors import ManifestError
from s3archive.format.limits import LIMITS, ManifestLimits
from s3archive.format.manifest_codec import decode_manifest, encode_manifest
from s3archive.format.model import (ChunkRef, Entry, Header, Manifest, PackRef, Snapshot,
                                    Trailer, Warning_)

SEED = 20261129
CASES = 1500
MEASURED_EVERY = 10
CASE_SECONDS = 1.0
FUZZ_PEAK = 16 << 20
BOMB_SECONDS = 5.0
BOMB_PEAK = 32 << 20
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


def valid_manifest() -> Manifest:
    rng = random.Random(1)
    packs = [PackRef(i, f"packs/{h[:2]}/{h}", f"v{i}", 1 << 22, T0, "GOVERNANCE")
             for i, h in enumerate(f"{rng.getrandbits(256):064x}" for _ in range(3))]

    def chunk(n: int) -> ChunkRef:
        return ChunkRef(f"{rng.getrandbits(256):064x}", 1000 + n, n % 3, n * 2000, 900 + n,
                        "zstd")

    entries = [Entry(path=b"/", kind="dir", mode=0o755, uid=0, gid=0, mtime_ns=1)]
    for d in range(2):
        base = b"/d%d" % d
        entries.append(Entry(path=base, kind="dir", mode=0o750, uid=1, gid=1, mtime_ns=2,
                             user="u", group="g", acl_default="u::rwx,g::r-x,o::---"))
        for f in range(5):
            chunks = [chunk(d * 10 + f + k) for k in range(2)]
            entries.append(Entry(path=base + b"/f%d" % f, kind="file", mode=0o644, uid=1, gid=1,
                                 mtime_ns=-3, size=sum(c.size for c in chunks), chunks=chunks,
                                 xattrs={"user.k": b"\x00\xff"}, ino=f, ctime_ns=4))
        entries.append(Entry(path=base + b"/hl", kind="hardlink", mode=0o644, uid=1, gid=1,
                             mtime_ns=0, target=base + b"/f0"))
        entries.append(Entry(path=base + b"/link", kind="symlink", mode=0o777, uid=0, gid=0,
                             mtime_ns=0, target=b"../x\xff"))
        entries.append(Entry(path=base + b"/null", kind="chardev", mode=0o666, uid=0, gid=0,
                             mtime_ns=0, rdev=(1, 3)))
        entries.append(Entry(path=base + b"/sparse", kind="file", mode=0o600, uid=0, gid=0,
                             mtime_ns=0, size=1 << 30, extents=[(4096, 1000)],
                             chunks=[ChunkRef("ab" * 32, 1000, 0, 0, 1000, "raw")]))
    snapshots = [Snapshot(name=f"s{i}", status="ok", exit_status=0, size=1000 + i,
                          started=T0, duration_s=0.5, description="dump", restore_through="cat",
                          chunks=[chunk(i)]) for i in range(2)]
    return Manifest(
        header=Header(host="h", run_id="20261121T120000Z", started=T0, lock_mode="GOVERNANCE",
                      retain_until=T0, tier="daily", tool="fuzz",
                      chunker={"min": 1, "max": 2}),
        packs=packs, entries=entries, snapshots=snapshots,
        trailer=Trailer(finished=T0, counts={"files": 14}, stats={"bytes": 1},
                        warnings=[Warning_("file", "odd", b"/\xfe")]))


def compress(text: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=1).compress(text)


def plain_lines(blob: bytes) -> list[bytes]:
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read().splitlines(True)


# ------------------------------------------------------------------ random mutations

ODD_VALUES: list[Any] = [None, True, False, -1, 0, 2**63, 2**64 + 1, 10**4000, -(10**300), 1.5,
                         1e308, "", "x", "0644", "/", "\ud800", "a" * 5000, [], [1], {},
                         {"a": [None]}, [[[]]], "2026-11-21T12:00:00Z", "9999-12-31T23:59:59-23:59"]


def _json_edit(rng: random.Random, lines: list[bytes], edit: Callable[[Any], Any]) -> None:
    index = rng.randrange(len(lines))
    try:
        obj = json.loads(lines[index])
    except ValueError:
        return
    lines[index] = json.dumps(edit(obj), ensure_ascii=False).encode("utf-8",
                                                                     "surrogatepass") + b"\n"


def _change_field(rng: random.Random, obj: Any) -> Any:
    if isinstance(obj, dict) and obj:
        key = rng.choice(sorted(obj))
        if isinstance(obj[key], (dict, list)) and obj[key] and rng.random() < 0.5:
            obj[key] = _change_field(rng, obj[key])
        else:
            obj[key] = rng.choice(ODD_VALUES)
    elif isinstance(obj, list) and obj:
        i = rng.randrange(len(obj))
        if isinstance(obj[i], (dict, list)) and obj[i] and rng.random() < 0.5:
            obj[i] = _change_field(rng, obj[i])
        else:
            obj[i] = rng.choice(ODD_VALUES)
    return obj


def _odd_path(rng: random.Random, obj: Any) -> Any:
    if isinstance(obj, dict) and "path" in obj:
        obj["path"] = rng.choice([
            "/" + "/".join(["d"] * 3000),  # deep
            "/" + "x" * 300,  # a long component
            "/" + "/".join(["abcdefgh"] * 600),  # longer than PATH_MAX
            obj["path"] + "/..", obj["path"] + "//x", "relative", "/a\x00b", "/\ud800"])
    return obj


def mutation(rng: random.Random, good: bytes) -> bytes:
    lines = plain_lines(good)
    op = rng.randrange(10)
    if op == 0:  # bytes flipped in the plain text
        text = bytearray(b"".join(lines))
        for _ in range(rng.randint(1, 8)):
            text[rng.randrange(len(text))] = rng.choice([0, 10, 34, 44, 91, 123, 255,
                                                         rng.randrange(256)])
        return compress(bytes(text))
    if op == 1:  # bytes flipped in the zstd stream, or the stream cut short
        blob = bytearray(good)
        if rng.random() < 0.3:
            return bytes(blob[:rng.randrange(len(blob))])
        for _ in range(rng.randint(1, 4)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        return bytes(blob)
    if op == 2:
        del lines[rng.randrange(len(lines))]
    elif op == 3:
        i = rng.randrange(len(lines))
        lines.insert(rng.randrange(len(lines)), lines[i])
    elif op == 4:
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op in (5, 6, 7):
        for _ in range(rng.randint(1, 3)):
            _json_edit(rng, lines, lambda obj: _change_field(rng, obj))
    elif op == 8:
        _json_edit(rng, lines, lambda obj: _odd_path(rng, obj))
    else:
        i = rng.randrange(len(lines))
        lines[i] = rng.choice([b"\n" * rng.randint(1, 50), b"[" * 100_000 + b"\n",
                               b'{"type":"entry","size":' + b"9" * 5000 + b"}\n",
                               b"\xef\xbb\xbf" + lines[i], lines[i][:-1] + b" \r\n",
                               b"NaN\n", b'{"type":"pack","size":Infinity}\n'])
    return compress(b"".join(lines))


def check_outcome(blob: bytes, limits: ManifestLimits = LIMITS) -> str:
    """'ok' or 'refused'; anything else fails the test."""
    try:
        manifest = decode_manifest(blob, where="runs/h/x.jsonl.zst", limits=limits)
    except ManifestError as err:
        message = str(err)
        assert "\n" not in message and len(message) < 2000, message[:3000]
        assert message.startswith("runs/h/x.jsonl.zst: "), message
        return "refused"
    # a valid result is one the writer can write again, and it reads back the same
    again = decode_manifest(encode_manifest(manifest), limits=limits)
    assert decode_manifest(encode_manifest(again), limits=limits) == again
    return "ok"


def test_random_mutations_end_in_a_result_or_one_line() -> None:
    good = encode_manifest(valid_manifest())
    assert check_outcome(good) == "ok"
    rng = random.Random(SEED)
    outcomes = {"ok": 0, "refused": 0}
    slowest = peak = 0.0
    began = time.monotonic()
    for case in range(CASES):
        blob = mutation(rng, good)
        traced = case % MEASURED_EVERY == 0  # tracemalloc triples the time: a sample
        if traced:
            tracemalloc.start()
        start = time.monotonic()
        try:
            outcomes[check_outcome(blob)] += 1
        except Exception as err:  # name the reproducible case
            raise AssertionError(f"case {case} (seed {SEED}): {err!r}") from err
        finally:
            slowest = max(slowest, time.monotonic() - start)
            if traced:
                peak = max(peak, tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
    total = time.monotonic() - began
    assert slowest < CASE_SECONDS, slowest
    assert peak < FUZZ_PEAK, peak
    # the mutations reach both outcomes, mostly refusal
    assert outcomes["refused"] > CASES // 2 and outcomes["ok"] > 10, outcomes
    print(f"{CASES} cases in {total:.1f} s, slowest {slowest * 1000:.0f} ms, "
          f"peak {int(peak) >> 10} KiB, {outcomes}")


# ------------------------------------------------------------------ crafted bombs

HEADER = (b'{"type":"header","format":1,"host":"h","run_id":"r","started":"2026-11-21T12:00:00Z",'
          b'"retain_until":"2026-11-22T12:00:00Z","tier":"daily"}\n')


def frames(*parts: tuple[bytes, int]) -> bytes:
    """A multi-frame zstd stream: each (plain block, times) compressed once, repeated.

    A reader must accept several frames (``zstdcat`` does), so this is how a
    small object decompresses to gigabytes without the test compressing them.
    """
    out = []
    for block, times in parts:
        out.append(compress(block) * times)
    return b"".join(out)


def tiny_entries(millions: int) -> bytes:
    """``millions`` million distinct, sorted, valid fifo entries in a few MB."""
    template = b"".join(b'{"type":"entry","path":"/XX/%06d","kind":"fifo","mode":"0644",'
                        b'"uid":0,"gid":0,"mtime_ns":0}\n' % i for i in range(100_000))
    body = [compress(HEADER + b'{"type":"entry","path":"/","kind":"dir","mode":"0755",'
                     b'"uid":0,"gid":0,"mtime_ns":0}\n')]
    body += [compress(template.replace(b"/XX/", b"/%02d/" % k)) for k in range(millions * 10)]
    return b"".join(body)


BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    "zstd bomb: 8 GiB of zeros": (lambda: frames((HEADER, 1), (bytes(64 << 20), 128)),
                                  "line 2 is longer than 268435456 bytes"),
    "one 3 GiB line": (lambda: frames((HEADER, 1), (b"a" * (64 << 20), 48)),
                       "line 2 is longer than 268435456 bytes"),
    "4 GiB of empty lines": (lambda: frames((HEADER, 1), (b"\n" * (64 << 20), 64)),
                             "manifest has more than 5000000 lines"),
    "4 GiB of blank lines with spaces": (lambda: frames((HEADER, 1), (b" \n" * (32 << 20), 64)),
                                         "manifest has more than 5000000 lines"),
    "6 million tiny entries": (lambda: tiny_entries(6), "manifest has more than 5000000 lines"),
    "2000 empty lines": (lambda: frames((HEADER, 1), (b"\n", 2000)),
                         "more than 1024 empty lines"),
    "deep nesting": (lambda: frames((HEADER, 1), (b"[" * 1_000_000 + b"\n", 1)),
                     "line 2: not acceptable JSON"),
    "a number of 100,000 digits": (lambda: frames((HEADER, 1), (
        b'{"type":"pack","id":0,"size":' + b"7" * 100_000 + b"}\n", 1)),
        "line 2: not acceptable JSON"),
    "a 3 GiB chunk reference": (lambda: frames((HEADER + (
        b'{"type":"pack","id":0,"key":"packs/ab/' + b"ab" * 32 + b'","version_id":"v",'
        b'"size":4294967296}\n{"type":"entry","path":"/big","kind":"file","mode":"0644",'
        b'"uid":0,"gid":0,"mtime_ns":0,"size":3221225472,"chunks":[["' + b"cd" * 32 +
        b'",3221225472,0,0,3221225472,"raw"]]}\n'), 1)),
        "line 3: chunk is larger than the format's maximum of 8388608 bytes"),
    "not zstd at all": (lambda: b"PK\x03\x04" + bytes(100), "not a zstd stream"),
    "a zstd header and nothing": (lambda: b"\x28\xb5\x2f\xfd" + bytes(100), "empty manifest"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bombs_are_refused_fast_and_small(name: str) -> None:
    make, reason = BOMBS[name]
    blob = make()
    assert len(blob) < 8 << 20  # every bomb is a small object
    tracemalloc.start()
    try:
        began = time.monotonic()
        with pytest.raises(ManifestError) as caught:
            decode_manifest(blob, where="runs/h/bomb.jsonl.zst")
        seconds = time.monotonic() - began
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message.startswith("runs/h/bomb.jsonl.zst: ") and reason in message, message[:300]
    assert "\n" not in message and len(message) < 500
    assert seconds < BOMB_SECONDS, seconds
    assert peak < BOMB_PEAK + len(blob), peak
    print(f"{name}: {len(blob)} bytes refused in {seconds:.2f} s, peak {peak >> 10} KiB")


# ------------------------------------------------------------------ the limits themselves

@pytest.mark.parametrize("field, small, make, reason", [
    ("lines", 40, lambda n: n, "manifest has more than 40 lines"),
    ("plain_bytes", 10_000, lambda n: n, "decompresses to more than 10000 bytes"),
    ("stored_bytes", 500, lambda n: n, "larger than 500 bytes (compressed)"),
    ("line_bytes", 300, lambda n: n, "is longer than 300 bytes"),
])
def test_each_manifest_limit_is_exact(field: str, small: int, make: Callable[[int], int],
                                      reason: str) -> None:
    """A manifest right at a limit is legal; one byte or line more is refused."""
    good = encode_manifest(valid_manifest())
    lines = plain_lines(good)
    measure = {"lines": len(lines), "plain_bytes": sum(map(len, lines)),
               "stored_bytes": len(good), "line_bytes": max(len(x) - 1 for x in lines)}[field]
    assert decode_manifest(good, limits=ManifestLimits(**{field: measure}))
    with pytest.raises(ManifestError, match=re.escape(reason.replace(str(small), str(measure - 1)))):
        decode_manifest(good, limits=ManifestLimits(**{field: measure - 1}))


def test_the_chunker_cuts_within_the_format_maximum() -> None:
    from s3archive.archive.chunker import MAX_SIZE
    from s3archive.format.limits import MAX_CHUNK_SIZE
    assert MAX_SIZE <= MAX_CHUNK_SIZE


def test_the_writer_refuses_what_the_reader_would() -> None:
    from s3archive.format.manifest_codec import ManifestWriter
    writer = ManifestWriter(io.BytesIO(), limits=ManifestLimits(line_bytes=100, lines=3))
    writer.write({"type": "x"})
    with pytest.raises(ManifestError, match="more than a reader accepts"):
        writer.write({"type": "x" * 200})
    writer.write({"type": "y"})
    writer.write({"type": "z"})
    with pytest.raises(ManifestError, match="would exceed 3 lines"):
        writer.write({"type": "w"})
