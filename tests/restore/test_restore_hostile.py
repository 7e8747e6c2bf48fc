"""Manifests are untrusted: hostile ones are refused, restore stays inside --target.

Each hostile manifest is built by hand and uploaded as a new run of a real
bucket (RGW); the restore goes through the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s3archive.format.model import FILE, Entry
from support.manifest_builder import RunBuilder, invoke, make_bucket_env


def snapshot_dir(root: Path) -> dict[str, bytes | str]:
    """Everything below ``root``: file contents and symlink targets."""
    seen: dict[str, bytes | str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if full.is_symlink():
                seen[rel] = "-> " + os.readlink(full)
            elif full.is_file():
                seen[rel] = full.read_bytes()
            else:
                seen[rel] = "dir"
    return seen


@pytest.fixture
def env(rgw, tmp_path: Path):
    return make_bucket_env(rgw, tmp_path)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the target that a hostile manifest aims at."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "victim").write_bytes(b"precious\n")
    return path


def _file(builder: RunBuilder, path: bytes, data: bytes = b"pwned\n") -> Entry:
    return Entry(path=path, kind=FILE, mode=0o644, uid=0, gid=0, mtime_ns=0, size=len(data),
                 chunks=builder.store_bytes(data))


HOSTILE = {
    "dot-dot": ([b"/etc", b"/etc/../../outside/victim"], "contains '.' or '..'"),
    "relative": ([b"outside/victim"], "path is not absolute"),
    "double-slash": ([b"//outside/victim"], "not normalised"),
    "nul": ([b"/etc/pass\x00wd"], "contains NUL"),
    "duplicate": ([b"/a", b"/a"], "duplicate or unsorted path"),
    "unsorted": ([b"/b", b"/a"], "duplicate or unsorted path"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_paths_are_refused(env, tmp_path: Path, outside: Path, case: str) -> None:
    paths, reason = HOSTILE[case]
    builder = RunBuilder(env.store, run_id=f"hostile-{case}")
    for path in paths:
        if path == b"/etc":
            builder.dir(path)
        else:
            builder.add(_file(builder, path))
    run = builder.upload(sort=False)
    target = tmp_path / "target"
    before = snapshot_dir(tmp_path / "outside")

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    assert result.exit_code == 1, result.output
    assert reason in result.stderr
    assert run.key in result.stderr  # names the manifest
    assert snapshot_dir(tmp_path / "outside") == before
    assert not target.exists() or os.listdir(target) == []


def test_path_below_a_symlink_is_refused(env, tmp_path: Path, outside: Path) -> None:
    builder = RunBuilder(env.store, run_id="hostile-symlink")
    builder.symlink(b"/etc", os.fsencode(outside))
    builder.add(_file(builder, b"/etc/victim"))
    run = builder.upload()
    target = tmp_path / "target"

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    assert result.exit_code == 1
    assert "lies below the symlink b'/etc'" in result.stderr
    assert (outside / "victim").read_bytes() == b"precious\n"
    assert not target.exists() or os.listdir(target) == []


def test_hardlink_to_a_path_not_in_the_run_is_refused(env, tmp_path: Path,
                                                      outside: Path) -> None:
    builder = RunBuilder(env.store, run_id="hostile-hardlink")
    builder.symlink(b"/a", os.fsencode(outside))
    builder.hardlink(b"/b", b"/a/victim")
    run = builder.upload()

    result = invoke(env, "restore", run.run_id, "--target", str(tmp_path / "target"))

    assert result.exit_code == 1
    assert "which is no earlier file" in result.stderr
    assert (outside / "victim").stat().st_nlink == 1


def test_non_empty_target_needs_overwrite(env, tmp_path: Path) -> None:
    builder = RunBuilder(env.store)
    builder.file(b"/new", b"data")
    run = builder.upload()
    target = tmp_path / "target"
    target.mkdir()
    (target / "mine").write_bytes(b"keep")

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    assert result.exit_code == 2
    assert "is not empty (use --resume to finish an interrupted restore, --overwrite to " \
        "restore into it anyway)" in result.stderr
    assert os.listdir(target) == ["mine"]


def test_overwrite_never_writes_through_symlinks_in_the_target(env, tmp_path: Path,
                                                                outside: Path) -> None:
    """Symlinks someone placed in the target are replaced, never followed."""
    builder = RunBuilder(env.store)
    builder.dir(b"/etc")
    builder.file(b"/etc/victim", b"restored\n")
    builder.file(b"/victim", b"restored too\n")
    builder.dir(b"/var")
    builder.dir(b"/var/lib")
    builder.file(b"/var/lib/state", b"state\n")
    run = builder.upload()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "etc")  # a directory entry's place
    os.symlink(outside / "victim", target / "victim")  # a file entry's place
    (target / "var").mkdir()
    os.symlink(outside, target / "var" / "lib")  # deeper
    before = snapshot_dir(outside)

    result = invoke(env, "restore", run.run_id, "--target", str(target), "--overwrite")

    assert result.exit_code == 0, result.output
    assert snapshot_dir(outside) == before
    assert not (target / "etc").is_symlink() and (target / "etc").is_dir()
    assert (target / "etc/victim").read_bytes() == b"restored\n"
    assert not (target / "victim").is_symlink()
    assert (target / "victim").read_bytes() == b"restored too\n"
    assert (target / "var/lib/state").read_bytes() == b"state\n"
    assert not (target / "var/lib").is_symlink()


def test_symlink_entries_are_created_not_followed(env, tmp_path: Path,
                                                  outside: Path) -> None:
    """A run may hold symlinks pointing anywhere; restore creates them and writes nothing there."""
    builder = RunBuilder(env.store)
    builder.symlink(b"/abs", os.fsencode(outside / "victim"))
    builder.symlink(b"/rel", b"../outside/victim")
    builder.file(b"/zzz", b"after the links\n")
    run = builder.upload()
    target = tmp_path / "target"

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    assert result.exit_code == 0, result.output
    assert os.readlink(target / "abs") == str(outside / "victim")
    assert os.readlink(target / "rel") == "../outside/victim"
    assert (outside / "victim").read_bytes() == b"precious\n"


def test_values_out_of_range_fail_their_entry_only(env, tmp_path: Path) -> None:
    """What the decoder lets through but the OS refuses never stops the restore."""
    from s3archive.format.model import BLOCKDEV

    builder = RunBuilder(env.store)
    builder.dir(b"/")
    # within the format's bounds (32-bit major/minor), beyond what makedev() takes
    builder.add(Entry(path=b"/huge-dev", kind=BLOCKDEV, mode=0o600, uid=0, gid=0, mtime_ns=0,
                      rdev=(2**31, 2**31)))
    builder.file(b"/ok", b"fine\n")
    run = builder.upload()
    target = tmp_path / "target"

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    if os.geteuid() == 0:
        assert result.exit_code == 1
        assert "not restored: /huge-dev: device number" in result.stderr
    else:
        assert "warning: /huge-dev: device node not created" in result.stderr
    assert (target / "ok").read_bytes() == b"fine\n"


@pytest.mark.parametrize("fields, reason", [
    (dict(uid=2**40), "field 'uid' is larger than 4294967295"),
    (dict(mtime_ns=10**30), "field 'mtime_ns' is out of range"),
    (dict(kind="blockdev", rdev=(2**40, 1)), "rdev must be [major, minor]"),
])
def test_values_beyond_the_format_bounds_refuse_the_manifest(env, tmp_path: Path,
                                                             fields: dict, reason: str) -> None:
    """No filesystem holds them: the decoder refuses the run, naming the line and field."""
    builder = RunBuilder(env.store)
    builder.dir(b"/")
    entry = dict(path=b"/odd", kind="fifo", mode=0o600, uid=0, gid=0, mtime_ns=0)
    builder.add(Entry(**{**entry, **fields}))
    run = builder.upload()
    target = tmp_path / "target"

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    assert result.exit_code == 1
    assert result.stderr == f"s3archive: error: {run.key}@{run.version_id}: line 3: {reason}\n"
    assert not target.exists() or os.listdir(target) == []


MALFORMED = {
    "symlink-target-with-nul": (dict(kind="symlink", mode=0o777, target=b"a\x00b"),
                                "target is empty or contains NUL"),
    "device-without-rdev": (dict(kind="chardev", mode=0o600), "rdev must be [major, minor]"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_entries_refuse_the_whole_manifest(env, tmp_path: Path, case: str) -> None:
    fields, reason = MALFORMED[case]
    builder = RunBuilder(env.store, run_id=f"malformed-{case}")
    builder.dir(b"/")
    builder.add(Entry(path=b"/bad", uid=0, gid=0, mtime_ns=0, **fields))
    builder.file(b"/ok", b"fine\n")
    run = builder.upload()
    target = tmp_path / "target"

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    assert result.exit_code == 1
    assert reason in result.stderr and run.key in result.stderr
    assert not target.exists() or os.listdir(target) == []


@pytest.mark.parametrize("kind", ["file", "fifo", "symlink"])
def test_a_root_that_is_not_a_directory_is_refused_cleanly(env, tmp_path: Path,
                                                           kind: str) -> None:
    """Issue 9, defect 3: one line naming the run, no traceback, nothing in the target."""
    builder = RunBuilder(env.store, run_id=f"root-{kind}")
    if kind == "file":
        builder.file(b"/", b"a file where the root directory should be")
    else:
        builder.add(Entry(path=b"/", kind=kind, mode=0o644, uid=0, gid=0, mtime_ns=0,
                          target=b"/elsewhere" if kind == "symlink" else None))
    builder.file(b"/etc", b"below it")
    run = builder.upload()
    target = tmp_path / "target"

    result = invoke(env, "restore", run.run_id, "--target", str(target))

    assert result.exit_code == 1
    assert result.stderr == (f"s3archive: error: {run.key}@{run.version_id}: line 3: "
                             f"'/' is a {kind}, not a directory\n")
    assert not target.exists() or os.listdir(target) == []
