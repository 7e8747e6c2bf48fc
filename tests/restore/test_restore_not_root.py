"""Restoring without root: files belong to the restoring user, with a warning, not a failure.

The restore runs in a forked child that drops to ``nobody`` (the store and
the manifest are opened before the fork: the interpreter's own files are not
readable by nobody here).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import posix1e
import pytest

from s3archive.repo.catalog import list_runs, load_manifest
from s3archive.format.model import CHARDEV, Entry
from s3archive.restore.restorer import restore_run
from support.manifest_builder import RunBuilder, make_bucket_env

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs root")


def restore_as_nobody(store, manifest, target: Path) -> dict:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            report = restore_run(store, manifest, target)
            out = {"ok": report.ok, "uid": os.geteuid(),
                   "warnings": [[p.path.decode(), p.message] for p in report.warnings],
                   "failed": [[p.path.decode(), p.message] for p in report.failed],
                   "damaged": [[p.path.decode(), p.message] for p in report.damaged]}
            os.write(write, json.dumps(out).encode())
            code = 0
        except BaseException:  # report anything to the parent, then leave the child
            import traceback
            os.write(write, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return json.loads(data)


def test_restore_as_an_ordinary_user(rgw, tmp_path: Path, request) -> None:
    env = make_bucket_env(rgw, tmp_path)
    builder = RunBuilder(env.store)
    builder.dir(b"/", mode=0o755)
    builder.file(b"/root-file", b"root's\n", mode=0o640)
    builder.file(b"/numeric", b"nobody knows\n", uid=12345, gid=23456, user=None, group=None)
    builder.file(b"/suid", b"#!/bin/sh\n", mode=0o4755)
    builder.dir(b"/ro", mode=0o555, mtime_ns=1_234_567_890_000_000_000)
    builder.file(b"/ro/inside", b"written before the dir became read-only\n", mode=0o444)
    builder.file(b"/xattrs", b"x\n", xattrs={"user.ok": b"\x00\x01", "trusted.root-only": b"t"})
    builder.file(b"/acl", b"acl\n", acl_access="u::rw-,u:12345:r--,g::r--,m::r--,o::r--")
    builder.add(Entry(path=b"/null", kind=CHARDEV, mode=0o666, uid=0, gid=0, mtime_ns=0,
                      rdev=(1, 3)))
    run = builder.upload()
    ref = next(r for r in list_runs(env.store) if r.run_id == run.run_id)
    manifest = load_manifest(env.store, ref)
    # pytest's tmp_path lies below a root-only directory: nobody needs its own place
    base = Path(tempfile.mkdtemp(prefix="s3archive-nobody-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    os.chmod(base, 0o755)
    target = base / "target"
    target.mkdir()
    os.chown(target, NOBODY, NOBODY)

    out = restore_as_nobody(env.store, manifest, target)

    assert out["uid"] == NOBODY
    assert out["ok"] and out["failed"] == [] and out["damaged"] == []
    messages = {tuple(w) for w in out["warnings"]}
    assert ("", "not running as root: owners are not restored, files belong to the "
                "restoring user") in messages
    assert ("/null", "device node not created: that needs root") in messages
    assert any(path == "/xattrs" and "trusted.root-only" in msg for path, msg in messages)
    for name in ("root-file", "numeric", "suid", "ro", "ro/inside", "xattrs", "acl"):
        st = os.lstat(target / name)
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), name
    assert stat.S_IMODE(os.stat(target / "suid").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(target / "ro").st_mode) == 0o555
    assert os.stat(target / "ro").st_mtime_ns == 1_234_567_890_000_000_000
    assert (target / "ro" / "inside").read_bytes() == b"written before the dir became read-only\n"
    assert os.getxattr(target / "xattrs", "user.ok") == b"\x00\x01"
    assert "u:12345:r--" in posix1e.ACL(file=str(target / "acl")).to_any_text(
        options=posix1e.TEXT_ABBREVIATE | posix1e.TEXT_NUMERIC_IDS, separator=b",").decode()
    assert not (target / "null").exists()
