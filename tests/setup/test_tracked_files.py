"""setup.tracked_files.write_file: the one way write-config puts a file (a secret
too) on disk: never through a symlink, the final mode whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from s3archive.setup.tracked_files import write_file


def test_a_replaced_file_is_renamed_over_and_a_symlink_is_replaced_not_followed(
        tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"not yours")
    path = tmp_path / "etc" / "dedup.key"
    path.parent.mkdir()
    path.symlink_to(elsewhere)
    old_umask = os.umask(0o077)
    try:
        write_file(path, b"secret\n", 0o640)
    finally:
        os.umask(old_umask)
    assert not path.is_symlink() and path.read_bytes() == b"secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert elsewhere.read_bytes() == b"not yours"
    assert sorted(p.name for p in path.parent.iterdir()) == ["dedup.key"]  # no temporary left


@pytest.mark.parametrize("occupant", ["file", "symlink"])
def test_an_exclusive_write_refuses_whatever_is_at_the_name(tmp_path: Path,
                                                            occupant: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"not yours")
    path = tmp_path / "dedup.key"
    if occupant == "file":
        path.write_bytes(b"already here")
    else:
        path.symlink_to(elsewhere)
    with pytest.raises(FileExistsError):
        write_file(path, b"secret\n", 0o600, exclusive=True)
    assert elsewhere.read_bytes() == b"not yours"
    assert path.is_symlink() or path.read_bytes() == b"already here"


def test_an_exclusive_write_creates_the_file_0600_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dedup.key"
    write_file(path, b"secret\n", 0o600, exclusive=True)
    assert path.read_bytes() == b"secret\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
