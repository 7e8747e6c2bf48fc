"""Format 1 stays readable beside format 2 (issue 10, item 6), through the real CLI on RGW.

One bucket gets two runs written by the format-1 writer (kept for tests:
``Archiver(..., storage_format=1)``), and every read of them (``runs``,
``ls``, ``show``, ``diff``, ``verify --read-data``, ``cat-snapshot``) is
recorded.  Then two format-2 runs are added by ``archive`` (the first reuses
the format-1 packs from the local cache).  The same reads must then give
exactly the same answers, a format-1 run must restore the tree as it was
(whole and one path), and the commands that span runs (``runs``, ``latest``,
``diff``, ``verify --all``) must work across the two formats.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from s3archive.archive.archiver import Archiver
from s3archive.config import load_config
from s3archive.repo.catalog import list_runs, peek_format
from s3archive.store.factory import open_store
from support.archive_env import ArchiveEnv
from support.manifest_builder import tree_differences

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="restores owners and ACLs: needs root"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("rsync", "getfacl", "getfattr")),
                       reason="compares trees with rsync, getfacl and getfattr"),
]


def make_tree(src: Path) -> None:
    (src / "etc" / "sub").mkdir(parents=True)
    (src / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (src / "etc" / "same").write_text("never changes\n")
    (src / "etc" / "gone").write_text("removed before run 2\n")
    (src / "etc" / "sub" / "deep.txt").write_text("nested\n")
    (src / "etc" / "link").symlink_to("hosts")
    os.link(src / "etc" / "same", src / "etc" / "same-again")
    (src / "etc" / os.fsdecode(b"\xe9t\xe9")).write_bytes(b"latin-1 name\n")
    (src / "var").mkdir()
    (src / "var" / "big.bin").write_bytes(os.urandom(600_000) + b"x" * 400_000)
    subprocess.run(["setfacl", "-m", "u:1234:r--", str(src / "etc" / "hosts")], check=True)
    subprocess.run(["setfattr", "-n", "user.k", "-v", "v", str(src / "etc" / "same")], check=True)


def files_changed(diff: dict[str, Any], src: str) -> dict[str, str]:
    """The changes of a ``diff --json`` outside the directories above and at
    ``src/etc`` (whose mtimes the test's own edits change), by path."""
    dirs = {str(p) for p in [*Path(src, "etc").parents, Path(src, "etc")]}
    changes = {c["path"]: c["change"] for c in diff["changes"] if c["path"] not in dirs}
    assert all(c["change"] == "metadata" for c in diff["changes"] if c["path"] in dirs)
    return changes


def reads(env: ArchiveEnv, one: str, two: str) -> dict[str, Any]:
    """What the read commands say about the format-1 runs ``one`` and ``two``."""
    out: dict[str, Any] = {}
    for name, args in {"ls": ("ls", one, "--json"),
                       "ls-path": ("ls", two, f"{env.src}/etc", "--json"),
                       "show": ("show", one, "--json"),
                       "diff": ("diff", one, two, "--json"),
                       "verify": ("verify", two, "--read-data", "--json"),
                       "cat-snapshot": ("cat-snapshot", one, "20-dump")}.items():
        result = env.run(*args)
        assert result.exit_code == 0, (name, result.stderr)
        out[name] = result.stdout if name == "cat-snapshot" else json.loads(result.stdout)
    runs = json.loads(env.run("runs", "--json").stdout)
    out["runs"] = [r for r in runs if r["run_id"] in (one, two)]
    return out


@pytest.fixture(scope="module")
def bucket(rgw, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("format1-compat")
    env = ArchiveEnv(root, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())
    env.src = root / "src"
    make_tree(env.src)
    env.pick(env.src)
    env.snapshotter("20-dump", 'printf -- "-- dump %s\\n" 1 2 3 >&"$1"\necho a dump\n')
    config = load_config(env.config)
    store = open_store(config)

    def format1_run() -> str:
        assert Archiver(config, store, storage_format=1).run().exit_code == 0
        return max(r.run_id for r in list_runs(store))

    one = format1_run()
    as_one = root / "as-run-1"
    subprocess.run(["cp", "-a", str(env.src), str(as_one)], check=True)
    (env.src / "etc" / "gone").unlink()
    (env.src / "etc" / "hosts").write_text("127.0.0.1 localhost\n10.0.0.1 db\n")
    two = format1_run()
    before = reads(env, one, two)
    (env.src / "etc" / "new.txt").write_text("new in run 3\n")
    three = env.archive()["run_id"]
    os.chmod(env.src / "etc" / "same", 0o600)
    four = env.archive()["run_id"]
    formats = {r.run_id: peek_format(store.get(r.key, r.version_id), r.key)
               for r in list_runs(store)}
    return {"env": env, "store": store, "runs": (one, two, three, four), "before": before,
            "formats": formats, "as_one": as_one}


def test_the_bucket_holds_format_1_and_format_2_runs(bucket) -> None:
    one, two, three, four = bucket["runs"]
    assert bucket["formats"] == {one: 1, two: 1, three: 2, four: 2}
    env, store = bucket["env"], bucket["store"]
    table = [r for r in list_runs(store) if r.run_id == three][0]
    from s3archive.repo.catalog import open_tree
    keys = [p.key for p in open_tree(store, table).root.packs]
    assert any(k.startswith("packs/") for k in keys), "run 3 reuses the format-1 packs"
    assert any(k.startswith("meta/") for k in keys)
    runs = json.loads(env.run("runs", "--json").stdout)
    assert [r["run_id"] for r in runs] == [one, two, three, four]
    assert all(r["status"] == "complete" for r in runs)
    assert json.loads(env.run("show", "latest", "--json").stdout)["run_id"] == four


def test_format_1_reads_are_exactly_as_before(bucket) -> None:
    one, two, _, _ = bucket["runs"]
    after = reads(bucket["env"], one, two)
    before = bucket["before"]
    assert after.keys() == before.keys()
    for name in before:
        assert after[name] == before[name], name
    assert before["cat-snapshot"] == "-- dump 1\n-- dump 2\n-- dump 3\n"
    src = str(bucket["env"].src)
    assert files_changed(before["diff"], src) == {f"{src}/etc/gone": "removed",
                                                  f"{src}/etc/hosts": "content"}


def test_a_format_1_run_restores_as_it_was(bucket, tmp_path: Path) -> None:
    env, (one, _, _, _) = bucket["env"], bucket["runs"]
    whole = env.run("restore", one, "--target", str(tmp_path / "whole"))
    assert whole.exit_code == 0, whole.stderr
    differences = tree_differences(bucket["as_one"], tmp_path / "whole" / str(env.src).lstrip("/"))
    assert differences == {"rsync": "", "getfacl": "", "getfattr": ""}, differences
    part = env.run("restore", one, f"{env.src}/etc/sub", "--target", str(tmp_path / "part"))
    assert part.exit_code == 0, part.stderr
    restored = tmp_path / "part" / str(env.src).lstrip("/")
    assert (restored / "etc" / "sub" / "deep.txt").read_text() == "nested\n"
    assert not (restored / "etc" / "hosts").exists() and not (restored / "var").exists()


def test_diff_and_verify_span_both_formats(bucket) -> None:
    env, (one, two, three, four) = bucket["env"], bucket["runs"]
    src = str(env.src)
    across = json.loads(env.run("diff", two, three, "--json").stdout)
    assert files_changed(across, src) == {f"{src}/etc/new.txt": "added"}
    back = json.loads(env.run("diff", four, one, "--json").stdout)
    assert files_changed(back, src) == {
        f"{src}/etc/gone": "added", f"{src}/etc/hosts": "content",
        f"{src}/etc/new.txt": "removed", f"{src}/etc/same": "metadata",
        f"{src}/etc/same-again": "metadata"}
    checked = env.run("verify", "--all", "--read-data", "--json")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    result = json.loads(checked.stdout)
    assert {r["run_id"] for r in result["runs"]} == {one, two, three, four}
