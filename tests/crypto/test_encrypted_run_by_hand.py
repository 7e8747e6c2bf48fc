"""An encrypted run written by the archiver, restored by hand: ``age -d`` for the
dedup secret's copy and each pack's key block, the documented ``s3a2.py``
snippet to open sealed blobs and check keyed ids, ``zstd`` to decode; only the
JSON navigation (which reference to follow) is done here in Python."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import zstandard

from s3archive.archive.archiver import Archiver
from s3archive.config import dedup_secret_file_text, parse_config
from s3archive.crypto.dedup import DedupSecret
from s3archive.crypto.keys import Identity
from s3archive.repo.catalog import list_runs
from support.memory_store import FakeClock, MemoryStore

PY = shlex.quote(sys.executable)
DOCS = Path(__file__).resolve().parents[2] / "docs"

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("age", "zstd", "dd")),
    reason="needs age, zstd and dd on PATH (Debian packages age, zstd, coreutils)")


def _snippet() -> str:
    for doc in sorted(DOCS.glob("FORMAT*.md")):
        match = re.search(r"```python\n(#!/usr/bin/env python3\n\"\"\"s3a2\.py.*?)```",
                          doc.read_text(), re.DOTALL)
        if match:
            return match[1]
    raise AssertionError("the s3a2.py snippet is missing from docs/")


def test_a_real_encrypted_run_restores_by_hand(tmp_path: Path) -> None:
    etc, tree = tmp_path / "etc", tmp_path / "tree"
    (etc / "pickers.d").mkdir(parents=True)
    tree.mkdir()
    content = b"restored by hand, from the bucket, with age and a snippet\n" * 40
    (tree / "hello.txt").write_bytes(content)
    picker = etc / "pickers.d" / "10"
    picker.write_text(f"#!/bin/sh\necho '{tree}'\n")
    picker.chmod(0o755)
    identity, secret = Identity.generate(), DedupSecret.generate()
    fd = os.open(etc / "dedup.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(dedup_secret_file_text(secret))
    clock = FakeClock(datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc))
    store = MemoryStore(clock)
    config = parse_config(
        {"s3": {"bucket": "by-hand"}, "host": {"name": "h"},
         "encryption": {"recipients": [str(identity.recipient())],
                        "dedup_secret_file": str(etc / "dedup.key")},
         "local": {"cache_dir": str(tmp_path / "cache"), "state_file": str(tmp_path / "s")}},
        etc / "config.toml", clock=clock)
    assert Archiver(config, store, clock=clock).run().exit_code == 0
    (run,) = list_runs(store, "h")

    work = tmp_path / "hand"
    work.mkdir()
    (work / "restore.key").write_text(identity.file_text())
    (work / "s3a2.py").write_text(_snippet())

    def get(key: str, version: str) -> bytes:  # stands in for aws s3api get-object
        return store.get(key, version)

    def sh(*lines: str) -> str:
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(lines)],
                              cwd=work, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    lines = [json.loads(line) for line in zstandard.ZstdDecompressor().stream_reader(
        get(run.key, run.version_id)).read().splitlines()]
    header, table = lines[0], {p["id"]: p for p in lines if p["type"] == "pack"}
    root = next(line for line in lines if line["type"] == "root")
    copy = header["encryption"]["dedup_key"]
    (work / "dedup.age").write_bytes(get(copy["key"], copy["version_id"]))
    sh("age -d -i restore.key dedup.age > dedup.bin")
    assert (work / "dedup.bin").read_bytes() == secret.secret

    def open_blob(pack: dict, ref: list, kind: str, name: str) -> bytes:
        """Steps 3 and 4: the pack's key from its key block, then the blob."""
        (work / f"{name}.pack").write_bytes(get(pack["key"], pack["version_id"]))
        blob_id, size, _, offset, stored, encoding = ref
        decode = "zstd -q -d -c" if encoding == "zstd" else "cat"
        sh(f"L=$(head -c 29 {name}.pack | tail -c 4 | od -An -tu4 --endian=big | tr -d ' ')",
           f"PACKID=$(head -c 25 {name}.pack | tail -c 16 | od -An -tx1 | tr -d ' \\n')",
           f"dd if={name}.pack of={name}.age bs=1 skip=29 count=$L status=none",
           f"age -d -i restore.key {name}.age > {name}.key",
           f"dd if={name}.pack of={name}.sealed bs=1 skip={offset} count={stored} status=none",
           f"{PY} s3a2.py open {name}.key $PACKID {offset} {kind} {encoding} {blob_id} "
           f"< {name}.sealed > {name}.stored",
           f"{decode} < {name}.stored > {name}.plain",
           f'test "$({PY} s3a2.py id dedup.bin {kind} < {name}.plain)" = {blob_id}')
        plain = (work / f"{name}.plain").read_bytes()
        assert len(plain) == size
        return plain

    record = json.loads(open_blob(table[root["record"][2]], root["record"], "R", "record"))
    node_ref, packs = record["root"]["tree"], record["packs"]
    path = [p for p in str(tree).split("/") if p] + ["hello.txt"]
    by_key = {p["key"]: p for p in table.values()}
    for depth, name in enumerate(path):
        node = json.loads(open_blob(by_key[packs[node_ref[2]]], node_ref, "T", f"n{depth}"))
        entry = next(e for e in node["entries"] if e["name"] == name)
        if name == "hello.txt":
            data = b"".join(open_blob(by_key[node["packs"][ref[2]]], ref, "D", f"d{i}")
                            for i, ref in enumerate(entry["chunks"]))
            assert data == content
            return
        node_ref, packs = entry["tree"], node["packs"]
    raise AssertionError("hello.txt not reached")
