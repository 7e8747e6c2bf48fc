"""Content workers forked at the opening of an archive run (archive/content_workers.py,
``fork_workers``): taken by the pool before it spawns any, reading as a spawned worker
reads; nothing of the parent's runs in them; none outlives its pipes; never forked
while the process has a second thread.

Each test runs in a fresh interpreter (``fork_workers`` needs a process of one
thread, which a test runner is not)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_PRELUDE = """
import atexit, json, os, sys, threading, time
from s3archive.archive import content_workers as cw
from s3archive.archive.content_workers import ContentWorkers, FileToRead, Walked, WorkerSettings

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

def read_one(workers, path):
    st = os.stat(path)
    done = workers.submit([FileToRead(os.fsencode(path), st.st_ino, st.st_ctime_ns,
                                      Walked(st.st_mode, st.st_uid, st.st_gid,
                                             st.st_mtime_ns))]).result(timeout=30)
    return [done.files[0].ok, [[p.hash, p.size] for p in done.pieces]]
"""


def _run(code: str, tmp_path: Path) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", _PRELUDE + code, str(tmp_path)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout


def test_the_pool_takes_forked_workers_which_read_as_a_spawned_one(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"forked content" * 1000)
    seen, _ = _run("""
tmp = sys.argv[1]
made = cw.fork_workers(2)
forked = [w.pid for w in cw._forked]
def name(pid):  # (a worker names itself once forked: wait for it)
    deadline = time.monotonic() + 10
    while True:
        found = open(f"/proc/{pid}/comm", "rb").read().strip().decode()
        if found != "python" or time.monotonic() > deadline:
            return found
        time.sleep(0.01)
names = [name(pid) for pid in forked]
fds = sorted(int(fd) for fd in os.listdir(f"/proc/{forked[1]}/fd"))
with ContentWorkers(1, WorkerSettings(3, 0.03, 2.0)) as workers:
    used = workers.pids
    read = read_one(workers, tmp + "/file")
left = [w.pid for w in cw._forked]
cw.release_forked()
time.sleep(0.05)
print(json.dumps({"made": made, "forked": forked, "names": names, "fds": fds, "used": used,
                  "read": read, "left": left, "alive": [alive(p) for p in forked]}))
""", tmp_path)
    assert seen["made"] == 2
    assert seen["used"] == seen["forked"][:1], "the pool took a forked worker, spawned none"
    assert seen["left"] == seen["forked"][1:]
    assert seen["names"] == ["content_workers"] * 2
    assert seen["fds"] == [0, 1, 2], "a worker keeps only its pipes and stderr"
    plain = b"forked content" * 1000
    assert seen["read"] == [True, [[hashlib.sha256(plain).hexdigest(), len(plain)]]]
    assert seen["alive"] == [False, False], "the used one stopped, the spare one released"


def test_a_forked_worker_ends_with_its_own_pipe_and_runs_nothing_of_its_parent(
        tmp_path: Path) -> None:
    seen, out = _run("""
tmp = sys.argv[1]
atexit.register(lambda: open(tmp + "/exits", "a").write("%d\\n" % os.getpid()))
sys.stdout.write("buffered, not written again by a worker\\n")
cw.fork_workers(2)
first, second = cw._forked
first.stdin.close()  # its input ends: it stops, though the second holds pipes of its own
code = first.wait(timeout=10)
still = alive(second.pid)
cw._forked.remove(first)
cw.release_forked()
print(json.dumps({"code": code, "second_alive_meanwhile": still, "parent": os.getpid()}))
""", tmp_path)
    assert seen["code"] == 0
    assert seen["second_alive_meanwhile"]
    # the parent's exit handler ran once, in the parent; its buffered output was not
    # written again by a worker
    assert (tmp_path / "exits").read_text() == f"{seen['parent']}\n"
    assert out.count("buffered, not written again by a worker") == 1


def test_no_fork_while_a_second_thread_runs_the_pool_spawns_instead(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    seen, _ = _run("""
tmp = sys.argv[1]
stop = threading.Event()
thread = threading.Thread(target=stop.wait)
thread.start()
made = cw.fork_workers(2)
with ContentWorkers(1, WorkerSettings(3, 0.03, 2.0)) as workers:
    cmdline = open(f"/proc/{workers.pids[0]}/cmdline", "rb").read()
    read = read_one(workers, tmp + "/file")
