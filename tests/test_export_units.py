"""The tar stream's headers, extracted by GNU tar (no store needed: no file data)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from s3archive.errors import IntegrityError
from s3archive.export import write_tar
from s3archive.format.model import CHARDEV, DIR, Entry, Header, Manifest, Trailer

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


def manifest(*entries: Entry) -> Manifest:
    header = Header(host="h", run_id="r", started=NOW, lock_mode=None, retain_until=NOW,
                    tier="daily", tool="test")
    root = Entry(path=b"/", kind=DIR, mode=0o755, uid=0, gid=0, mtime_ns=0)
    return Manifest(header, [], [root, *entries], [], Trailer(finished=NOW))


@pytest.mark.skipif(shutil.which("tar") is None or os.geteuid() != 0,
                    reason="needs GNU tar and root (xattrs in every namespace)")
def test_xattr_names_with_equals_and_percent_round_trip_through_gnu_tar(tmp_path: Path) -> None:
    names = {"user.a=b": b"v1", "user.p%q": b"v2", "user.plain": b"\x00\xffbinary"}
    out = io.BytesIO()
    write_tar(None, manifest(Entry(path=b"/d", kind=DIR, mode=0o750, uid=0, gid=0,  # type: ignore[arg-type]
                                   mtime_ns=-1_500_000_000, xattrs=names)), [], out)
    archive = tmp_path / "x.tar"
    archive.write_bytes(out.getvalue())
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(archive),
                    "-C", str(tmp_path)], check=True, capture_output=True)
    got = {n: os.getxattr(tmp_path / "d", n) for n in os.listxattr(tmp_path / "d")}
    assert got == names
    assert os.stat(tmp_path / "d").st_mtime_ns == -1_500_000_000  # before 1970, exact


def test_a_device_number_tar_cannot_hold_is_named() -> None:
    device = Entry(path=b"/dev0", kind=CHARDEV, mode=0o600, uid=0, gid=0, mtime_ns=0,
                   rdev=(1 << 22, 1))
    with pytest.raises(IntegrityError, match="does not fit a tar header"):
        write_tar(None, manifest(device), [], io.BytesIO())  # type: ignore[arg-type]
