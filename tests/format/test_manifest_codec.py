"""The manifest codec: exact round trip, strict refusal of malformed input."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest
import zstandard

from s3archive.errors import ManifestError
from s3archive.format.manifest_codec import decode_manifest, encode_manifest
from s3archive.format.model import (ChunkRef, Entry, Header, Manifest, PackRef, Snapshot,
                                      Trailer, Warning_)

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
HASH = "ab" * 32


def sample() -> Manifest:
    chunk = ChunkRef(HASH, 10, 0, 0, 7, "zstd")
    return Manifest(
        header=Header(host="h", run_id="20261121T120000Z", started=T0, lock_mode="GOVERNANCE",
                      retain_until=T0, tier="daily", tool="s3archive test"),
        packs=[PackRef(0, "packs/ab/" + HASH, "v1", 100, T0, "COMPLIANCE")],
        entries=[
            Entry(path=b"/", kind="dir", mode=0o755, uid=0, gid=0, mtime_ns=1),
            Entry(path=b"/caf\xe9", kind="file", mode=0o4755, uid=1, gid=2, mtime_ns=-5,
                  size=10, chunks=[chunk], xattrs={"user.x": b"\x00"}, ino=7, ctime_ns=9,
                  acl_access="u::rw-,u:1000:r--,g::r--,m::r--,o::---"),
            Entry(path=b"/caf\xe9-link", kind="hardlink", mode=0o4755, uid=1, gid=2,
                  mtime_ns=-5, target=b"/caf\xe9"),
            Entry(path=b"/dev", kind="chardev", mode=0o600, uid=0, gid=0, mtime_ns=0,
                  rdev=(1, 3)),
            Entry(path=b"/sparse", kind="file", mode=0o644, uid=0, gid=0, mtime_ns=0,
                  size=1 << 30, extents=[(5, 10)], chunks=[chunk]),
        ],
        snapshots=[Snapshot(name="db", status="ok", exit_status=0, size=10, started=T0,
                            duration_s=1.5, description="d", restore_through="cat",
                            chunks=[chunk])],
        trailer=Trailer(finished=T0, counts={"files": 2}, stats={"bytes_read": 10},
                        warnings=[Warning_("file", "odd", b"/\xff")]))


def lines_of(blob: bytes) -> list[dict]:
    text = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read().decode()
    return [json.loads(line) for line in text.splitlines()]


def blob_of(lines: list[dict]) -> bytes:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    return zstandard.ZstdCompressor().compress(text.encode())


def test_round_trip_is_exact() -> None:
    manifest = sample()
    assert decode_manifest(encode_manifest(manifest)) == manifest


def test_paths_that_are_not_utf8_use_base64() -> None:
    lines = lines_of(encode_manifest(sample()))
    entry = next(line for line in lines if line.get("kind") == "hardlink")
    assert "path_b64" in entry and "target_b64" in entry and "path" not in entry


def mutate(edit) -> bytes:
    lines = lines_of(encode_manifest(sample()))
    edit(lines)
    return blob_of(lines)


def entry(lines: list[dict], kind: str) -> dict:
    return next(line for line in lines if line.get("kind") == kind)


@pytest.mark.parametrize("edit, reason", [
    (lambda ls: entry(ls, "chardev").update(mode="0o755"), "not 3 or 4 octal digits"),
    (lambda ls: entry(ls, "chardev").pop("rdev"), "rdev must be [major, minor]"),
    (lambda ls: entry(ls, "chardev").update(rdev=[True, 3]), "rdev must be [major, minor]"),
    (lambda ls: ls[1].update(key=ls[1]["key"] + "\n"), "bad pack key"),
    (lambda ls: entry(ls, "file")["chunks"][0].__setitem__(3, 95), "beyond the end of pack 0"),
    (lambda ls: entry(ls, "file")["chunks"][0].__setitem__(0, HASH + "\n"), "malformed chunk"),
    (lambda ls: entry(ls, "file")["chunks"][0].__setitem__(2, 1), "not in the pack table"),
    (lambda ls: entry(ls, "file").update(size=11), "chunks hold 10 bytes, the file needs 11"),
    (lambda ls: ls.pop(), "truncated: no trailer"),
    (lambda ls: ls[0].update(format=2), "unsupported manifest format 2"),
    (lambda ls: ls.insert(2, dict(ls[2])), "duplicate or unsorted path"),
])
def test_malformed_manifests_are_refused(edit, reason: str) -> None:
    with pytest.raises(ManifestError, match=None) as caught:
        decode_manifest(mutate(edit), where="runs/h/x.jsonl.zst")
    assert reason in str(caught.value)
    assert str(caught.value).startswith("runs/h/x.jsonl.zst: ")


def parented(parent: dict, child_path: str = "/p/child") -> bytes:
    def edit(lines: list[dict]) -> None:
        header, pack, root = lines[0], lines[1], lines[2]
        child = {"type": "entry", "path": child_path, "kind": "dir", "mode": "0755",
                 "uid": 0, "gid": 0, "mtime_ns": 0}
        lines[:] = [header, pack, root, parent, child, lines[-1]]
    return mutate(edit)


@pytest.mark.parametrize("parent, reason", [
    ({"kind": "file", "size": 0, "chunks": []}, "lies below b'/p', which is a file"),
    ({"kind": "fifo"}, "lies below b'/p', which is a fifo"),
    ({"kind": "chardev", "rdev": [1, 3]}, "lies below b'/p', which is a chardev"),
    ({"kind": "symlink", "target": "/etc"}, "lies below the symlink b'/p'"),
])
def test_an_entry_below_a_non_directory_is_refused(parent: dict, reason: str) -> None:
    """Issue 9, defect 3: a kind that conflicts with being a parent."""
    line = {"type": "entry", "path": "/p", "mode": "0644", "uid": 0, "gid": 0, "mtime_ns": 0,
            **parent}
    with pytest.raises(ManifestError) as caught:
        decode_manifest(parented(line), where="m")
    assert str(caught.value) == f"m: line 5: b'/p/child' {reason}, not a directory" \
        if "symlink" not in reason else f"m: line 5: b'/p/child' {reason}"
    # deeper below it, after a directory in between, too
    with pytest.raises(ManifestError, match="lies below"):
        decode_manifest(parented(line, "/p/child/grandchild"), where="m")


def test_siblings_after_a_file_are_fine() -> None:
    line = {"type": "entry", "path": "/p", "kind": "fifo", "mode": "0644", "uid": 0, "gid": 0,
            "mtime_ns": 0}
    manifest = decode_manifest(parented(line, "/p-sibling"))
    assert [e.path for e in manifest.entries] == [b"/", b"/p", b"/p-sibling"]


def test_a_root_that_is_not_a_directory_is_refused() -> None:
    def edit(lines: list[dict]) -> None:
        lines[2].update(kind="fifo")
    with pytest.raises(ManifestError, match="line 3: '/' is a fifo, not a directory"):
        decode_manifest(mutate(edit))


def test_a_manifest_of_several_zstd_frames_is_read_whole() -> None:
    """FORMAT 5.1: a reader MUST accept several frames, as zstdcat does."""
    lines = lines_of(encode_manifest(sample()))
    head, tail = blob_of(lines[:3]), blob_of(lines[3:])
    assert decode_manifest(head + tail) == sample()
