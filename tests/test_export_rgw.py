"""``cat`` and ``dump --format tar`` through the real CLI against RGW.

The rich tree (every kind of entry and metadata) is archived, streamed out as
a pax tar and extracted by GNU tar; rsync -naHAXS, getfacl and getfattr then
see no difference from the source.  ``cat`` writes one file's bytes, holes
included; damage stops the stream with a one-line error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.manifest_builder import make_bucket_env, make_rich_tree, tree_differences

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the rich tree needs root "
                       "(owners, devices, trusted xattrs)"),
    pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed"),
]


def s3archive(config: Path, *args: str, expect: int = 0, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "s3archive", "--config", str(config), *args],
                          capture_output=True, timeout=300, **kwargs)
    assert done.returncode == expect, (done.returncode, done.stdout[-2000:], done.stderr[-4000:])
    return done


def archive_tree(rgw, where: Path, rich: bool = True):
    env = make_bucket_env(rgw, where)
    src = where / "src"
    if rich:
        make_rich_tree(src)
    else:
        (src / "etc").mkdir(parents=True)
        (src / "etc" / "motd").write_bytes(b"hello world\n")
    picker = where / "pickers.d" / "10-tree"
    picker.parent.mkdir()
    picker.write_text(f"#!/bin/sh\nprintf '%s\\n' '{src}'\n")
    picker.chmod(0o755)
    run = json.loads(s3archive(env.config_path, "archive", "--json").stdout)
    return env, src, run


@pytest.fixture(scope="module")
def archived(rgw, tmp_path_factory: pytest.TempPathFactory):
    """The rich tree, archived once for the read-only tests of this module."""
    return archive_tree(rgw, tmp_path_factory.mktemp("export"))


def test_dump_tar_extracts_to_an_identical_tree(archived, tmp_path: Path) -> None:
    env, src, run = archived
    out = tmp_path / "run.tar"
    done = s3archive(env.config_path, "dump", run["run_id"], "--output", str(out), "--json")
    figures = json.loads(done.stderr.decode().strip().splitlines()[-1])
    assert figures["files"] > 0 and figures["entries"] > figures["files"]
    dst = tmp_path / "extracted"
    dst.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner",
                    "-xpf", str(out), "-C", str(dst)], check=True, capture_output=True)
    inside = Path(f"{dst}{src}")
    assert tree_differences(src, inside) == {"rsync": "", "getfacl": "", "getfattr": ""}
    # holes stay holes: the 64 MiB sparse image holds about 260 kB of data
    sparse = os.stat(inside / "sparse.img")
    assert sparse.st_size == 64 << 20 and sparse.st_blocks * 512 < 1 << 20
    tail = os.stat(inside / "sparse-tail.img")
    assert tail.st_size == 16 << 20 and tail.st_blocks * 512 < 1 << 20


def test_dump_of_a_subtree_streams_to_stdout_and_keeps_hardlinks(archived, tmp_path: Path) -> None:
    env, src, run = archived
    done = s3archive(env.config_path, "dump", "latest", str(src / "links"))
    listing = subprocess.run(["tar", "-tvf", "-"], input=done.stdout, check=True,
                             capture_output=True).stdout.decode()
    names = [line.split()[5] for line in listing.splitlines()]
    inner = str(src / "links").lstrip("/")
    assert f"{inner}/a" in names and f"{inner}/dangling" in names
    assert not any("/etc/" in n for n in names)
    # b is a hardlink to a inside the stream; y to x
    assert any(line.startswith("h") and line.endswith(f"{inner}/b link to {inner}/a")
               for line in listing.splitlines()), listing


def test_cat_writes_one_file_with_its_holes(archived, tmp_path: Path) -> None:
    env, src, _ = archived
    for name in ("etc/big.bin", "sparse.img", "sparse-tail.img", "etc/empty", "links/b"):
        done = s3archive(env.config_path, "cat", "latest", str(src / name))
        assert done.stdout == (src / name).read_bytes(), name
    out = tmp_path / "motd"
    s3archive(env.config_path, "cat", "latest", str(src / "etc/motd"), "-o", str(out))
    assert out.read_bytes() == b"hello world\n"


def test_cat_names_what_is_wrong(archived) -> None:
    env, src, _ = archived
    missing = s3archive(env.config_path, "cat", "latest", str(src / "no/such/file"), expect=2)
    assert missing.stderr.decode().count("\n") == 1 and "not in this run" in missing.stderr.decode()
    directory = s3archive(env.config_path, "cat", "latest", str(src / "etc"), expect=2)
    assert "is a dir, not a file" in directory.stderr.decode()


def test_a_missing_pack_stops_cat_and_dump_with_one_line(rgw, tmp_path: Path) -> None:
    env, src, _ = archive_tree(rgw, tmp_path, rich=False)
    s3 = env.client
    # the operator (admin, governance bypass) deletes every data pack version of the bucket
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=env.bucket,
                                                                   Prefix="data/"):
        for version in page.get("Versions", []):
            s3.delete_object(Bucket=env.bucket, Key=version["Key"],
                             VersionId=version["VersionId"], BypassGovernanceRetention=True)
    cat = s3archive(env.config_path, "cat", "latest", str(src / "etc/motd"), expect=1)
    message = cat.stderr.decode()
    assert cat.stdout == b"" and message.count("\n") == 1
    assert "etc/motd" in message and "Traceback" not in message
    dump = s3archive(env.config_path, "dump", "latest", "-o", str(tmp_path / "t.tar"), expect=1)
    assert dump.stderr.decode().count("\n") == 1 and "the stream stops" in dump.stderr.decode()
    assert not (tmp_path / "t.tar").exists(), "an incomplete output file is removed"
