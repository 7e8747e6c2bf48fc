"""Content worker processes: small files read, chunked, hashed and compressed off the
main process; a dead worker fails the run; no worker outlives its run."""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import s3archive.archive.file_stage as file_stage
from s3archive.archive import content_workers
from s3archive.archive.content_workers import (ContentWorkerFailed, ContentWorkers, FileToRead,
                                                Walked, WorkerSettings)
from s3archive.archive.local_cache import pack_chunk_list
from s3archive.archive.sources import walker
from s3archive.config import ContentSettings, load_config
from s3archive.errors import ConfigError
from s3archive.repo.catalog import list_runs
from support.manifest_builder import make_bucket_env
from support.memory_host import MemoryHost



@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MemoryHost:
    monkeypatch.setattr(file_stage, "WORKERS_AFTER_FILES", 0)  # workers from the first batch
    return MemoryHost(tmp_path, "content-workers-test")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone(pids: list[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_workers_read_batches_in_walk_order_keep_holes_and_name_a_vanished_file(
        host: MemoryHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_stage, "BATCH_FILES", 8)
    monkeypatch.setattr(file_stage, "BATCH_BYTES", 64 * 1024)
    monkeypatch.setattr(file_stage, "BATCHES_PER_WORKER", 1)  # the bound is reached often
    # a small directory, walked by name as a large one of small files is
    monkeypatch.setattr(walker, "BY_NAME_ENTRIES", 0)
    monkeypatch.setattr(walker, "SAMPLED_FILES", 0)
    rng = random.Random(15)
    contents = {}
    for number in range(60):
        size = rng.choice([0, 10, 3000, 20_000, 70_000])
        contents[f"f{number:03d}"] = rng.randbytes(size // 2) + b"a" * (size - size // 2)
    for name, data in contents.items():
        (host.tree / name).write_bytes(data)
    with open(host.tree / "sparse", "wb") as handle:  # 8 MiB + 4 KiB: a large file, a thread's
        handle.write(b"A" * 4096)
        handle.seek(8 << 20)
        handle.write(b"B" * 4096)
    with open(host.tree / "small-sparse", "wb") as handle:  # a worker's
        handle.write(b"C" * 4096)
        handle.seek(40_960)
        handle.write(b"D" * 4096)
    sparse_kept = os.stat(host.tree / "small-sparse").st_blocks * 512 < 45_056
    batches: list[list[bytes]] = []
    real_submit = ContentWorkers.submit

    def recorded(self, batch, read_below):
        batches.append([item.path for item in batch])
        for item in batch:
            if item.path.endswith(b"/f021"):
                os.unlink(item.path)  # after the walk, before the worker reads it
        return real_submit(self, batch, read_below)

    monkeypatch.setattr(ContentWorkers, "submit", recorded)
    summary = host.attempt()

    assert len(summary.warnings) == 1
    assert "f021" in summary.warnings[0] and "vanished" in summary.warnings[0]
    # a first run: every file goes to a worker by name, in walk order (the large ones,
    # 64 KiB and more here, are handed back and read by a thread; the rest of a batch
    # that read 64 KiB goes to a worker again)
    given = list(dict.fromkeys(path for batch in batches for path in batch))
    assert given == sorted(os.fsencode(host.tree / name)
                           for name in [*contents, "small-sparse", "sparse"])
    assert all(len(batch) <= 8 for batch in batches)
    entries = host.entries()
    assert "f021" not in entries
    for name, data in contents.items():
        if name != "f021":
            assert entries[name].size == len(data)
            assert [c.hash for c in entries[name].chunks] == (
                [hashlib.sha256(data).hexdigest()] if data else [])
    if sparse_kept:
        assert entries["small-sparse"].extents == [(0, 4096), (40_960, 4096)]
        assert entries["sparse"].extents == [(0, 4096), (8 << 20, 4096)]
    assert summary.files == len(contents) + 1
    assert host.attempt().files_unchanged == summary.files  # the cache rows are right


def test_a_duplicate_chunk_from_a_worker_is_stored_once(host: MemoryHost) -> None:
    data = os.urandom(50_000)
    for number in range(40):
        (host.tree / f"same{number}").write_bytes(data)
    summary = host.attempt()
    assert summary.exit_code == 0
    chunks = {c.hash for e in host.entries().values() for c in e.chunks}
    assert chunks == {hashlib.sha256(data).hexdigest()}
    assert summary.stats.chunks_new == 1


def test_a_killed_worker_fails_the_run_with_one_line_and_commits_nothing(
        host: MemoryHost, monkeypatch: pytest.MonkeyPatch) -> None:
    for number in range(300):
        (host.tree / f"f{number:03d}").write_bytes(os.urandom(3000))
    submitted: list[ContentWorkers] = []
    real_submit = ContentWorkers.submit

    def kill_on_third(self, batch, read_below):
        submitted.append(self)
        if len(submitted) == 3:
            os.kill(self.pids[0], signal.SIGKILL)
            time.sleep(0.2)
        return real_submit(self, batch, read_below)

    monkeypatch.setattr(file_stage, "BATCH_FILES", 16)
    monkeypatch.setattr(ContentWorkers, "submit", kill_on_third)
    pids: list[int] = []
    real_start = ContentWorkers.start

    def start(self):
        started = real_start(self)
        pids.extend(self.pids)
        return started

    monkeypatch.setattr(ContentWorkers, "start", start)
    began = time.monotonic()
    with pytest.raises(ContentWorkerFailed) as failed:
        host.attempt()
    assert time.monotonic() - began < 30
    message = str(failed.value)
    assert "\n" not in message and "killed by signal 9" in message, message
    assert f"pid {pids[0]}" in message
    assert list_runs(host.store, "h") == []
    assert _gone(pids), "every worker stopped"
    assert host.attempt().exit_code == 0  # the next run is not held up


def _workers_of(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children = [int(c) for c in handle.read().split()]
        except FileNotFoundError:
            continue
        for child in children:
            try:  # spawned (its command line) or forked (its name) by the run
                with open(f"/proc/{child}/cmdline", "rb") as handle:
                    if b"content_workers" in handle.read():
                        found.add(child)
                with open(f"/proc/{child}/comm", "rb") as handle:
                    if handle.read().strip() == content_workers.WORKER_NAME:
                        found.add(child)
            except FileNotFoundError:
                pass
    return found


def _holds(pids: set[int], path: Path) -> bool:
    """Whether one of ``pids`` has ``path`` open."""
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                        return True
                except OSError:
                    pass
        except OSError:
            pass
    return False


def _interruptible() -> None:
    """In the child before exec: SIGINT as a terminal's foreground process gets it.
    A suite started in the background (``.ci/run &``) ignores SIGINT, the child would
    inherit that, and Python installs no KeyboardInterrupt handler then (the first CI
    failure of this test: the run, rightly, did not stop)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_no_worker_outlives_a_cli_run_stopped_by_a_signal(rgw, tmp_path: Path,
                                                          signum: int) -> None:
    env = make_bucket_env(rgw, tmp_path)
    with open(env.config_path, "a") as handle:
        handle.write("\n[content]\nworkers = 2\n[sources]\nlock_timeout = 60\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    for number in range(400):
        (tree / f"f{number:03d}").write_bytes(b"%d" % number)
    pickers = tmp_path / "pickers.d"
    pickers.mkdir()
    (pickers / "10-tree").write_text(f"#!/bin/sh\necho '{tree}'\n")
    (pickers / "10-tree").chmod(0o755)
    # a writer's lock on the last file holds its worker (lock_timeout): the signal comes
    # while the workers read
    with open(tree / "f399", "rb") as locked:
        fcntl.flock(locked, fcntl.LOCK_EX)
        errors = open(tmp_path / "stderr", "w+b")
        proc = subprocess.Popen([sys.executable, "-m", "s3archive", "--config",
                                 str(env.config_path), "archive"],
                                stdout=subprocess.DEVNULL, stderr=errors,
                                env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                                preexec_fn=_interruptible)
        try:
            workers: set[int] = set()
            deadline = time.monotonic() + 60
            while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
                workers |= _workers_of(proc.pid)
                time.sleep(0.01)
            assert len(workers) == 2, "the run started its workers"
            # (forked at the run's start: the signal comes once one reads the locked file)
            while not _holds(workers, tree / "f399") and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _holds(workers, tree / "f399"), "a worker waits for the writer's lock"
            time.sleep(0.5)
            assert proc.poll() is None
            proc.send_signal(signum)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # where it hangs: every thread's stack
                proc.send_signal(signal.SIGABRT)
                proc.wait(timeout=10)
                errors.seek(0)
                pytest.fail("the run did not stop within 30 s of the signal:\n"
                            + errors.read().decode(errors="replace"))
            # at once, though one worker still waits for the writer's lock (60 s)
            assert _gone(list(workers), within=5), "no orphaned content worker"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode != 0
    errors.seek(0)
    stderr = errors.read()
    errors.close()
    assert b"Traceback" not in stderr, stderr.decode()


@pytest.mark.parametrize("value, expected", [
    ("", os.cpu_count() or 1), ("workers = 0", 0), ("workers = 3", 3),
    ("workers = -1", "content.workers = -1: must be between 0 and 64"),
    ("workers = 65", "content.workers = 65: must be between 0 and 64"),
    ('workers = "2"', "content.workers = '2': must be "),
    ("workers = true", "content.workers = True: must be "),
])
def test_the_workers_setting(tmp_path: Path, value: str, expected: int | str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[s3]\nbucket = "some-bucket"\n[content]\n{value}\n')
    if isinstance(expected, int):
        assert load_config(path).content.content_workers() == expected
    else:
        with pytest.raises(ConfigError) as refused:
            load_config(path)
        assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_a_worker_that_fails_says_why_in_one_line() -> None:
    with ContentWorkers(1, WorkerSettings(3, 0.03, 2.0)) as workers:
        pid = workers.pids[0]
        job = workers.submit([FileToRead(None, 0, 0,  # type: ignore[arg-type]
                                         Walked(None, 0, 0, 0))])  # type: ignore[arg-type]
        with pytest.raises(ContentWorkerFailed) as failed:
            job.result(timeout=30)
        with pytest.raises(ContentWorkerFailed):
            workers.submit([])  # the pool is broken: nothing more is handed over
    message = str(failed.value)
    assert "\n" not in message and f"pid {pid}" in message and "TypeError" in message, message
    assert _gone([pid])


def test_a_worker_imports_nothing_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = tmp_path / "s3archive"
    planted.mkdir()
    (planted / "__init__.py").write_text('raise SystemExit("imported from the cwd")\n')
    (tmp_path / "file").write_bytes(b"content")
    monkeypatch.chdir(tmp_path)  # a root process started from a directory anyone writes to
    st = os.stat(tmp_path / "file")
    with ContentWorkers(1, WorkerSettings(3, 0.03, 2.0)) as workers:
        done = workers.submit([FileToRead(
            os.fsencode(tmp_path / "file"), st.st_ino, st.st_ctime_ns,
            Walked(st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns))]).result(timeout=30)
    assert done.files[0].ok
    assert [(piece.hash, piece.size) for piece in done.pieces] == [
        (hashlib.sha256(b"content").hexdigest(), 7)]


def test_keyed_ids_use_a_key_that_never_shows_in_argv_or_the_environment(
        tmp_path: Path) -> None:
    from s3archive.crypto.dedup import HmacSha256

    key = bytes(range(32))
    (tmp_path / "file").write_bytes(b"secret content")
    st = os.stat(tmp_path / "file")
    with ContentWorkers(1, WorkerSettings(3, 0.03, 2.0, id_key=key)) as workers:
        done = workers.submit([FileToRead(
            os.fsencode(tmp_path / "file"), st.st_ino, st.st_ctime_ns,
            Walked(st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns))]).result(timeout=30)
        for name in ("cmdline", "environ"):
            with open(f"/proc/{workers.pids[0]}/{name}", "rb") as handle:
                seen = handle.read()
            assert key not in seen and key.hex().encode() not in seen
    keyed = HmacSha256(key).digest(b"secret content").hex()
    assert [(piece.hash, piece.size) for piece in done.pieces] == [(keyed, 14)]
    assert done.files[0].spooled.endswith(b"\t%s:14\n" % keyed.encode())
    assert done.files[0].row is not None and done.files[0].row.chunks == \
        pack_chunk_list([(keyed, 14)])


def test_a_worker_imports_no_s3_client() -> None:
    modules = ["s3archive.archive.content_workers", "s3archive.archive.chunker",
               "s3archive.archive.sources.file_reader", "s3archive.format.chunk_codec",
               "s3archive.crypto.dedup"]
    code = (f"import sys; [__import__(m) for m in {modules!r}]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))")
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_large_files_do_not_start_the_workers_which_never_read_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers read small files only (large ones stay on reader threads), so only
    small files count towards starting them: a 1 % run that reads two large files
    again and a few small ones started two processes for nothing (~0.2 CPU s)."""
    monkeypatch.setattr(file_stage, "BATCH_BYTES", 256 * 1024)  # larger: read by a thread
    monkeypatch.setattr(file_stage, "WORKERS_AFTER_FILES", 12)
    monkeypatch.setattr(file_stage, "WORKERS_AFTER_BYTES", 1 << 20)
    starts: list[int] = []
    real_start = ContentWorkers.start

    def start(self):
        starts.append(self.count)
        return real_start(self)

    monkeypatch.setattr(ContentWorkers, "start", start)
    host = MemoryHost(tmp_path, "content-workers-large")
    rng = random.Random(16)
    for number in range(3):  # 3 x 1 MiB: past the bytes threshold, all large
        (host.tree / f"large{number}").write_bytes(rng.randbytes(1 << 20))
    for number in range(5):
        (host.tree / f"small{number}").write_bytes(rng.randbytes(5000))
    host.archive()
    assert starts == []
    for number in range(12):  # small files enough to pay for the workers
        (host.tree / f"more{number}").write_bytes(rng.randbytes(5000))
    host.archive()
    assert len(starts) == 1
    host.restores_exactly(tmp_path / "restored")


def test_entries_described_by_workers_are_the_bytes_the_main_process_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose files a content worker describes writes the tree nodes a run whose
    files the main process describes writes (same tree: same node ids, so the two
    runs' metadata dedupes): owners, modes, xattrs, an ACL, a metadata problem, holes,
    hardlinks, symlinks, a fifo, names that are not UTF-8."""
    import posix1e

    from s3archive.archive import dir_cache
    from s3archive.archive.local_cache import LocalCache
    from s3archive.repo.catalog import open_tree

    host = MemoryHost(tmp_path, "described-by-workers")
    tree = host.tree
    rng = random.Random(10)
    for number in range(150):
        folder = tree / f"d{number % 7}"
        folder.mkdir(exist_ok=True)
        path = folder / f"f{number}"
        path.write_bytes(rng.randbytes(rng.choice([0, 1, 200, 5000, 70_000])))
        os.chmod(path, rng.choice([0o600, 0o644, 0o4755, 0o640]))
    os.setxattr(tree / "d1" / "f1", "user.note", b"\x00\xffvalue")
    os.setxattr(tree / "d2" / "f2", b"user.\xff", b"not utf-8: left out, warned")
    posix1e.ACL(text="u::rw-,u:1000:r--,g::r--,m::r--,o::---").applyto(str(tree / "d3" / "f3"))
    with open(tree / "sparse", "wb") as handle:  # a hole in the middle
        handle.write(b"head")
        handle.seek(1 << 20)
        handle.write(b"tail")
    (tree / "linked").write_bytes(b"one inode, two names")
    os.link(tree / "linked", tree / "linked-too")
    os.symlink("d0/f0", tree / "link")
    os.mkfifo(tree / "fifo")
    (tree / os.fsdecode(b"name-\xff")).write_bytes(b"a name that is not UTF-8")

    def tree_node() -> str:  # the tree directory's node id
        item = open_tree(host.store, host.latest()).lookup(os.fsencode(tree))
        assert item is not None and item.tree is not None
        return item.tree.hash

    monkeypatch.setattr(ContentSettings, "content_workers", lambda self: 0)
    first = host.attempt()  # described and read in the main process
    assert first.exit_code != 0  # the xattr named in bytes that are not UTF-8 is warned of
    by_main = tree_node()

    monkeypatch.undo()
    monkeypatch.setattr(file_stage, "WORKERS_AFTER_FILES", 0)
    monkeypatch.setattr(LocalCache, "has_files", lambda self: False)  # every file read again
    monkeypatch.setattr(dir_cache.DirCache, "lookup", lambda self, path, digest: None)
    described_here: list[bytes] = []
    describe = file_stage.describe_entry

    def counted(path: bytes, st: os.stat_result):  # type: ignore[no-untyped-def]
        described_here.append(path)
        return describe(path, st)

    monkeypatch.setattr(file_stage, "describe_entry", counted)
    second = host.attempt()
    assert second.files_unchanged == 0 and second.bytes_read == first.bytes_read
    assert second.warnings == first.warnings
    assert tree_node() == by_main
    # every regular file of one link was described by a worker, not here
    here = {os.fsdecode(p.removeprefix(os.fsencode(tree) + b"/")) for p in described_here
            if p.startswith(os.fsencode(tree) + b"/")}
    assert here == {"d0", "d1", "d2", "d3", "d4", "d5", "d6", "link", "fifo", "linked",
                    "linked-too"}
    # the file whose metadata was incomplete has no file-cache row: described afresh
    monkeypatch.undo()
    monkeypatch.setattr(file_stage, "WORKERS_AFTER_FILES", 0)
    third = host.attempt()
    assert third.warnings == first.warnings
    assert third.files_unchanged == third.files - 1


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="Linux pipes only")
def test_a_workers_results_pipe_holds_a_whole_chunk() -> None:
    # 64 KiB (Linux's default) made a 1 MiB chunk cross in 16 writes, reads and wake-ups
    with ContentWorkers(1, WorkerSettings(3, 0.03, 2.0)) as workers:
        (worker,) = workers._workers
        assert fcntl.fcntl(worker._out.fileno(), fcntl.F_GETPIPE_SZ) >= content_workers.PIPE_BYTES
