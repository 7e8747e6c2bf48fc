"""The full cycle through the real CLI: archive a tree, restore it, compare (RGW).

``s3archive archive`` records the rich tree; ``restore`` brings it back so
that rsync -naHAXS --numeric-ids -c, getfacl -R and getfattr -R see no
difference.  A second run after changes is compared with ``diff``, and both
are verified with ``verify --all --read-data``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.manifest_builder import make_bucket_env, make_rich_tree, tree_differences

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the rich tree needs root "
                                "(owners, devices, trusted xattrs)")


def s3archive(config: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "s3archive", "--config", str(config), *args],
                          capture_output=True, timeout=300)
    assert done.returncode == expect, (done.returncode, done.stdout[-2000:], done.stderr[-4000:])
    return done


def test_archive_restore_round_trip(rgw, tmp_path: Path) -> None:
    env = make_bucket_env(rgw, tmp_path)
    src = tmp_path / "src"
    make_rich_tree(src)
    pickers = tmp_path / "pickers.d"
    pickers.mkdir()
    picker = pickers / "10-tree"
    picker.write_text(f"#!/bin/sh\nprintf '%s\\n' '{src}'\n")
    picker.chmod(0o755)

    first = json.loads(s3archive(env.config_path, "archive", "--json").stdout)
    dst = tmp_path / "dst"
    restored = json.loads(s3archive(env.config_path, "restore", first["run_id"],
                                    "--target", str(dst), "--json").stdout)
    assert restored["ok"] and restored["warnings"] == [] and restored["failed"] == []

    inside = Path(f"{dst}{src}")  # entries are absolute host paths below the target
    assert tree_differences(src, inside) == {"rsync": "", "getfacl": "", "getfattr": ""}
    sparse = os.stat(inside / "sparse.img")
    assert sparse.st_size == 64 << 20 and sparse.st_blocks * 512 < 1 << 20
    # parents of the picked path come back as directories with their metadata (the
    # test trees live below /var/tmp, mode 1777, or /tmp)
    for parent in src.parents[:-1]:  # not / itself
        assert os.stat(f"{dst}{parent}").st_mode & 0o7777 == os.stat(parent).st_mode & 0o7777

    # change the tree, archive again, and look at the difference
    os.chmod(src / "readonly", 0o755)
    (src / "etc" / "motd").write_bytes(b"changed\n")
    (src / "etc" / "new").write_bytes(b"new file\n")
    os.unlink(src / "links" / "dangling")
    os.chmod(src / "modes" / "sgid", 0o711)
    os.utime(src / "readonly", ns=(1_600_000_000_000_000_000, 1_600_000_000_123_000_000))
    second = json.loads(s3archive(env.config_path, "archive", "--json").stdout)
    diff = s3archive(env.config_path, "diff", first["run_id"], second["run_id"], "--json")
    changes = {change["path"][len(str(src)):]: change["change"]
               for change in json.loads(diff.stdout)["changes"]}
    assert changes["/etc/motd"] == "content"
    assert changes["/etc/new"] == "added"
    assert changes["/links/dangling"] == "removed"
    assert changes["/modes/sgid"] == "metadata"
    assert changes["/readonly"] == "metadata"
    assert "/etc/big.bin" not in changes

    verified = json.loads(s3archive(env.config_path, "verify", "--all", "--read-data",
                                    "--json").stdout)
    assert verified["ok"] and len(verified["runs"]) == 2
    assert all(r["chunks_checked"] > 0 for r in verified["runs"])
