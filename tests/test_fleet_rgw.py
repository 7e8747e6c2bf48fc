"""``fleet``: every host of one bucket, through the real CLI (RGW)."""

from __future__ import annotations

import json
import base64
import hashlib
from pathlib import Path

from support.manifest_builder import BucketEnv, invoke, make_bucket_env


def host_env(base: BucketEnv, directory: Path, host: str, src: Path) -> BucketEnv:
    """A second host's configuration for the same bucket, with its own picker and cache."""
    directory.mkdir(parents=True)
    text = base.config_path.read_text().replace('name = "testhost"', f'name = "{host}"')
    text = text.replace(str(base.config_path.parent / "cache"), str(directory / "cache"))
    text = text.replace(str(base.config_path.parent / "state"), str(directory / "state"))
    config = directory / "config.toml"
    config.write_text(text)
    picker = directory / "pickers.d" / "10-src"
    picker.parent.mkdir()
    picker.write_text(f"#!/bin/sh\necho '{src}'\n")
    picker.chmod(0o755)
    return BucketEnv(config_path=config, bucket=base.bucket, store=base.store,
                     client=base.client)


def test_fleet_lists_every_host_and_flags_stale_ones(rgw, tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    base = make_bucket_env(rgw, tmp_path / "audit")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("shared\n")
    web = host_env(base, tmp_path / "web", "web-1", src)
    db = host_env(base, tmp_path / "db", "db-1", src)
    for env in (web, web, db):
        assert invoke(env, "archive").exit_code == 0

    textfile = tmp_path / "metrics" / "fleet.prom"
    result = invoke(base, "fleet", "--json", "--prometheus-textfile", str(textfile))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert sorted(hosts) == ["db-1", "web-1"]
    assert hosts["web-1"]["runs"] == 2 and hosts["db-1"]["runs"] == 1
    assert all(h["status"] == "complete" and not h["stale"] for h in hosts.values())
    assert hosts["db-1"]["files"] == 1 and hosts["db-1"]["bytes_total"] == len("shared\n")
    assert doc["stale"] == [] and doc["unreadable"] == []
    metrics = textfile.read_text()
    assert "s3archive_fleet_hosts 2" in metrics and "s3archive_fleet_stale_hosts 0" in metrics
    assert 's3archive_fleet_last_run_timestamp_seconds{host="web-1"}' in metrics

    table = invoke(base, "fleet")
    assert table.exit_code == 0 and "web-1" in table.stdout and "db-1" in table.stdout

    stale = invoke(base, "fleet", "--stale-after", "0")
    assert stale.exit_code == 1 and "stale hosts (no run for 0 h): db-1, web-1" in stale.stderr


def test_fleet_names_an_unreadable_newest_run(rgw, tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    base = make_bucket_env(rgw, tmp_path / "audit")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("x\n")
    web = host_env(base, tmp_path / "web", "web-1", src)
    assert invoke(web, "archive").exit_code == 0
    base.client.put_object(Bucket=base.bucket, Key="runs/ghost/20260101T000000Z.jsonl.zst",
                           Body=b"not a manifest", ObjectLockMode="GOVERNANCE",
                           ObjectLockRetainUntilDate="2099-01-01T00:00:00Z",
                           ContentMD5=base64.b64encode(hashlib.md5(b"not a manifest").digest())
                           .decode())
    result = invoke(base, "fleet", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["unreadable"] == ["ghost"]
    ghost = next(h for h in doc["hosts"] if h["host"] == "ghost")
    assert ghost["status"] == "unreadable" and ghost["error"]
