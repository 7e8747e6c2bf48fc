"""The archive command end to end against a real S3 (Ceph RGW) with Object Lock."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from support.archive_env import ArchiveEnv, entries_by_path, rewrite_inside

MiB = 1 << 20


@pytest.fixture
def env(rgw, tmp_path: Path) -> ArchiveEnv:
    return ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def make_tree(root: Path) -> Path:
    data = root / "data"
    (data / "docs").mkdir(parents=True)
    for i in range(40):
        (data / "docs" / f"note{i:02}.txt").write_text(f"note {i}\n" * (50 + i))
    (data / "big.img").write_bytes(random_bytes(24 * MiB, 1))
    (data / "medium.bin").write_bytes(random_bytes(3 * MiB, 2))
    return data


def entries_below(env: ArchiveEnv, summary: dict, top: Path) -> dict:
    prefix = os.fsencode(top)
    entries = entries_by_path(env.manifest_lines(summary["manifest_key"]))
    found = {p: e for p, e in entries.items() if p == prefix or p.startswith(prefix + b"/")}
    assert len(found) > 10
    return found


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_every_object_is_locked_and_every_put_carries_content_md5(env: ArchiveEnv, tmp_path: Path,
                                                                   monkeypatch) -> None:
    from s3archive.store import s3_store

    seen_puts: list[dict] = []
    original = s3_store.make_client

    def recording_client(*args, **kwargs):
        client = original(*args, **kwargs)
        client.meta.events.register("before-send.s3.PutObject",
                                    lambda request, **_: seen_puts.append(dict(request.headers)))
        return client

    monkeypatch.setattr(s3_store, "make_client", recording_client)
    env.pick(make_tree(tmp_path))
    env.write_config(retention="mode = \"COMPLIANCE\"\ndaily_days = 2\nweekly_days = 3\n"
                     "monthly_days = 4\nyearly_days = 5\nslack_days = 1")
    summary = env.archive()
    assert summary["exit_code"] == 0, summary["warnings"]
    retain_until = parse_time(summary["retain_until"])
    versions = env.versions()
    # packs, the run's root object, and its group index object (docs/FORMAT.md part 2, 16)
    assert {v["Key"].split("/")[0] for v in versions} == {"data", "index", "meta", "runs"}
    assert len(versions) == summary["packs_uploaded"] + 2
    for version in versions:
        head = env.client.head_object(Bucket=env.bucket, Key=version["Key"],
                                      VersionId=version["VersionId"])
        assert head["ObjectLockMode"] == "COMPLIANCE", version["Key"]
        assert head["ObjectLockRetainUntilDate"] >= retain_until, version["Key"]
    assert len(seen_puts) == len(versions)
    for headers in seen_puts:
        assert headers.get("Content-MD5"), headers
        assert headers.get("x-amz-object-lock-mode") == b"COMPLIANCE"
    # a COMPLIANCE lock written by the run cannot be shortened nor deleted
    pack = next(v for v in versions if v["Key"].startswith("data/"))
    with pytest.raises(Exception):
        env.client.put_object_retention(
            Bucket=env.bucket, Key=pack["Key"], VersionId=pack["VersionId"],
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(timezone.utc) + timedelta(hours=1)})
    with pytest.raises(Exception):
        env.client.delete_object(Bucket=env.bucket, Key=pack["Key"], VersionId=pack["VersionId"])


def test_bucket_without_object_lock_is_refused_unless_allowed(rgw, tmp_path: Path) -> None:
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client(),
                     locked_bucket=False)
    env.pick(make_tree(tmp_path))
    result = env.run("archive")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "has no Object Lock" in result.stderr and env.bucket in result.stderr
    assert env.versions() == []
    env.write_config(extra="allow_unlocked_bucket = true")
    summary = env.archive()
    assert summary["manifest_key"] and summary["packs_uploaded"] >= 1


def test_unchanged_tree_reads_nothing_and_a_small_change_uploads_about_the_change(
        env: ArchiveEnv, tmp_path: Path) -> None:
    data = make_tree(tmp_path)
    dump = data / "dump.sql"
    dump.write_bytes(b"".join(b"INSERT INTO t VALUES (%d, '%s');\n" % (i, hashlib.md5(b"%d" % i).hexdigest().encode())
                              for i in range(2_400_000)))  # ~120 MiB of text
    assert dump.stat().st_size > 100 * MiB
    env.pick(data)
    first = env.archive()
    assert first["bytes_read"] == first["bytes_total"] > 140 * MiB

    second = env.archive()
    assert second["bytes_read"] == 0
    assert second["files_unchanged"] == second["files"] == first["files"]
    assert entries_below(env, second, data) == entries_below(env, first, data)
    assert second["packs_uploaded"] == 0 and second["bytes_uploaded"] == 0, second
    assert second["requests"].get("PutObject") == 1  # the manifest

    # ~1 %: a few small files edited, 3 MiB rewritten inside the dump, 1 MiB appended
    for i in range(5):
        (data / "docs" / f"note{i:02}.txt").write_text(f"edited {i}\n" * 70)
    rewrite_inside(dump, 40 * MiB, random_bytes(3 * MiB, 7))
    with open(data / "medium.bin", "ab") as handle:
        handle.write(random_bytes(MiB, 8))
    third = env.archive()
    changed = 3 * MiB + MiB
    assert third["files"] - third["files_unchanged"] == 7
    assert changed <= third["bytes_new"] <= changed + 8 * MiB, third
    assert third["bytes_uploaded"] <= third["bytes_new"] + MiB


def test_identical_content_is_stored_once_across_files_runs_and_snapshots(
        env: ArchiveEnv, tmp_path: Path) -> None:
    data = tmp_path / "dup"
    data.mkdir()
    blob = random_bytes(6 * MiB, 3)
    for name in ("a.bin", "b.bin", "c.bin"):
        (data / name).write_bytes(blob)
    env.pick(data)
    env.snapshotter("10-copy", f"cat '{data / 'a.bin'}' >&\"$1\"\necho copy of a.bin\n")
    summary = env.archive()
    assert summary["bytes_read"] == 4 * len(blob)
    assert len(blob) <= summary["bytes_new"] <= len(blob) + 1024
    again = env.archive()
    assert again["bytes_new"] == 0 and again["chunks_new"] == 0
    # nothing but the new run record (the snapshot's start and duration differ)
    assert again["trees_new"] == 1 and again["bytes_uploaded"] < 4096, again


def test_daily_dump_with_one_percent_changed_uploads_about_one_percent(
        env: ArchiveEnv, tmp_path: Path) -> None:
    dump = tmp_path / "db.sql"
    rows = [b"INSERT INTO accounts VALUES (%d, 'user%d', %d);\n" % (i, i, i * 37 % 1000)
            for i in range(2_400_000)]
    dump.write_bytes(b"".join(rows))
    size = dump.stat().st_size
    env.pick(tmp_path / "nothing-picked")  # only the snapshot matters here
    env.snapshotter("20-db", f"cat '{dump}' >&\"$1\"\necho accounts table\n"
                    "echo '::restore-through:: cat > /tmp/restored.sql'\n")
    first = env.archive()
    assert first["bytes_new"] >= size > 100 * MiB
    assert first["bytes_read"] == size
    # 1 % of the rows change, as in a real database: a block of recent rows
    # is updated and a few rows are appended
    start = 1_500_000
    for i in range(start, start + 24_000):
        rows[i] = b"UPDATE accounts SET balance = %d WHERE id = %d;\n" % (i * 7 % 999, i)
    rows.extend(b"INSERT INTO accounts VALUES (%d, 'new', 0);\n" % i for i in range(1000))
    dump.write_bytes(b"".join(rows))
    changed = sum(len(r) for r in rows[start:start + 24_000]) + 1000 * 40
    second = env.archive()
    assert second["bytes_read"] == dump.stat().st_size
    assert changed <= second["bytes_new"] <= changed + 5 * MiB, second
    assert second["chunks_reused"] > 0


def test_lost_cache_is_rebuilt_from_the_latest_manifest(env: ArchiveEnv, tmp_path: Path) -> None:
    data = make_tree(tmp_path)
    env.pick(data)
    first = env.archive()
    above = env.cache_dir.parent.stat()
    shutil.rmtree(env.cache_dir)
    env.cache_dir.mkdir()
    # as if the cache were lost elsewhere: the directory above the tree keeps its mtime
    os.utime(env.cache_dir.parent, ns=(above.st_atime_ns, above.st_mtime_ns))
    second = env.archive()
    assert second["packs_uploaded"] == 0 and second["bytes_uploaded"] == 0, second
    assert second["bytes_read"] == 0, "file identities come back from the manifest"
    assert second["files_unchanged"] == first["files"]
    assert entries_below(env, second, data) == entries_below(env, first, data)


def test_second_archive_on_the_same_config_is_refused(env: ArchiveEnv, tmp_path: Path) -> None:
    from s3archive.archive.local_cache import cache_path
    from s3archive.archive.run_lock import RunLock

    env.pick(make_tree(tmp_path))
    lock = cache_path(env.cache_dir, env.bucket, "", "testhost").with_suffix(".lock")
    with RunLock(lock):
        result = env.run("archive")
    assert result.exit_code == 1
    assert "another archive run" in result.stderr
    assert env.versions() == []


def test_failed_run_writes_no_manifest_and_the_next_run_reuses_its_packs(
        env: ArchiveEnv, tmp_path: Path, monkeypatch) -> None:
    import s3archive.archive.commit as commit_module
    from s3archive.errors import StoreError
    from s3archive.store.s3_store import S3Store

    env.pick(make_tree(tmp_path))
    real_put = S3Store.put_once
    monkeypatch.setattr(commit_module, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))

    def failing_put(self, key, body, lock, legal_hold=False):
        if key.startswith("runs/"):
            raise StoreError(f"PUT {key}: simulated outage")
        return real_put(self, key, body, lock, legal_hold)

    monkeypatch.setattr(S3Store, "put_once", failing_put)
    result = env.run("archive", "--json")
    assert result.exit_code == 1
    assert "was not written: PUT runs/" in result.stderr and "simulated outage" in result.stderr
    assert env.versions("runs/") == []
    uploaded = len(env.versions("data/")) + len(env.versions("meta/"))
    assert len(env.versions("data/")) > 0 and len(env.versions("meta/")) > 0
    monkeypatch.setattr(S3Store, "put_once", real_put)
    summary = env.archive()
    assert summary["packs_uploaded"] == 0 and summary["manifest_key"]
    assert len(env.versions("data/")) + len(env.versions("meta/")) == uploaded


def test_dry_run_reads_everything_and_writes_nothing(env: ArchiveEnv, tmp_path: Path) -> None:
    env.pick(make_tree(tmp_path))
    summary = env.archive("--dry-run")
    assert summary["dry_run"] and summary["manifest_key"] is None
    assert summary["bytes_read"] == summary["bytes_total"] > 20 * MiB
    assert summary["requests"].get("PutObject", 0) == 0
    assert env.versions() == []
    real = env.archive()
    assert real["bytes_read"] == real["bytes_total"], "a dry run leaves no file cache behind"


def test_transient_s3_errors_are_retried_with_back_off(env: ArchiveEnv, tmp_path: Path,
                                                       monkeypatch) -> None:
    from botocore.awsrequest import AWSResponse

    import s3archive.archive.commit as commit_module
    from s3archive.store import s3_store

    monkeypatch.setattr(commit_module, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))
    attempts: list[str] = []
    original = s3_store.make_client

    class _Raw:
        def stream(self, **_):
            yield b"<Error><Code>SlowDown</Code><Message>try again</Message></Error>"

    def flaky(request, **_):
        if request.method == "PUT":
            attempts.append(request.url)
            if len(attempts) % 3 != 0:  # two failures before every success
                return AWSResponse(request.url, 503, {}, _Raw())
        return None

    def flaky_client(*args, **kwargs):
        client = original(*args, **kwargs)
        client.meta.events.register("before-send.s3.PutObject", flaky)
        return client

    monkeypatch.setattr(s3_store, "make_client", flaky_client)
    small = tmp_path / "small"
    small.mkdir()
    (small / "file").write_bytes(random_bytes(100_000, 9))
    env.pick(small)
    summary = env.archive()
    puts = summary["packs_uploaded"] + 2
    assert puts == 4  # a data pack, a metadata pack, the group index object, the root object
    assert len(attempts) == 3 * puts
    assert len(env.versions()) == puts


def test_lost_acknowledgements_of_the_manifest_put_leave_one_version(env: ArchiveEnv, tmp_path: Path,
                                                                     monkeypatch) -> None:
    """Every manifest PUT reaches RGW, and then the connection breaks (over HTTP)."""
    import urllib3
    from botocore.exceptions import ConnectionClosedError

    import s3archive.archive.commit as commit_module
    from s3archive.store import s3_store

    monkeypatch.setattr(commit_module, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))
    http = urllib3.PoolManager()
    lost: list[str] = []

    def deliver_then_break(request, **_):
        if "/runs/" not in request.url:
            return None
        body = request.body.read() if hasattr(request.body, "read") else request.body
        if hasattr(request.body, "seek"):
            request.body.seek(0)
        answer = http.request(request.method, request.url, body=body, headers=dict(request.headers))
        assert answer.status == 200, answer.data
        lost.append(request.url)
        raise ConnectionClosedError(endpoint_url=request.url)

    original = s3_store.make_client

    def lossy_client(*args, **kwargs):
        client = original(*args, **kwargs)
        client.meta.events.register("before-send.s3.PutObject", deliver_then_break,
                                    unique_id="lose-the-acknowledgement")
        return client

    monkeypatch.setattr(s3_store, "make_client", lossy_client)
    small = tmp_path / "small"
    small.mkdir()
    (small / "file").write_bytes(random_bytes(100_000, 10))
    env.pick(small)
    result = env.run("archive", "--json")
    assert result.exit_code == 0, result.stderr
    summary = result.json
    assert len(lost) == 1, result.stderr
    runs = env.versions("runs/")
    assert [v["Key"] for v in runs] == [summary["manifest_key"]], "one version of the run key"
    listed = env.run("runs")
    assert listed.exit_code == 0 and "versions" not in listed.stderr, listed.stderr


def test_a_host_clock_400_days_behind_fails_with_one_line_naming_it(env: ArchiveEnv,
                                                                    tmp_path: Path,
                                                                    monkeypatch) -> None:
    import botocore.auth

    import s3archive.clock as clock_module

    behind = timedelta(days=400)
    real_now = clock_module.utc_now
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda: (datetime.now(timezone.utc) - behind).replace(tzinfo=None))
    monkeypatch.setattr(clock_module, "utc_now", lambda: real_now() - behind)
    env.pick(make_tree(tmp_path))
    result = env.run("archive")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "this host's clock is 400 days behind the store's" in result.stderr, result.stderr
    monkeypatch.undo()
    assert env.versions() == []


def test_repacks_read_the_files_again_never_the_packs(env: ArchiveEnv, tmp_path: Path) -> None:
    """Under a store that refuses every GET under packs/ (as the backup role's
    policy does), runs that rewrite packs succeed and everything verifies."""
    from s3archive.archive.archiver import Archiver
    from s3archive.config import load_config
    from s3archive.store.factory import open_store

    class NoPackReads:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        @property
        def location(self):
            return self.inner.location

        def get(self, key, version_id=None, byte_range=None):
            if key.startswith(("packs/", "data/", "meta/")):
                raise AssertionError(f"the archive read {key}")
            return self.inner.get(key, version_id, byte_range)

    def archive(days: int, mode: str = "GOVERNANCE") -> dict:
        until = (datetime.now(timezone.utc) + timedelta(days=days)).replace(microsecond=0)
        env.write_config(retention=f'mode = "{mode}"\nuntil = "{until.isoformat()}"\n'
                         "slack_days = 0\nrepack_below = 0.5\n")
        config = load_config(env.config)
        summary = Archiver(config, NoPackReads(open_store(config))).run()
        assert summary.exit_code == 0, summary.warnings
        return summary.to_json()

    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(random_bytes(3 * MiB, 21))
    (data / "kept.bin").write_bytes(random_bytes(200_000, 22))
    (data / "notes.txt").write_text("notes\n" * 5000)
    env.pick(data)
    first = archive(days=1)
    assert first["packs_uploaded"] == 2  # data, metadata
    (data / "big.bin").unlink()
    second = archive(days=3)  # the pack's lock is too short, and the run needs < 50 % of it
    # the data pack rewritten; the directory's new node in a new metadata pack (the
    # old metadata pack, no longer needed, lapses)
    assert second["packs_rewritten"] == 1 and second["packs_uploaded"] == 2, second
    assert second["bytes_read"] == 0 and second["files_unchanged"] == 2
    (data / "later.bin").write_bytes(random_bytes(100_000, 23))
    third = archive(days=4, mode="COMPLIANCE")  # GOVERNANCE packs: files read again
    assert third["bytes_read"] == third["bytes_total"] > 0, third
    packs = [line for line in env.manifest_lines(third["manifest_key"])
             if line["type"] == "pack"]
    assert packs
    for pack in packs:  # every pack the COMPLIANCE run references is locked so
        head = env.client.head_object(Bucket=env.bucket, Key=pack["key"],
                                      VersionId=pack["version_id"])
        assert head["ObjectLockMode"] == "COMPLIANCE", pack
    result = env.run("verify", "--all", "--read-data")
    assert result.exit_code == 0, result.stdout + result.stderr
    target = tmp_path / "restored"
    restored = env.run("restore", "latest", str(data), "--target", str(target))
    assert restored.exit_code == 0, restored.stderr
    for name in ("kept.bin", "notes.txt", "later.bin"):
        assert (target / data.relative_to("/") / name).read_bytes() == (data / name).read_bytes()
