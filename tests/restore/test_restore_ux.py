"""A restore that shows what it does, through the real CLI against RGW:
``--dry-run`` (what would be written, what would be downloaded; nothing
touched), ``--include``/``--exclude`` (find's globs, subtrees, exclude wins,
parents with their metadata), ``-v`` (the restored paths on stdout) and
progress lines with totals when stderr is not a terminal."""

from __future__ import annotations

import json
import os
import random
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from s3archive.format.model import ChunkRef
from support.archive_env import ArchiveEnv
from support.manifest_builder import RunBuilder, make_bucket_env
from support.terminal import on_terminal

REPO = Path(__file__).resolve().parents[2]
ETC_MTIME = 1_400_000_000_000_000_000
NGINX_MTIME = 1_500_000_000_000_000_000
ALL = {"/", "/etc", "/etc/hosts", "/etc/nginx", "/etc/nginx/cache",
       "/etc/nginx/cache/blob.bin", "/etc/nginx/nginx.conf", "/etc/nginx/sites",
       "/etc/nginx/sites/default", "/srv", "/srv/data", "/srv/data/a-copy.bin",
       "/srv/data/a.bin", "/srv/data/b.log", "/srv/link"}


def run_cli(env, *args: str, expect: int = 0, environ: dict[str, str] | None = None):
    result = CliRunner().invoke(cli, ["--config", str(env.config_path), *args],
                                catch_exceptions=False,
                                env={"JOURNAL_STREAM": "", **(environ or {})})
    assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr)
    return result


@pytest.fixture
def tree(rgw, tmp_path: Path):
    """A run of a small tree; ``chunks`` holds each file's chunk references."""
    env = make_bucket_env(rgw, tmp_path)
    rng = random.Random(14)
    noise = rng.randbytes  # incompressible: stored as plain
    builder = RunBuilder(env.store, pack_size=8 << 20)
    chunks: dict[str, list[ChunkRef]] = {}

    def file(path: str, data: bytes, **kw: object) -> None:
        chunks[path] = builder.file(path.encode(), data, **kw).chunks

    builder.dir(b"/")
    builder.dir(b"/etc", mode=0o711, mtime_ns=ETC_MTIME)
    file("/etc/hosts", b"127.0.0.1 localhost\n")
    builder.dir(b"/etc/nginx", mode=0o750, mtime_ns=NGINX_MTIME)
    builder.dir(b"/etc/nginx/cache")
    file("/etc/nginx/cache/blob.bin", noise(300_000))
    file("/etc/nginx/nginx.conf", b"worker_processes 1;\n")
    builder.dir(b"/etc/nginx/sites")
    file("/etc/nginx/sites/default", b"server {}\n")
    builder.dir(b"/srv")
    builder.dir(b"/srv/data")
    a = noise(200_000)  # four chunks of 64 KiB at most
    file("/srv/data/a.bin", a)
    file("/srv/data/a-copy.bin", a)  # the same chunks again: downloaded once
    file("/srv/data/b.log", noise(50_000))
    builder.symlink(b"/srv/link", b"data/a.bin")
    run = builder.upload()
    return env, run, chunks


def restored_paths(target: Path) -> set[str]:
    found = {"/"}
    for root, dirs, files in os.walk(target):
        for name in dirs + files:
            found.add("/" + os.path.relpath(os.path.join(root, name), target))
    return found


def stored_bytes(*refs: list[ChunkRef]) -> int:
    return sum(ref.stored for ref in {r for group in refs for r in group})