stop.set()
print(json.dumps({"made": made, "spawned": b"content_workers" in cmdline, "read": read}))
""", tmp_path)
    assert seen["made"] == 0
    assert seen["spawned"]
    assert seen["read"] == [True, [[hashlib.sha256(b"x").hexdigest(), 1]]]


def test_a_forked_worker_uses_its_buffers_again_as_a_spawned_one(tmp_path: Path) -> None:
    """The main process maps every allocation of 1 MiB and more afresh (cli/main.py);
    a forked worker must not inherit that: files of a few MiB would be faulted in
    page by page, each (a spawned worker's glibc reuses its heap for them)."""
    for number in range(12):
        (tmp_path / f"f{number}").write_bytes(os.urandom(3 << 20))
    seen, _ = _run("""
import ctypes
tmp = sys.argv[1]
ctypes.CDLL(None).mallopt(-3, 1 << 20)  # as cli.main.main sets it
cw.fork_workers(1)
def faults(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[7])
with ContentWorkers(1, WorkerSettings(3, 0.03, 2.0)) as workers:
    pid = workers.pids[0]
    read_one(workers, tmp + "/f0")  # its buffers made once
    before = faults(pid)
    for number in range(1, 12):
        read_one(workers, tmp + f"/f{number}")
    after = faults(pid)
print(json.dumps({"faults": after - before}))
""", tmp_path)
    # 11 files of 3 MiB: ~17,000 pages (read block and zstd frame each) if mapped afresh
    assert seen["faults"] < 3000, seen


@pytest.mark.parametrize("main_nice", [0, 19])
def test_workers_forked_or_spawned_run_below_the_main_process(
        tmp_path: Path, main_nice: int) -> None:
    """The main process keeps its priority; each worker (forked, or spawned when none
    is) runs WORKER_NICE nicer and under SCHED_BATCH, by the time it reads a file —
    or, below a main process at nice 19 (the shipped unit's), under SCHED_IDLE."""
    (tmp_path / "file").write_bytes(b"x" * 100)
    seen, _ = _run(f"os.nice({main_nice})\n" + """
tmp = sys.argv[1]
def priority(pid):
    return [os.getpriority(os.PRIO_PROCESS, pid), os.sched_getscheduler(pid)]
parent = priority(0)
cw.fork_workers(1)
with ContentWorkers(1, WorkerSettings(3, 0.03, 2.0)) as workers:
    read_one(workers, tmp + "/file")
    forked = [priority(pid) for pid in workers.pids]
cw.release_forked()
with ContentWorkers(1, WorkerSettings(3, 0.03, 2.0)) as workers:  # none forked: spawned
    read_one(workers, tmp + "/file")
    spawned = [priority(pid) for pid in workers.pids]
print(json.dumps({"parent": parent, "after": priority(0), "forked": forked,
                  "spawned": spawned, "nice": cw.WORKER_NICE, "batch": os.SCHED_BATCH,
                  "idle": os.SCHED_IDLE}))
""", tmp_path)
    nice, policy = seen["parent"]
    assert seen["after"] == seen["parent"], "the main process keeps its priority"
    after = min(nice + seen["nice"], 19)  # (nice values stop at 19)
    worker = [after, seen["batch"] if after - nice >= seen["nice"] // 2 else seen["idle"]]
    assert seen["forked"] == [worker] and seen["spawned"] == [worker]
    if main_nice == 19:  # no room below it: idle
        assert worker == [19, seen["idle"]]
