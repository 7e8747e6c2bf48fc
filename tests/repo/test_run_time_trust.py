"""A run's time is the store's: a run id "from the future" is flagged by
``runs``, reported by ``verify`` and never ``latest`` (RGW, the real CLI)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from s3archive.repo.catalog import (RUN_ID_SKEW, latest_run, list_runs, run_id_time,
                                    run_id_time_problem)
from s3archive.store.base import ObjectLock
from support.manifest_builder import RunBuilder, invoke, make_bucket_env
from support.memory_store import FakeClock, MemoryStore

PLANTED = "29991231T000000Z"


@pytest.fixture(scope="module")
def bucket(rgw, tmp_path_factory):
    """An honest run of host victim, then a planted one from the year 2999 that
    leaves out /etc/shadow (what an attacker holding any host's credentials
    could upload if IAM let it write runs/victim/)."""
    env = make_bucket_env(rgw, tmp_path_factory.mktemp("trust"), host="victim")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    honest = RunBuilder(env.store, host="victim", started=now - timedelta(minutes=5))
    honest.dir(b"/")
    honest.file(b"/etc/passwd", b"root:x:0:0\n")
    honest.file(b"/etc/shadow", b"root:*:1:0\n")
    honest.snapshot("db", b"dump\n", restore_through="cat > /dev/null")
    honest_run = honest.upload()
    planted = RunBuilder(env.store, host="victim", run_id=PLANTED, started=now)
    planted.dir(b"/")
    planted.file(b"/etc/passwd", b"root:x:0:0\n")
    planted.snapshot("db", b"evil\n", restore_through="cat > /tmp/owned")
    planted.upload()
    return env, honest_run


def test_planted_future_run_is_not_latest(bucket) -> None:
    env, honest_run = bucket
    for command in ("show", "ls"):
        assert invoke(env, command, "latest").exit_code == 0
    shown = json.loads(invoke(env, "show", "latest", "--json").stdout)
    assert shown["run_id"] == honest_run.run_id
    listing = invoke(env, "ls", "latest", "/etc").stdout
    assert "/etc/shadow" in listing
    # Named explicitly, the planted run is still reachable (for forensics).
    assert json.loads(invoke(env, "show", PLANTED, "--json").stdout)["run_id"] == PLANTED


def test_runs_flags_the_planted_run(bucket) -> None:
    env, honest_run = bucket
    rows = {r["run_id"]: r for r in json.loads(invoke(env, "runs", "--json").stdout)}
    assert rows[PLANTED]["time_trusted"] is False
    assert rows[PLANTED]["status"] == "untrusted time"
    assert "names a start after the store wrote the manifest" in rows[PLANTED]["time_problem"]
    honest = rows[honest_run.run_id]
    assert honest["time_trusted"] is True and honest["time_problem"] is None
    assert honest["status"] == "complete"
    written = datetime.fromisoformat(honest["written"])
    assert abs(written - datetime.now(timezone.utc)) < timedelta(minutes=10)
    table = invoke(env, "runs")
    line = next(l for l in table.stdout.splitlines() if l.startswith(PLANTED))
    assert line.rstrip().endswith("untrusted time")
    assert f"victim/{PLANTED}" in table.stderr and "'latest' ignores it" in table.stderr


def test_verify_reports_the_planted_run(bucket) -> None:
    env, honest_run = bucket
    single = invoke(env, "verify", PLANTED, "--json")
    assert single.exit_code == 1
    problems = json.loads(single.stdout)["runs"][0]["problems"]
    assert [p["kind"] for p in problems] == ["time"]
    every = invoke(env, "verify", "--all")
    assert every.exit_code == 1
    assert f"PROBLEM  victim/{PLANTED}: 1 problem(s)" in every.stdout
    assert f"ok       victim/{honest_run.run_id}" in every.stdout
    assert invoke(env, "verify").exit_code == 0  # latest is the honest run


# ------------------------------------------------------------------ the rule itself


def test_run_id_time_reads_the_leading_timestamp_only() -> None:
    moment = datetime(2026, 11, 21, 23, 58, tzinfo=timezone.utc)
    assert run_id_time("20261121T235800Z") == moment
    assert run_id_time("20261121T235800Z-1") == moment
    assert run_id_time("20261121T235800Z-k3v9q") == moment
    assert run_id_time("r1") is None
    assert run_id_time("20261399T000000Z") is None  # no 13th month


def test_skew_bounds_ids_ahead_of_the_store_not_behind_it() -> None:
    written = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)
    assert run_id_time_problem("20261122T040000Z", written) is None  # exactly the skew
    assert run_id_time_problem("20261122T040001Z", written) is not None
    assert run_id_time_problem("20261120T030000Z", written) is None  # a long run
    assert RUN_ID_SKEW == timedelta(hours=1)


def test_latest_goes_by_id_among_trusted_runs_and_by_first_version() -> None:
    clock = FakeClock(datetime(2031, 3, 3, 2, 30, tzinfo=timezone.utc))
    store = MemoryStore(clock)
    lock = ObjectLock("GOVERNANCE", clock() + timedelta(days=3))

    def put(run_id: str) -> str:
        version = store.put(f"runs/h/{run_id}.jsonl.zst", b"x", lock).version_id
        clock.advance(timedelta(minutes=1))
        return version

    put("20310303T020000Z")
    ahead = put("20310303T040000Z")  # 1 h 29 min after the store's time
    put("zzzz")  # names no time: reachable by name, never latest
    within = put("20310303T032000Z")  # 47 min ahead: within the skew
    assert latest_run(list_runs(store, "h")).version_id == within
    # A later version of a key does not move the run's time: the first counts.
    put("20310303T040000Z")
    assert latest_run(list_runs(store, "h")).version_id == within
    assert ahead != within