def test_dry_run_lists_what_would_be_written_touches_nothing_and_predicts_the_download(
        tree, tmp_path: Path) -> None:
    env, run, chunks = tree
    target = tmp_path / "not-yet"

    listing = run_cli(env, "restore", run.run_id, "--target", str(target), "--dry-run")
    assert set(listing.stdout.splitlines()) == ALL
    assert len(listing.stdout.splitlines()) == len(ALL)
    assert not target.exists()
    summary = listing.stderr.splitlines()[-1]
    every_chunk = stored_bytes(*chunks.values())
    assert summary.startswith(f"dry run: would restore testhost/{run.run_id} into {target}: "
                              "15 entries, 7 files, ")
    assert "nothing written" in summary

    # everything sits back to back in one pack; files of 128 KiB or more are fetched
    # apart from the rest (restore/direct.py): blob.bin in one GET, a.bin and its copy
    # together in one, each distinct chunk once; the small files and b.log by the
    # ordered path, whose GETs read across gaps of up to 256 KiB: hosts alone (blob.bin's
    # 300,000 bytes follow it), then nginx.conf to b.log across a.bin's bytes, again
    whole = json.loads(run_cli(env, "restore", run.run_id, "--dry-run", "--json").stdout)
    assert whole["download_bytes"] == every_chunk + stored_bytes(chunks["/srv/data/a.bin"])
    assert whole["requests"] == 4
    assert whole["entries"] == 15 and whole["files"] == 7 and whole["target"] is None
    assert whole["bytes"] == 300_000 + 2 * 200_000 + 50_000 + 20 + 20 + 10  # written, copies too
    # a selection: a.bin and its copy share their chunks, fetched once
    data = json.loads(run_cli(env, "restore", run.run_id, "/srv/data", "--dry-run",
                              "--json").stdout)
    assert data["download_bytes"] == stored_bytes(chunks["/srv/data/a.bin"],
                                                  chunks["/srv/data/b.log"])
    assert data["bytes"] == 450_000 and data["files"] == 3 and data["requests"] == 2

    # ... and that is what the restore then downloads from the packs
    filtered = ("--include", "/etc", "--exclude", "cache")
    preview = json.loads(run_cli(env, "restore", run.run_id, *filtered, "--dry-run",
                                 "--json").stdout)
    done = json.loads(run_cli(env, "restore", run.run_id, *filtered, "--target", str(target),
                              "--json").stdout)
    assert done["ok"] and done["entries"] == preview["entries"] == 7
    assert done["bytes"] == preview["bytes"] == 50
    # the manifest is read by both; the packs only by the restore
    assert done["store"]["bytes_down"] - preview["store"]["bytes_down"] == \
        preview["download_bytes"]
    # the excluded 300,000 bytes between hosts and nginx.conf are more than the pack
    # reader reads across (256 KiB): two GETs of the three small files' bytes
    assert preview["download_bytes"] == stored_bytes(
        chunks["/etc/hosts"], chunks["/etc/nginx/nginx.conf"], chunks["/etc/nginx/sites/default"])
    assert done["store"]["requests"]["GetObject"] - preview["store"]["requests"]["GetObject"] \
        == preview["requests"] == 2

    # a non-empty target: the dry run says the restore would refuse it, and leaves it alone
    before = sorted(restored_paths(target))
    again = run_cli(env, "restore", run.run_id, "--target", str(target), "--dry-run")
    assert f"warning: (restore): {target} is not empty: the restore would refuse it" \
        in again.stderr
    assert sorted(restored_paths(target)) == before


def test_include_and_exclude_select_exactly_and_bring_parents_with_their_metadata(
        tree, tmp_path: Path) -> None:
    env, run, _ = tree

    def restore(name: str, *args: str) -> Path:
        target = tmp_path / name
        run_cli(env, "restore", run.run_id, "--target", str(target), *args)
        return target

    # an exclude inside an include: the excluded directory leaves with its subtree
    nginx = restore("nginx", "--include", "/etc/nginx", "--exclude", "cache")
    assert restored_paths(nginx) == {"/", "/etc", "/etc/nginx", "/etc/nginx/nginx.conf",
                                     "/etc/nginx/sites", "/etc/nginx/sites/default"}
    # nested includes (a file deep down, a name glob): parents come with their metadata
    nested = restore("nested", "--include", "/etc/nginx/sites/default", "--include", "*.log")
    assert restored_paths(nested) == {"/", "/etc", "/etc/nginx", "/etc/nginx/sites",
                                      "/etc/nginx/sites/default", "/srv", "/srv/data",
                                      "/srv/data/b.log"}
    etc, sub = os.stat(nested / "etc"), os.stat(nested / "etc/nginx")
    assert (etc.st_mode & 0o7777, etc.st_mtime_ns) == (0o711, ETC_MTIME)
    assert (sub.st_mode & 0o7777, sub.st_mtime_ns) == (0o750, NGINX_MTIME)
    assert (nested / "etc/nginx/sites/default").read_bytes() == b"server {}\n"
    # exclude wins over an include, also for what an included directory brings
    srv = restore("srv", "--include", "/srv", "--include", "/srv/data/a.bin",
                  "--exclude", "/srv/data/a*")
    assert restored_paths(srv) == {"/", "/srv", "/srv/data", "/srv/data/b.log", "/srv/link"}
    # with PATHs the filter applies inside them; a whole-path glob with '**'
    inside = restore("inside", "/etc", "--exclude", "/etc/**/*.conf", "--exclude", "sites")
    assert restored_paths(inside) == {"/", "/etc", "/etc/hosts", "/etc/nginx",
                                      "/etc/nginx/cache", "/etc/nginx/cache/blob.bin"}
    # an exclude that matches nothing is a warning, not an error
    loose = run_cli(env, "restore", run.run_id, "/srv/data", "--exclude", "*.tmp",
                    "--target", str(tmp_path / "loose"))
    assert "warning: (restore): --exclude '*.tmp' matches nothing in this run below the " \
           "paths given" in loose.stderr
    assert restored_paths(tmp_path / "loose") == {"/", "/srv", "/srv/data", "/srv/data/a.bin",
                                                  "/srv/data/a-copy.bin", "/srv/data/b.log"}


