"""``mount``: the runs as a read-only FUSE filesystem, through the real CLI (RGW).

Skips where FUSE cannot run (no /dev/fuse, no pyfuse3, not root).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.manifest_builder import invoke, make_bucket_env, make_rich_tree

try:
    import pyfuse3  # noqa: F401
    _PYFUSE3 = True
except ImportError:
    _PYFUSE3 = False

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse on this machine"),
    pytest.mark.skipif(not _PYFUSE3, reason="pyfuse3 is not installed (extra 'mount')"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the rich tree and mounting need root"),
]


def test_mount_lists_reads_and_unmounts_on_sigterm(rgw, tmp_path: Path) -> None:
    env = make_bucket_env(rgw, tmp_path)
    src = tmp_path / "src"
    make_rich_tree(src)
    picker = tmp_path / "pickers.d" / "10-tree"
    picker.parent.mkdir()
    picker.write_text(f"#!/bin/sh\nprintf '%s\\n' '{src}'\n")
    picker.chmod(0o755)
    first = invoke(env, "archive", "--json")
    run_id = json.loads(first.stdout.strip().splitlines()[-1])["run_id"]
    (src / "etc" / "motd").write_bytes(b"second run\n")
    assert invoke(env, "archive").exit_code == 0

    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    mount = subprocess.Popen([sys.executable, "-m", "s3archive", "--config",
                              str(env.config_path), "mount", str(mountpoint)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (mountpoint / "testhost").exists():
            assert mount.poll() is None, mount.communicate()
            assert time.monotonic() < deadline, "the mount did not come up"
            time.sleep(0.2)
        runs = sorted(os.listdir(mountpoint / "testhost"))
        assert len(runs) == 2 and runs[0] == run_id
        old = Path(f"{mountpoint}/testhost/{run_id}{src}")
        new = Path(f"{mountpoint}/testhost/{runs[1]}{src}")
        assert (old / "etc" / "motd").read_bytes() == b"hello world\n"
        assert (new / "etc" / "motd").read_bytes() == b"second run\n"

        # everything but ACLs matches the source: content, owners, modes, times,
        # hardlinks, symlinks, devices, fifos, xattrs
        (src / "etc" / "motd").write_bytes(b"second run\n")
        os.utime(src / "etc" / "motd", ns=(os.stat(new / "etc" / "motd").st_mtime_ns,) * 2)
        os.utime(src / "etc", ns=(os.stat(new / "etc").st_mtime_ns,) * 2)
        rsync = subprocess.run(["rsync", "-naHX", "--numeric-ids", "-c", "--delete",
                                "--itemize-changes", f"{src}/", f"{new}/"],
                               capture_output=True, check=True)
        assert rsync.stdout.decode(errors="replace") == ""

        # random access: a read in the middle of a large file, and of a sparse one
        with open(new / "etc" / "big.bin", "rb") as handle:
            handle.seek(2_000_000)
            assert handle.read(70_000) == (src / "etc" / "big.bin").read_bytes()[
                2_000_000:2_070_000]
        with open(new / "sparse.img", "rb") as handle:
            handle.seek((40 << 20) - 10)
            assert handle.read(30) == bytes(10) + (b"middle" * 4)[:20]
        listing = subprocess.run(["ls", "-l", str(new / "links")], capture_output=True,
                                 check=True, text=True).stdout
        assert "rel -> a" in listing and "abs -> /etc/passwd" in listing
        assert os.stat(new / "links" / "a").st_ino == os.stat(new / "links" / "b").st_ino
        with pytest.raises(OSError):
            open(new / "etc" / "motd", "wb")
    finally:
        mount.send_signal(signal.SIGTERM)
        try:
            out, err = mount.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
            mount.kill()
            raise
    assert mount.returncode == 0, err.decode()
    assert not os.path.ismount(mountpoint)
    assert b"unmounted" in err
