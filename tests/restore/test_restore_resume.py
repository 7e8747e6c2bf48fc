"""``restore --resume`` finishes an interrupted restore exactly (issue 9, defect 11; RGW).

A restore killed with SIGKILL leaves complete files, one partial file, maybe
a temporary name and directories without their metadata.  Run again with
``--resume`` into the same target it must give the exact tree (rsync -c,
getfacl, getfattr agree), keeping what is in place and verified.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.manifest_builder import (RunBuilder, invoke, make_bucket_env, make_rich_tree,
                                      tree_differences)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners, devices and trusted "
                                "xattrs need root")
SAME = {"rsync": "", "getfacl": "", "getfattr": ""}


def many_files(root: Path, dirs: int, per_dir: int, seed: int) -> None:
    rng = random.Random(seed)
    for d in range(dirs):
        folder = root / f"d{d:02d}"
        folder.mkdir(parents=True)
        for f in range(per_dir):
            (folder / f"f{f:03d}").write_bytes(rng.randbytes(rng.randrange(0, 3000)))
        os.utime(folder, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))


@needs_root
@pytest.mark.parametrize("seed", [3])
def test_kill_9_then_resume_gives_the_exact_tree(rgw, tmp_path: Path, seed: int) -> None:
    env = make_bucket_env(rgw, tmp_path)
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_rich_tree(src / "rich")
    many_files(src, dirs=20, per_dir=100, seed=seed)
    builder = RunBuilder(env.store, pack_size=4 << 20)
    builder.add_tree(src)
    run = builder.upload()
    stop_after = random.Random(seed).randrange(3, 15)  # top-level directories begun

    process = subprocess.Popen(
        [sys.executable, "-m", "s3archive", "--config", str(env.config_path), "restore",
         run.run_id, "--target", str(dst), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None:
            if dst.exists() and len(os.listdir(dst)) >= stop_after:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        status = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert status == -signal.SIGKILL, "the restore finished before it could be killed"
    assert tree_differences(src, dst)["rsync"] != ""  # it really was interrupted

    refused = invoke(env, "restore", run.run_id, "--target", str(dst))
    assert refused.exit_code == 2 and "--resume" in refused.stderr
    resumed = invoke(env, "restore", run.run_id, "--target", str(dst), "--resume", "--json")

    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert report["ok"] and report["warnings"] == [] and report["bytes_kept"] > 0
    assert tree_differences(src, dst) == SAME
    leftovers = [n for _, dirs, files in os.walk(dst) for n in dirs + files
                 if n.startswith(".s3archive-restore")]
    assert leftovers == []


def test_resume_keeps_verified_chunks_and_finishes_the_rest(rgw, tmp_path: Path) -> None:
    """Deterministic: a truncated file, a corrupted chunk, a stray temporary, a longer
    file, a symlink where a file belongs, a read-only directory; only bad chunks are fetched."""
    env = make_bucket_env(rgw, tmp_path)
    rng = random.Random(11)
    big, other = rng.randbytes(10 * (64 << 10)), rng.randbytes(3 * (64 << 10))
    builder = RunBuilder(env.store, chunk_size=64 << 10, pack_size=1 << 20)
    builder.dir(b"/")
    builder.dir(b"/ro", mode=0o555)
    builder.file(b"/ro/big", big)
    builder.file(b"/ro/other", other)
    builder.file(b"/ro/short", b"short\n")
    builder.file(b"/ro/was-link", b"a file, not the symlink in the way\n")
    builder.symlink(b"/ro/z-link", b"big")
    run = builder.upload()
    dst = tmp_path / "dst"
    first = invoke(env, "restore", run.run_id, "--target", str(dst))
    assert first.exit_code == 0, first.output
    whole = {name: (dst / "ro" / name).read_bytes() for name in ("big", "other", "short")}

    with open(dst / "ro" / "big", "r+b") as handle:  # chunk 2 corrupted, 7-9 missing
        handle.seek(2 * (64 << 10) + 5)
        handle.write(b"X")
        handle.truncate(7 * (64 << 10) + 100)
    with open(dst / "ro" / "short", "ab") as handle:
        handle.write(b"junk an older file left behind\n")
    (dst / "ro" / "was-link").unlink()
    (dst / "ro" / "was-link").symlink_to("/etc/passwd")
    (dst / "ro" / ".s3archive-restore.999.0").write_bytes(b"from a killed restore")
    (dst / ".s3archive-restore.999.1").symlink_to(tmp_path)  # a symlink's temporary name
    os.chmod(dst / "ro", 0o555)

    resumed = invoke(env, "restore", run.run_id, "--target", str(dst), "--resume", "--json")

    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    # 4 of big's 10 chunks were bad or missing, was-link is written again; the rest is kept
    assert report["bytes"] == 4 * (64 << 10) + 35
    assert report["bytes_kept"] == 6 * (64 << 10) + len(other) + len(b"short\n")
    for name, data in whole.items():
        assert (dst / "ro" / name).read_bytes() == data
    assert not (dst / "ro" / "was-link").is_symlink()
    assert (dst / "ro" / "was-link").read_bytes() == b"a file, not the symlink in the way\n"
    assert os.readlink(dst / "ro" / "z-link") == "big"
    assert sorted(os.listdir(dst / "ro")) == ["big", "other", "short", "was-link", "z-link"]
    assert (dst / "ro").stat().st_mode & 0o777 == 0o555
    assert sorted(os.listdir(dst)) == ["ro"] and tmp_path.is_dir()
    assert (dst / "ro" / "big").stat().st_mtime_ns == 1_700_000_000_000_000_000
    assert report["store"]["requests"]["GetObject"] <= 3  # the manifest, the bad chunks