def test_a_glob_that_selects_nothing_is_a_usage_error_and_writes_nothing(
        tree, tmp_path: Path) -> None:
    env, run, _ = tree
    target = tmp_path / "t"
    cases = [
        (("--include", "/etc/apache2", "--include", "/etc/hosts"),
         "--include '/etc/apache2' matches nothing in this run"),
        (("/srv", "--include", "hosts"),
         "--include 'hosts' matches nothing in this run below the paths given"),
        (("--include", "/srv/data", "--exclude", "data"),
         "nothing to restore: every entry is excluded"),
        (("--exclude", "*"), "nothing to restore: every entry is excluded"),
        (("--include", ""), "--include '': an empty pattern (to restore everything, leave out --include)"),
    ]
    for args, message in cases:
        for dry in ((), ("--dry-run",)):
            result = run_cli(env, "restore", run.run_id, "--target", str(target), *args, *dry,
                             expect=2)
            assert result.stderr == f"s3archive: error: {message}\n"
            assert result.stdout == "" and not target.exists()
    no_target = run_cli(env, "restore", run.run_id, expect=2)
    assert "restore needs --target DIR (or --dry-run" in no_target.stderr
    both = run_cli(env, "restore", run.run_id, "--dry-run", "--resume", expect=2)
    assert "--dry-run cannot tell what --resume would keep" in both.stderr


def test_verbose_lists_exactly_the_restored_paths_on_stdout(tree, tmp_path: Path) -> None:
    env, run, _ = tree
    args = ("/etc", "--exclude", "cache")
    listed = run_cli(env, "-v", "restore", run.run_id, *args, "--target",
                     str(tmp_path / "v")).stdout.splitlines()
    assert sorted(listed) == sorted(restored_paths(tmp_path / "v"))
    assert len(listed) == len(set(listed)) == 7
    preview = run_cli(env, "restore", run.run_id, *args, "--dry-run").stdout.splitlines()
    assert listed == preview  # in the same (manifest) order
    quiet = run_cli(env, "restore", run.run_id, *args, "--target", str(tmp_path / "q"))
    assert quiet.stdout == ""
    as_json = run_cli(env, "restore", run.run_id, *args, "-v", "--json", "--target",
                      str(tmp_path / "j"))
    assert json.loads(as_json.stdout)["entries"] == 7  # one JSON document, nothing else


def test_progress_lines_without_a_terminal_carry_totals_and_the_summary_uses_binary_units(
        tree, tmp_path: Path) -> None:
    env, run, _ = tree
    result = run_cli(env, "restore", run.run_id, "--target", str(tmp_path / "p"),
                     environ={"S3ARCHIVE_PROGRESS_INTERVAL": "0"})
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    total = "of 732.5 KiB written"  # 750,050 plain bytes to write
    assert lines[0] == f"restoring: 0/15 entries, 0 B {total}, 0 B/s, ETA -"
    progress = [line for line in lines if line.startswith("progress: ")]
    assert len(progress) >= 15 and all(total in line for line in progress)
    assert any(", now /etc/nginx/cache/blob.bin" in line for line in progress)
    assert progress[-1].startswith("progress: 15/15 entries, "
                                   "732.5 KiB of 732.5 KiB written, ")
    assert progress[-1].endswith(", ETA 0s, now /srv/link")
    summary = lines[-1]
    assert re.fullmatch(rf"restored testhost/{run.run_id} into .*: 15 entries, 7 files, "
                        r"732\.5 KiB in [\d.]+s \([\d.]+ (B|KiB|MiB|GiB)/s\)", summary), summary
    # the default interval (a minute) keeps a short restore to its phase line and summary
    plain = run_cli(env, "restore", run.run_id, "--target", str(tmp_path / "d"))
    assert len(plain.stderr.splitlines()) == 2
    assert run_cli(env, "-q", "restore", run.run_id, "--target", str(tmp_path / "q")).stderr == ""


