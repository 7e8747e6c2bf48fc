"""S3 faults between s3archive and RGW: nothing lost, nothing wrong accepted.

The fault-injecting proxy (``tests/support/fault_proxy.py``) sits between
the store and RGW.  First each kind of fault alone, on the first try of
every request, through ``S3Store``; then the real CLI at 10 % faults of all
kinds: ``archive`` completes, ``restore`` is exact, ``verify --read-data``
passes; then faults that never clear: a body that always breaks is a
transport failure (named as such by verify and restore), a body garbled on
every read is damage, no garbled byte is ever written by restore, and a body
garbled once is read again and accepted only when it matches.

Counts (seeded): the 10 % test (every tenth request, in arrival order) archives
60 files (about 30 MiB, 1 MiB packs) four times, a quarter of the files
changed before each next run, and restores and verifies the last run: about
40 requests and 4 faults while archiving (lost acknowledgements of manifest
PUTs included: the commit is idempotent), 80 requests and 8 faults while
reading back.
"""

from __future__ import annotations

import random
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3archive.errors import IntegrityError, TransportError
from s3archive.store.base import ObjectLock
from s3archive.store.s3_store import BodyRetry, S3Store
from support.archive_env import ArchiveEnv
from support.fault_proxy import (BODY_KINDS, KINDS, NO_FAULTS, FaultPlan, FaultProxy, Request,
                                 fault_proxy)

