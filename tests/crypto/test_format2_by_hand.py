"""docs/FORMAT.md part 2, section 13.5, steps 2-4, run by hand: a pack built to the
layout of section 3 with s3archive's primitives is opened with dd, od,
``age -d`` and the documented ``s3a2.py`` snippet (extracted from the doc),
and the snippet refuses a tampered blob."""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from s3archive.crypto import age, blob
from s3archive.crypto.dedup import DedupSecret, seal_dedup_secret
from s3archive.crypto.keys import Identity

PY = shlex.quote(sys.executable)  # the interpreter with cryptography installed
DOC = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("age", "zstd", "dd", "od")),
    reason="needs age, zstd, dd and od on PATH (Debian packages age, zstd, coreutils)")


def _snippet() -> str:
    match = re.search(r"```python\n(#!/usr/bin/env python3\n\"\"\"s3a2\.py.*?)```",
                      DOC.read_text(), re.DOTALL)
    assert match, "the s3a2.py snippet is missing from docs/FORMAT.md"
    return match[1]


def _build_pack(identity: Identity, secret: DedupSecret, blobs: list[tuple[bytes, bytes]]
                ) -> tuple[bytes, list[tuple[int, int, bytes, bytes, bytes]]]:
    """An encrypted pack per FORMAT.md part 2, 3.1 and 5.6: returns the body and, per blob,
    (offset, stored, kind, encoding, id)."""
    pack_id, pack_key = os.urandom(16), os.urandom(32)
    key_block = age.encrypt(pack_key, [identity.recipient()])
    head = b"s3apack2" + b"\x01" + pack_id + struct.pack(">I", len(key_block)) + key_block
    body, index, places = bytearray(head), bytearray(), []
    for kind, plain in blobs:
        packed = zstandard.ZstdCompressor(level=3).compress(plain)
        encoding, stored = (blob.ZSTD, packed) if len(packed) < len(plain) * 0.97 \
            else (blob.RAW, plain)
        blob_id = secret.blob_id(kind, plain)
        place = blob.BlobPlace(pack_id, len(body), kind, encoding, blob_id)
        sealed = blob.seal(pack_key, place, stored)
        places.append((len(body), len(sealed), kind, encoding, blob_id))
        index += kind + encoding + struct.pack(">I", len(sealed)) + blob_id
        body += sealed
    sealed_index = secret.seal_index(pack_id, bytes(index))
    body += sealed_index + struct.pack(">II", len(sealed_index), len(blobs)) + b"s3aidx2\n"
    return bytes(body), places


def test_a_pack_opens_by_hand_with_age_and_the_snippet(tmp_path: Path) -> None:
    rng = random.Random(5)
    identity, secret = Identity(rng.randbytes(32)), DedupSecret(rng.randbytes(32))
    (tmp_path / "restore.key").write_text(identity.file_text())
    (tmp_path / "dedup.age").write_bytes(seal_dedup_secret(secret, [identity.recipient()]))
    (tmp_path / "s3a2.py").write_text(_snippet())
    contents = [(blob.DATA, b"hello, world\n" * 300), (blob.DATA, rng.randbytes(5000)),
                (blob.TREE, b'{"node":"leaf","packs":[],"entries":[]}')]
    body, places = _build_pack(identity, secret, contents)
    (tmp_path / "pack").write_bytes(body)
    script = ["set -euo pipefail",
              "age -d -i restore.key dedup.age > dedup.bin",
              "L=$(head -c 29 pack | tail -c 4 | od -An -tu4 --endian=big | tr -d ' ')",
              "PACKID=$(head -c 25 pack | tail -c 16 | od -An -tx1 | tr -d ' \\n')",
              "dd if=pack of=block.age bs=1 skip=29 count=$L status=none",
              "age -d -i restore.key block.age > pack.key",
              "echo $PACKID"]
    for n, (offset, stored, kind, encoding, blob_id) in enumerate(places):
        enc = "zstd" if encoding == blob.ZSTD else "raw"
        decode = "zstd -q -d -c" if enc == "zstd" else "cat"
        script += [
            f"dd if=pack of=b{n}.sealed bs=1 skip={offset} count={stored} status=none",
            (f"{PY} s3a2.py open pack.key $PACKID {offset} {kind.decode()} {enc} "
             f"{blob_id.hex()} < b{n}.sealed > b{n}.stored"),
            f"{decode} < b{n}.stored > b{n}.plain",
            (f'test "$({PY} s3a2.py id dedup.bin {kind.decode()} < b{n}.plain)" = '
             f"{blob_id.hex()}")]
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dedup.bin").read_bytes() == secret.secret
    for n, (_, plain) in enumerate(contents):
        assert (tmp_path / f"b{n}.plain").read_bytes() == plain
    # one flipped bit in a sealed blob: the snippet refuses it, writes nothing
    sealed = bytearray((tmp_path / "b1.sealed").read_bytes())
    sealed[7] ^= 0x04
    (tmp_path / "b1.sealed").write_bytes(bytes(sealed))
    offset, _, _, _, blob_id = places[1]
    packid = done.stdout.strip()
    command = f"{PY} s3a2.py open pack.key {packid} {offset} D raw {blob_id.hex()} < b1.sealed"
    bad = subprocess.run(["bash", "-c", command], cwd=tmp_path,
                         capture_output=True, timeout=60, check=False)
    assert bad.returncode != 0 and bad.stdout == b"" and b"InvalidTag" in bad.stderr
