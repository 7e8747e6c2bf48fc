"""``find``, ``history`` and ``diff`` on a 100,000-file host (100 directories of
1000 small files), three runs with a few changes, through the real CLI
against RGW (issue 14 item 7).  bench/bench_find.py runs the same at any size
and prints the timings."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from support.manifest_builder import invoke, make_bucket_env

DIRS, PER_DIR = 100, 1000


def make_tree(src: Path) -> None:
    for d in range(DIRS):
        folder = src / f"d{d:04d}"
        folder.mkdir(parents=True)
        for i in range(d * PER_DIR, (d + 1) * PER_DIR):
            fd = os.open(folder / f"f{i:07d}.txt", os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, b"%d\n" % i)
            os.close(fd)


@pytest.fixture
def src(tmp_path: Path):
    """The tree on tmpfs when there is one: 100,000 files are made in seconds."""
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else tmp_path
    where = Path(tempfile.mkdtemp(prefix="s3archive-scale-", dir=base))
    try:
        yield where / "src"
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.scale  # not in the suite: run it with `python -m pytest -m scale` (bench/README.md)
def test_find_and_history_over_100000_files(rgw, tmp_path: Path, src: Path) -> None:
    timings: dict[str, float] = {}

    def timed(label: str, *args: str):
        began = time.monotonic()
        result = invoke(env, *args)
        timings[label] = round(time.monotonic() - began, 1)
        return result

    def archive() -> str:
        result = timed(f"archive {len(runs) + 1}", "archive", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])["run_id"]

    env = make_bucket_env(rgw, tmp_path)
    began = time.monotonic()
    make_tree(src)
    timings["tree"] = round(time.monotonic() - began, 1)
    picker = tmp_path / "pickers.d" / "10-src"
    picker.parent.mkdir()
    picker.write_text(f"#!/bin/sh\necho '{src}'\n")
    picker.chmod(0o755)
    watched = src / "d0042" / "f0042123.txt"
    removed = src / "d0099" / "f0099999.txt"
    runs: list[str] = []
    runs.append(archive())
    watched.write_bytes(b"second version\n")
    (src / "d0007" / "new.conf").write_bytes(b"added in run 2\n")
    removed.unlink()
    runs.append(archive())
    watched.write_bytes(b"third version, longer\n")
    runs.append(archive())
    newest_first = runs[::-1]

    found = timed("find NAME", "find", "f0042123.txt", "--json")
    assert found.exit_code == 0, found.output
    doc = json.loads(found.stdout)
    assert doc["runs_searched"] == 3 and doc["runs_skipped"] == 0
    assert [(m["run_id"], m["path"], m["size"]) for m in doc["matches"]] == [
        (newest_first[0], str(watched), 22), (newest_first[1], str(watched), 15),
        (newest_first[2], str(watched), len(b"42123\n"))]

    conf = json.loads(timed("find *.conf", "find", "*.conf", "--json").stdout)
    assert [(m["run_id"], m["path"]) for m in conf["matches"]] == [
        (newest_first[0], str(src / "d0007/new.conf")),
        (newest_first[1], str(src / "d0007/new.conf"))]

    anchored = json.loads(timed("find /DIR/*", "find", f"{src}/d0099/f009999*",
                                "--json").stdout)
    assert [m["run_id"] for m in anchored["matches"]].count(newest_first[2]) == 10
    assert [m["run_id"] for m in anchored["matches"]].count(newest_first[0]) == 9

    history = timed("history", "history", str(watched), "--json")
    assert history.exit_code == 0, history.output
    rows = json.loads(history.stdout)["runs"]
    assert [(r["run_id"], r["present"], r["size"], r["changed"]) for r in rows] == [
        (runs[0], True, 6, False), (runs[1], True, 15, True), (runs[2], True, 22, True)]
    gone = json.loads(timed("history removed", "history", str(removed), "--json").stdout)
    assert [(r["present"], r["changed"]) for r in gone["runs"]] == [
        (True, False), (False, True), (False, False)]

    diff = json.loads(timed("diff", "diff", runs[0], runs[2], "--json").stdout)
    inside = {c["path"]: c["change"] for c in diff["changes"]
              if c["path"].startswith(str(src) + "/")}
    assert inside == {str(src / "d0007"): "metadata", str(src / "d0007/new.conf"): "added",
                      str(src / "d0099"): "metadata", str(removed): "removed",
                      str(watched): "content"}
    print(f"\n100,000 files x 3 runs, seconds: {timings}")
