"""[s3] max_concurrency and max_bandwidth: how many packs are uploaded at once,
and the average upload rate; through the real CLI against RGW."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from s3archive.store.s3_store import S3Store
from s3archive.store.throttled_store import Pacer
from support.archive_env import ArchiveEnv

MiB = 1 << 20


@pytest.fixture
def env(rgw, tmp_path: Path) -> ArchiveEnv:
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client(),
                     pack_size_mib=1)
    data = tmp_path / "data"
    data.mkdir()
    for number in range(12):  # 12 MiB, incompressible; no chunk over 1 MiB, so 6+ packs
        (data / f"random-{number:02}.bin").write_bytes(os.urandom(MiB))
    env.pick(data)
    return env


def _with_s3(env: ArchiveEnv, settings: str) -> None:
    env.write_config(extra="")
    env.config.write_text(env.config.read_text().replace("[host]", f"{settings}\n[host]", 1))


def test_max_bandwidth_paces_the_uploads(env: ArchiveEnv) -> None:
    _with_s3(env, 'max_bandwidth = "6 MiB/s"')
    began = time.monotonic()
    summary = env.archive()
    elapsed = time.monotonic() - began
    assert summary["exit_code"] == 0 and summary["bytes_uploaded"] >= 12 * MiB
    # Every pack is booked before the (last, small) manifest may start.
    assert elapsed >= 12 * MiB / (6 * MiB) * 0.95, elapsed


@pytest.mark.parametrize("limit", [1, 2])
def test_max_concurrency_bounds_the_uploads_at_once(env: ArchiveEnv, limit: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _with_s3(env, f"max_concurrency = {limit}")
    active, most = 0, 0
    guard = threading.Lock()
    real_put = S3Store.put

    def slow_put(self: S3Store, key: str, *args: object, **kwargs: object) -> object:
        nonlocal active, most
        with guard:
            active += 1
            most = max(most, active)
        try:
            if key.startswith("data/"):
                time.sleep(0.3)  # long enough for every allowed upload to overlap
            return real_put(self, key, *args, **kwargs)
        finally:
            with guard:
                active -= 1

    monkeypatch.setattr(S3Store, "put", slow_put)
    summary = env.archive()
    assert summary["exit_code"] == 0 and summary["packs_uploaded"] >= 6
    assert most == limit


@pytest.mark.parametrize("setting, message", [
    ('max_bandwidth = "fast"', 's3.max_bandwidth = \'fast\': must be bytes per second, or a rate'),
    ("max_bandwidth = 1000", "s3.max_bandwidth = 1000: must be at least 64 KiB/s"),
    ("max_concurrency = 0", "s3.max_concurrency = 0: must be between 1 and 32"),
])
def test_bad_limits_are_configuration_errors(env: ArchiveEnv, setting: str,
                                             message: str) -> None:
    _with_s3(env, setting)
    done = env.run("archive")
    assert done.exit_code == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_pacer_books_bytes_over_time() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(1000, clock=lambda: now[0], sleep=sleep)
    assert pacer.take(500) == 0  # the first transfer starts at once
    assert pacer.take(2000) == pytest.approx(0.5)
    now[0] += 10  # idle time is not saved up for a burst
    assert pacer.take(1000) == 0
    assert pacer.take(1) == pytest.approx(1.0)
    assert slept == [pytest.approx(0.5), pytest.approx(1.0)]


def test_throttled_store_has_every_method_of_the_store_protocol() -> None:
    from s3archive.store.base import ObjectStore
    from s3archive.store.throttled_store import ThrottledStore

    wanted = {name for name in vars(ObjectStore) if not name.startswith("_")}
    assert wanted and wanted <= set(vars(ThrottledStore)), wanted - set(vars(ThrottledStore))