KiB = 1 << 10
MiB = 1 << 20
FAST_RETRY = BodyRetry(attempts=4, first_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
def proxy(rgw: Any) -> Iterator[FaultProxy]:
    with fault_proxy(rgw.endpoint_url) as running:
        yield running


@pytest.fixture
def faults(proxy: FaultProxy) -> Iterator[FaultProxy]:
    proxy.plan = NO_FAULTS
    yield proxy
    proxy.plan = NO_FAULTS


def proxied_store(rgw: Any, proxy: FaultProxy, retry: BodyRetry = FAST_RETRY) -> S3Store:
    """S3Store as ``open_store`` builds it (botocore retries included), through the proxy."""
    import boto3

    from s3archive.config import S3Settings
    from s3archive.store.s3_store import make_client

    session = boto3.Session(aws_access_key_id=rgw.access_key,
                            aws_secret_access_key=rgw.secret_key, region_name=rgw.region)
    client = make_client(S3Settings(bucket="unused", endpoint_url=proxy.endpoint_url),
                         session=session)
    bucket = f"faults-{random.Random().getrandbits(40):010x}"
    rgw.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return S3Store(client, bucket, body_retry=retry)


def lock_for_an_hour() -> ObjectLock:
    from datetime import datetime, timedelta, timezone

    return ObjectLock("GOVERNANCE", datetime.now(timezone.utc).replace(microsecond=0)
                      + timedelta(hours=1))


# ------------------------------------------------------------------ the store, fault by fault


@pytest.mark.parametrize("kind", sorted(BODY_KINDS))
def test_a_get_whose_body_breaks_is_read_again(rgw: Any, faults: FaultProxy, kind: str) -> None:
    """Defect 7: a body that breaks after the headers is retried, never returned or blamed.

    Only GETs meet the fault, on their first try.  A garbled body can be told
    only where the store gives a checksum: a whole-object read (MD5 ETag); a
    garbled range is the pack reader's to catch (the CLI tests below).
    """
    store = proxied_store(rgw, faults)
    data = random.Random(7).randbytes(300 * KiB)
    put = store.put("packs/ab/one", data, None)

    def only_gets(request: Request, drawn: str) -> bool:
        return request.method != "GET" or (drawn == "corrupt" and request.range is not None)

    faults.plan = FaultPlan(rate=1.0, kinds=(kind,), first_tries_only=True, spare=only_gets)
    assert store.get("packs/ab/one", put.version_id) == data
    if kind != "corrupt":
        assert store.get("packs/ab/one", put.version_id, (1000, 200_999)) == data[1000:201_000]
        assert store.get("packs/ab/one", put.version_id, (299 * KiB, 400 * KiB)) == \
            data[299 * KiB:]
    assert faults.stats.faults[kind] == (1 if kind == "corrupt" else 3), faults.stats


@pytest.mark.parametrize("kind", sorted(set(KINDS) - BODY_KINDS))
def test_the_store_gets_through_each_request_fault(rgw: Any, faults: FaultProxy,
                                                   kind: str) -> None:
    """Faults before or instead of an answer: botocore's retries carry every request."""
    store = proxied_store(rgw, faults)
    data = random.Random(8).randbytes(100 * KiB)
    faults.plan = FaultPlan(rate=1.0, kinds=(kind,), first_tries_only=True)

    put = store.put("packs/ab/two", data, lock_for_an_hour())
    assert store.get("packs/ab/two", put.version_id, (10, 50_009)) == data[10:50_010]
    info = store.head("packs/ab/two", put.version_id)
    assert (info.size, info.lock_mode) == (len(data), "GOVERNANCE")
    listed = [v for v in store.list_versions("packs/") if not v.is_delete_marker]
    assert put.version_id in {v.version_id for v in listed}
    # a lost acknowledgement of a PUT leaves one extra version, never a changed one
    assert len(listed) == (2 if kind == "lost_ack" else 1)
    faults.plan = NO_FAULTS
    assert all(store.get(v.key, v.version_id) == data for v in listed)


def test_a_body_that_always_breaks_is_a_transport_error(rgw: Any, faults: FaultProxy) -> None:
    store = proxied_store(rgw, faults)
    put = store.put("packs/cd/two", b"x" * 5000, None)
    faults.plan = FaultPlan(rate=1.0, kinds=("reset_mid_body",))
    with pytest.raises(TransportError, match=r"could not read the body after 4 tries: "
                                             r"connection (reset|closed)"):
        store.get("packs/cd/two", put.version_id, (0, 4999))
    faults.plan = FaultPlan(rate=1.0, kinds=("truncate",))
    with pytest.raises(TransportError, match="after 4 tries: short body"):
        store.get("packs/cd/two", put.version_id, (10, 4000))


def test_a_whole_body_garbled_on_every_read_is_an_integrity_error(rgw: Any,
                                                                  faults: FaultProxy) -> None:
    store = proxied_store(rgw, faults)
    put = store.put("runs/h/r.jsonl.zst", b"manifest bytes " * 100, None)
    faults.plan = FaultPlan(rate=1.0, kinds=("corrupt",))
    with pytest.raises(IntegrityError, match="does not match its MD5 ETag in each of 4 reads"):
        store.get("runs/h/r.jsonl.zst", put.version_id)


# ------------------------------------------------------------------ the CLI under faults


def make_tree(root: Path, seed: int, count: int = 60) -> dict[str, bytes]:
    """``count`` files, 5 KiB to 1.5 MiB (60: about 30 MiB), in a few directories (seeded)."""
    rng = random.Random(seed)
    files = {}
    for i in range(count):
        size = rng.choice([5 * KiB, 40 * KiB, 200 * KiB, 700 * KiB, 1536 * KiB])
        rel = f"d{i % 5}/f{i:02}.bin"
        files[rel] = rng.randbytes(size) if i % 3 else (f"line {i}\n".encode() * (size // 8))
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def restored_files(target: Path, source: Path) -> dict[str, bytes]:
    inside = Path(f"{target}{source}")
    return {str(p.relative_to(inside)): p.read_bytes()
            for p in inside.rglob("*") if stat.S_ISREG(p.lstat().st_mode)}


@pytest.fixture
def env(rgw: Any, faults: FaultProxy, tmp_path: Path) -> ArchiveEnv:
    environment = ArchiveEnv(tmp_path, faults.endpoint_url, rgw.access_key, rgw.secret_key,
                             rgw.client(), pack_size_mib=1)
    return environment


def archive_clean(env: ArchiveEnv, tmp_path: Path) -> tuple[Path, dict[str, bytes], str]:
    source = tmp_path / "src"
    files = make_tree(source, seed=11, count=15)
    env.pick(source)
    summary = env.archive()
    assert summary["exit_code"] == 0, summary["warnings"]
    return source, files, summary["run_id"]


def test_a_lost_acknowledgement_of_the_manifest_commits_the_run_once(
        env: ArchiveEnv, faults: FaultProxy, tmp_path: Path) -> None:
    """Defect 6 (the idempotent commit, archive/commit.py) through a real lost answer."""
    source = tmp_path / "src"
    make_tree(source, seed=5, count=6)
    env.pick(source)

    def all_but_manifest_puts(request: Request, kind: str) -> bool:
        return not (request.method == "PUT" and request.key.startswith("runs/"))

    faults.plan = FaultPlan(rate=1.0, kinds=("lost_ack",), spare=all_but_manifest_puts,
                            first_tries_only=True)
    summary = env.archive()
    assert summary["exit_code"] == 0, summary["warnings"]
    assert faults.stats.faults["lost_ack"] == 1, faults.stats
    manifests = env.versions("runs/")
    assert [v["Key"] for v in manifests] == [summary["manifest_key"]]
    listed = env.run("runs", "--json")
    assert [r["run_id"] for r in listed.json] == [summary["run_id"]]


def test_archive_restore_and_verify_are_exact_under_ten_percent_faults(
        env: ArchiveEnv, faults: FaultProxy, tmp_path: Path) -> None:
    source = tmp_path / "src"
    files = make_tree(source, seed=3)
    env.pick(source)

    faults.plan = FaultPlan(rate=0.10, seed=3, evenly=True)
    for run in (1, 2, 3):
        result = env.run("archive", "--json")
        assert result.exit_code == 0, (result.stderr, faults.stats)
        summary = result.json
        assert summary["warnings"] == []
        for rel in sorted(files)[run::4]:  # change a quarter of the files for the next run
            files[rel] = random.Random(f"{rel}{run}").randbytes(len(files[rel]) // 2 + 1)
            (source / rel).write_bytes(files[rel])
    result = env.run("archive", "--json")
    assert result.exit_code == 0, (result.stderr, faults.stats)
    summary = result.json
    archived = faults.stats
    assert sum(archived.faults.values()) == sum(archived.requests.values()) // 10 >= 3, archived

    faults.plan = FaultPlan(rate=0.10, seed=4, evenly=True)
    target = tmp_path / "restored"
    restore = env.run("restore", summary["run_id"], "--target", str(target), "--json")
    assert restore.exit_code == 0, (restore.stdout[-3000:], restore.stderr[-3000:])
    assert restored_files(target, source) == files
    verify = env.run("verify", summary["run_id"], "--read-data", "--json")
    assert verify.exit_code == 0, verify.stdout[-3000:]
    read_back = faults.stats
    assert sum(read_back.faults.values()) == sum(read_back.requests.values()) // 10 >= 6, \
        read_back


def test_verify_and_restore_name_transport_failures_apart_from_damage(
        env: ArchiveEnv, faults: FaultProxy, tmp_path: Path) -> None:
    source, files, run_id = archive_clean(env, tmp_path)

    def pack_gets_only(request: Request, kind: str) -> bool:
        return not (request.method == "GET" and request.key.startswith("data/"))

    # every read of a pack breaks off mid-body: the store is fine, the network is not
    faults.plan = FaultPlan(rate=1.0, kinds=("reset_mid_body",), spare=pack_gets_only)
    verify = env.run("verify", run_id, "--read-data", "--json", "--workers", "4")
    assert verify.exit_code == 1
    problems = verify.json["runs"][0]["problems"]
    assert problems and {p["kind"] for p in problems} == {"transport"}, problems
    assert all("not checked" in p["message"] and "could not read" in p["message"]
               and "tries" in p["message"] for p in problems)
    restore = env.run("restore", run_id, "--target", str(tmp_path / "t1"), "--json")
    assert restore.exit_code == 1
    report = restore.json
    assert report["damaged"] == [] and report["failed"], report
    assert all("could not read" in f["message"] for f in report["failed"])

    # every pack body arrives whole but garbled: that is bad data, and it is never written
    faults.plan = FaultPlan(rate=1.0, kinds=("corrupt",), spare=pack_gets_only)
    verify = env.run("verify", run_id, "--read-data", "--json", "--workers", "4")
    assert verify.exit_code == 1
    assert {p["kind"] for p in verify.json["runs"][0]["problems"]} == {"chunk"}
    target = tmp_path / "t2"
    restore = env.run("restore", run_id, "--target", str(target), "--json")
    assert restore.exit_code == 1
    assert restore.json["damaged"] and restore.json["failed"] == []
    written = restored_files(target, source)
    for rel, data in files.items():
        got = written.get(rel, b"")
        assert len(got) in (0, len(data))
        # a damaged range stays a hole: every byte written is the original byte or zero
        assert all(a == b or a == 0 for a, b in zip(got, data)), rel
    assert faults.stats.faults["corrupt"] >= 4  # each range read twice, by verify and restore

    # garbled on the first read only: the second read matches, and everything is exact
    faults.plan = FaultPlan(rate=1.0, kinds=("corrupt",), first_tries_only=True,
                            spare=pack_gets_only)
    assert env.run("verify", run_id, "--read-data").exit_code == 0
    target = tmp_path / "t3"
    assert env.run("restore", run_id, "--target", str(target)).exit_code == 0
    assert restored_files(target, source) == files
    assert faults.stats.faults["corrupt"] >= 2

