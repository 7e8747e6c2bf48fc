"""``find`` and ``history`` through the real CLI against RGW."""

from __future__ import annotations

import json
import os
from pathlib import Path

from support.manifest_builder import invoke, make_bucket_env


def archive(env) -> str:
    result = invoke(env, "archive", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])["run_id"]


def test_find_and_history_across_runs(rgw, tmp_path: Path) -> None:
    env = make_bucket_env(rgw, tmp_path)
    src = tmp_path / "src"
    (src / "etc" / "nginx").mkdir(parents=True)
    (src / "etc" / "nginx" / "nginx.conf").write_text("v1\n")
    (src / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (src / "home").mkdir()
    (src / "home" / "notes.txt").write_text("notes\n")
    picker = tmp_path / "pickers.d" / "10-src"
    picker.parent.mkdir()
    picker.write_text(f"#!/bin/sh\necho '{src}'\n")
    picker.chmod(0o755)

    first = archive(env)
    (src / "etc" / "nginx" / "nginx.conf").write_text("v2 changed\n")  # content changes
    os.utime(src / "etc" / "hosts", (1_600_000_000, 1_600_000_000))   # only the mtime
    second = archive(env)
    (src / "etc" / "nginx" / "nginx.conf").unlink()                    # gone
    third = archive(env)

    found = invoke(env, "find", "*.conf", "--json")
    assert found.exit_code == 0, found.output
    doc = json.loads(found.stdout)
    assert doc["runs_searched"] == 3
    assert [(m["run_id"], m["path"]) for m in doc["matches"]] == [
        (second, f"{src}/etc/nginx/nginx.conf"), (first, f"{src}/etc/nginx/nginx.conf")]
    assert [m["size"] for m in doc["matches"]] == [len("v2 changed\n"), len("v1\n")]

    newest = json.loads(invoke(env, "find", f"{src}/etc/*", "--newest", "1", "--json").stdout)
    assert newest["runs_searched"] == 1
    assert {m["path"] for m in newest["matches"]} == {f"{src}/etc/hosts", f"{src}/etc/nginx"}

    table = invoke(env, "find", "notes.txt")
    assert table.exit_code == 0 and table.stdout.count("notes.txt") == 3

    nothing = invoke(env, "find", "*.nothing")
    assert nothing.exit_code == 1 and "no match in 3 run(s)" in nothing.stderr

    conf = json.loads(invoke(env, "history", str(src / "etc/nginx/nginx.conf"),
                             "--json").stdout)
    assert [(r["run_id"], r["present"], r["changed"]) for r in conf["runs"]] == [
        (first, True, False), (second, True, True), (third, False, True)]
    assert conf["runs"][0]["content"] != conf["runs"][1]["content"]

    hosts = json.loads(invoke(env, "history", str(src / "etc/hosts"), "--json").stdout)
    assert [r["changed"] for r in hosts["runs"]] == [False, False, False]  # mtime only
    assert hosts["runs"][0]["mtime_ns"] != hosts["runs"][1]["mtime_ns"]

    gone = invoke(env, "history", str(src / "never/there"))
    assert gone.exit_code == 1 and "is in none of 3 run(s)" in gone.stderr
    escape = invoke(env, "history", "../../etc/passwd")
    assert escape.exit_code == 2