def test_on_a_terminal_a_live_line_with_totals_and_verbose_paths_above_it(
        tree, tmp_path: Path) -> None:
    """The real command on a pseudo-terminal (stdout and stderr both on it)."""
    env, run, _ = tree
    environ = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    status, seen = on_terminal(
        [sys.executable, "-m", "s3archive", "--config", str(env.config_path), "-v", "restore",
         run.run_id, "/etc", "--target", str(tmp_path / "tty")],
        env={**environ, "PYTHONPATH": str(REPO)}, cwd=REPO, columns=100)
    assert status == 0, seen
    text = seen.decode().replace("\r\n", "\n")
    clear = "\r\x1b[K"
    assert text.startswith(f"{clear}restoring: 0/9 entries, 0 B of 293.0 KiB "
                           "written, 0 B/s, ETA - ")
    # each path on a line of its own, the status line cleared before it and drawn again after
    paths = [line.split(clear)[-1] for line in text.split("\n")[:-2]]
    assert paths == ["/", "/etc", "/etc/hosts", "/etc/nginx", "/etc/nginx/cache",
                     "/etc/nginx/cache/blob.bin", "/etc/nginx/nginx.conf", "/etc/nginx/sites",
                     "/etc/nginx/sites/default"]
    assert f"{clear}restoring: 3/9 entries, " in text
    statuses = [part for part in text.replace("\n", clear).split(clear)
                if part.startswith("restoring: ")]
    assert all(len(status) < 100 for status in statuses)  # never wraps: it can be redrawn
    assert any(status.endswith("/cache/blob.bin") for status in statuses), statuses
    assert statuses[-1].startswith("restoring: 9/9 entries, 293.0 KiB of 293.0 KiB written, ")
    assert text.split("\n")[-2].split(clear)[-1].startswith(
        f"restored testhost/{run.run_id} into ")


def test_the_dry_run_predicts_what_restoring_an_archived_run_downloads(rgw, tmp_path: Path) -> None:
    """The same through ``archive`` (the current storage format, metadata packs and all)."""
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())
    data = tmp_path / "data"
    (data / "keep").mkdir(parents=True)
    (data / "skip").mkdir()
    blob = random.Random(6).randbytes(700_000)
    (data / "keep" / "a.bin").write_bytes(blob)
    (data / "keep" / "a-copy.bin").write_bytes(blob)  # deduplicated: downloaded once
    (data / "keep" / "notes.txt").write_text("notes\n" * 1000)
    (data / "skip" / "b.bin").write_bytes(random.Random(7).randbytes(400_000))
    env.pick(data)
    assert env.archive()["exit_code"] == 0
    args = ("restore", "latest", str(data), "--exclude", "skip", "--json")
    preview = env.run(*args, "--dry-run").json
    done = env.run(*args, "--target", str(tmp_path / "out")).json
    assert done["ok"] and done["entries"] == preview["entries"]
    assert done["bytes"] == preview["bytes"] == 2 * 700_000 + 6000
    assert done["store"]["bytes_down"] - preview["store"]["bytes_down"] == \
        preview["download_bytes"]
    # a.bin once (incompressible), notes compressed; twice a.bin or any of b.bin is >= 1.1 MB
    assert 700_000 < preview["download_bytes"] < 1_100_000
    assert (tmp_path / "out" / str(data).lstrip("/") / "keep" / "a-copy.bin").read_bytes() == blob
    assert not (tmp_path / "out" / str(data).lstrip("/") / "skip").exists()


def test_a_restore_reuses_its_large_buffers_and_a_dry_run_leaves_the_allocator_alone(
        tree, tmp_path: Path, monkeypatch) -> None:
    """Bodies and plain chunks of up to 8 MiB, freed and allocated again per GET, come
    from the heap during a restore (no page faults for each one afresh)."""
    from s3archive.cli import restore as restore_cli
    env, run, _ = tree
    calls: list[tuple[int, int | None, int | None]] = []
    monkeypatch.setattr(restore_cli, "set_mmap_threshold",
                        lambda size, keep_free=None, arenas=None:
                        calls.append((size, keep_free, arenas)))
    run_cli(env, "restore", run.run_id, "--dry-run")
    assert calls == []
    run_cli(env, "restore", run.run_id, "--target", str(tmp_path / "t"))
    assert calls == [(32 << 20, 64 << 20, 2)]  # the heap kept free: 64 MiB an arena
    assert restored_paths(tmp_path / "t") == ALL
