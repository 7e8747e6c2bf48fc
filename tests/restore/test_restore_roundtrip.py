"""Restore brings back every byte and every bit of metadata (hand-built runs, RGW).

The run is recorded from a real tree by the test builder (independent of
the archiver) and restored through the real CLI; rsync, getfacl and getfattr
must see no difference.  ``test_restore_archive_roundtrip.py`` does the same
through ``s3archive archive``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from support.manifest_builder import RunBuilder, make_bucket_env, make_rich_tree, tree_differences

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners, devices and trusted "
                                "xattrs need root")


def run_cli(env, *args: str, expect: int = 0):
    result = CliRunner().invoke(cli, ["--config", str(env.config_path), *args],
                                catch_exceptions=False)
    assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr)
    return result


@needs_root
def test_rich_tree_round_trip(rgw, tmp_path: Path) -> None:
    env = make_bucket_env(rgw, tmp_path)
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_rich_tree(src)
    builder = RunBuilder(env.store, pack_size=4 << 20)
    builder.add_tree(src)
    run = builder.upload()

    result = run_cli(env, "restore", run.run_id, "--target", str(dst), "--json")
    report = json.loads(result.stdout)
    assert report["ok"] and not report["damaged"] and not report["failed"]
    assert report["warnings"] == []

    assert tree_differences(src, dst) == {"rsync": "", "getfacl": "", "getfattr": ""}
    # holes stay holes: 64 MiB apparent, a few hundred KiB allocated
    sparse = os.stat(dst / "sparse.img")
    assert sparse.st_size == 64 << 20 and sparse.st_blocks * 512 < 1 << 20
    tail = os.stat(dst / "sparse-tail.img")
    assert tail.st_size == 16 << 20 and tail.st_blocks * 512 < 1 << 20
    # hardlinks are one inode, duplicate content is not
    assert os.stat(dst / "links/a").st_ino == os.stat(dst / "etc/a-elsewhere").st_ino
    assert os.stat(dst / "etc/big.bin").st_ino != os.stat(dst / "etc/big-copy.bin").st_ino
    # nothing temporary left behind
    leftovers = [n for _, dirs, files in os.walk(dst) for n in dirs + files
                 if n.startswith(".s3archive-restore")]
    assert leftovers == []

    # the comparison itself notices a changed mode, ACL and xattr
    os.chmod(dst / "modes/suid", 0o755)
    os.setxattr(dst / "xattr/f", "user.empty", b"now set")
    os.removexattr(dst / "acl/file", "system.posix_acl_access")
    changed = tree_differences(src, dst)
    assert "modes/suid" in changed["rsync"] and changed["getfacl"] and changed["getfattr"]


def test_subtree_restore_brings_parents_and_hardlink_content(rgw, tmp_path: Path) -> None:
    env = make_bucket_env(rgw, tmp_path)
    builder = RunBuilder(env.store)
    builder.dir(b"/", mode=0o755)
    builder.dir(b"/srv", mode=0o750, mtime_ns=1_500_000_000_000_000_000)
    builder.dir(b"/srv/a", mode=0o755)
    builder.file(b"/srv/a/one", b"1" * 100_000)
    builder.dir(b"/srv/b", mode=0o700)
    builder.hardlink(b"/srv/b/one-link", b"/srv/a/one")
    builder.hardlink(b"/srv/b/two-link", b"/srv/a/one")
    builder.file(b"/srv/b/own", b"own data")
    builder.file(b"/top", b"not selected")
    run = builder.upload()
    dst = tmp_path / "dst"

    run_cli(env, "restore", run.run_id, "srv/b", "--target", str(dst))

    assert sorted(os.listdir(dst)) == ["srv"]
    assert sorted(os.listdir(dst / "srv")) == ["b"]
    assert (dst / "srv/b/one-link").read_bytes() == b"1" * 100_000
    assert os.stat(dst / "srv/b/one-link").st_ino == os.stat(dst / "srv/b/two-link").st_ino
    assert (dst / "srv/b/own").read_bytes() == b"own data"
    srv = os.stat(dst / "srv")
    assert (srv.st_mode & 0o7777, srv.st_mtime_ns) == (0o750, 1_500_000_000_000_000_000)

    missing = run_cli(env, "restore", run.run_id, "/srv/nothing", "--target",
                      str(tmp_path / "other"), expect=2)
    assert "not in this run: /srv/nothing" in missing.stderr
