"""Files created with their recorded mode (one fchmod less each) only where that is
exact: an empty target without a default ACL, no special bits, no ACLs or xattrs,
bits the umask keeps; everywhere else the mode is set after creation, as before."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import posix1e
import pytest

from s3archive.restore.restorer import RestoreOptions, restore_run
from support.manifest_builder import RunBuilder
from support.memory_store import FakeClock, MemoryStore

MODES = {b"/d/plain": 0o644, b"/d/private": 0o600, b"/d/read-only": 0o444,
         b"/d/all-write": 0o666, b"/d/setuid": 0o4755, b"/d/setgid": 0o2750,
         b"/d/none": 0o000, b"/d/with-acl": 0o640}


def _run() -> tuple[MemoryStore, object]:
    store = MemoryStore(FakeClock())
    builder = RunBuilder(store, lock_mode=None, chunk_size=16 << 10, pack_size=100 << 10)
    builder.dir(b"/")
    builder.dir(b"/d", mode=0o750)
    for path, mode in MODES.items():
        extra = {"acl_access": "u::rw-,u:12345:r--,g::r--,m::r--,o::---"} \
            if path == b"/d/with-acl" else {}
        builder.file(path, path * 3, mode=mode, **extra)
    return store, builder.manifest()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("where", ["empty", "default-acl", "overwrite"])
def test_every_file_gets_its_recorded_mode(where: str, umask_022, monkeypatch,
                                           tmp_path: Path) -> None:
    store, manifest = _run()
    target = tmp_path / "t"
    target.mkdir()
    if where == "default-acl":  # new entries would inherit it: a mask of nothing
        posix1e.ACL(text="u::r--,g::---,o::---,m::---").applyto(
            str(target), posix1e.ACL_TYPE_DEFAULT)
    if where == "overwrite":
        (target / "old").write_bytes(b"old\n")
    chmods: list[int] = []
    original = os.fchmod

    def fchmod(fd: int, mode: int) -> None:
        chmods.append(mode)
        original(fd, mode)
    monkeypatch.setattr(os, "fchmod", fchmod)

    report = restore_run(store, manifest, target,
                         options=RestoreOptions(overwrite=where == "overwrite"))

    assert report.ok, (report.damaged, report.failed)
    for path, mode in MODES.items():
        restored = target / path.decode().lstrip("/")
        assert restored.read_bytes() == path * 3
        assert os.stat(restored).st_mode & 0o7777 == mode, path
    if where == "empty":
        # set after creation: the special bits, the bits the umask drops, the ACL's
        # file, and the directories (their modes come when they are complete)
        assert sorted(chmods) == sorted([0o4755, 0o2750, 0o666, 0o640, 0o750, 0o755])
    else:
        assert len(chmods) == len(MODES) + 2


OWNERS = {b"/d/mine": (os.geteuid(), os.getegid()), b"/d/other-user": (12345, os.getegid()),
          b"/d/other-group": (os.geteuid(), 23456)}


@pytest.fixture
def grpid_mount(tmp_path: Path):
    """A small ext4 mounted ``grpid``: new files take their directory's group."""
    image, mount = tmp_path / "grpid.img", tmp_path / "grpid"
    mount.mkdir()
    with image.open("wb") as f:
        f.truncate(16 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True)
    mounted = made.returncode == 0 and subprocess.run(
        ["mount", "-o", "loop,grpid", str(image), str(mount)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("needs root, mkfs.ext4 and loop mounts")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="restoring owners needs root")
@pytest.mark.parametrize("where", ["empty", "setgid-target", "grpid-mount", "overwrite"])
def test_every_file_gets_its_recorded_owner(where: str, monkeypatch, tmp_path: Path,
                                            request) -> None:
    """A file created in an empty target already has the process's ids: no fchown
    when they are the recorded ones.  In a set-group-ID target or on a filesystem
    mounted ``grpid`` (new files take the directory's group) and into a target that
    was not empty, every file is chowned as before."""
    store = MemoryStore(FakeClock())
    builder = RunBuilder(store, lock_mode=None)
    builder.dir(b"/")
    builder.dir(b"/d", uid=os.geteuid(), gid=os.getegid(), user=None, group=None)
    for path, (uid, gid) in OWNERS.items():
        builder.file(path, path, uid=uid, gid=gid, user=None, group=None)
    parent = request.getfixturevalue("grpid_mount") if where == "grpid-mount" else tmp_path
    target = parent / "t"
    target.mkdir()
    if where == "grpid-mount":
        os.chown(target, -1, 34567)
    if where == "setgid-target":
        os.chown(target, -1, 34567)
        target.chmod(0o2755)
    if where == "overwrite":
        (target / "old").write_bytes(b"old\n")
    chowned: list[tuple[int, int]] = []
    original = os.fchown

    def fchown(fd: int, uid: int, gid: int) -> None:
        chowned.append((uid, gid))
        original(fd, uid, gid)
    monkeypatch.setattr(os, "fchown", fchown)

    report = restore_run(store, builder.manifest(), target,
                         options=RestoreOptions(overwrite=where == "overwrite"))

    assert report.ok, (report.damaged, report.failed)
    for path, owner in OWNERS.items():
        st = os.stat(target / path.decode().lstrip("/"))
        assert (st.st_uid, st.st_gid) == owner, path
    directories = [(os.geteuid(), os.getegid())] + [(0, 0)]  # /d, then the target (/)
    files = [owner for path, owner in OWNERS.items() if where != "empty" or path != b"/d/mine"]
    assert sorted(chowned) == sorted(files + directories)
