"""Cold data, hot metadata on Ceph RGW, with real lifecycle transitions.

The session's RGW knows the storage class GLACIER_IR (``tests/conftest.py``),
so the rules ``create-resources --cold-after`` writes really move objects
("a day" is 10 s here).  Shown end to end:

* the rule moves data/ versions, current and non-current, to GLACIER_IR and
  nothing under meta/, runs/, keys/ or packs/; locks survive the transition
  and a version stays readable by its id, ranged GETs included;
* the readers: ``verify`` counts a run's packs per class and does not fail
  on cold packs, and names a manifest that is not STANDARD (a broken
  promise: warning, exit 0); ``restore`` reads cold packs; ``cost`` reports
  bytes, kinds and the retrieval fee per class; the bucket check names the
  operator's rules that moved them.

The writer of this branch is format 1 (packs/, runs/).  To put what a run
references in GLACIER_IR, the bucket gets two *operator* rules beside
s3archive's -- packs/ and runs/ to GLACIER_IR, as a careless operator might
add -- which the check must flag; hand-written objects under data/, meta/
and keys/ show s3archive's own rule at work.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from s3archive.setup import lifecycle
from s3archive.setup.bucket_check import check_bucket
from s3archive.setup.spec import BucketSpec
from s3archive.store.s3_store import content_md5
from support.archive_env import ArchiveEnv

OPERATOR_RULES = [
    {"ID": f"operator-{name}", "Status": "Enabled", "Filter": {"Prefix": f"{name}/"},
     "Transitions": [{"Days": 1, "StorageClass": "GLACIER_IR"}],
     "NoncurrentVersionTransitions": [{"NoncurrentDays": 1, "StorageClass": "GLACIER_IR"}]}
    for name in ("packs", "runs")]
HAND_WRITTEN = ("data/aa/current", "data/bb/noncurrent", "meta/cc/metadata",
                "keys/dedup/0123456789abcdef/0123456789abcdef.age")


def _classes(env: ArchiveEnv) -> dict[tuple[str, str], str]:
    return {(v["Key"], v["VersionId"]): v.get("StorageClass", "STANDARD")
            for v in env.versions()}


@pytest.mark.slow
def test_cold_data_moves_and_every_reader_copes(rgw, tmp_path: Path) -> None:
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(bytes(range(251)) * 4000)
    (data / "note.txt").write_text("cold\n" * 100)
    env.pick(data)
    summary = env.archive()
    s3 = env.client
    until = (datetime.now(timezone.utc) + timedelta(minutes=30)).replace(microsecond=0)
    written = {}
    for key in HAND_WRITTEN:
        body = key.encode() * 1000
        written[key] = s3.put_object(Bucket=env.bucket, Key=key, Body=body,
                                     ContentMD5=content_md5(body), ObjectLockMode="GOVERNANCE",
                                     ObjectLockRetainUntilDate=until)["VersionId"]
    s3.delete_object(Bucket=env.bucket, Key="data/bb/noncurrent")  # non-current from now on
    s3.put_bucket_lifecycle_configuration(
        Bucket=env.bucket,
        LifecycleConfiguration={"Rules": [*lifecycle.s3_rules(1), *OPERATOR_RULES]})

    def cold_keys() -> set[str]:
        return {key for (key, _), cls in _classes(env).items() if cls == "GLACIER_IR"}

    moved = {"data/aa/current", "data/bb/noncurrent"}
    moved |= {v["Key"] for v in env.versions() if v["Key"].startswith(("packs/", "runs/"))}
    deadline = datetime.now(timezone.utc) + timedelta(seconds=90)
    while cold_keys() != moved:
        assert datetime.now(timezone.utc) < deadline, f"not moved: {moved - cold_keys()}"
        rgw.admin("lc", "process")
    # s3archive's own rule moved data/ only: meta/ and keys/ stay STANDARD.
    classes = _classes(env)
    assert classes[("meta/cc/metadata", written["meta/cc/metadata"])] == "STANDARD"
    assert all(cls == "STANDARD" for (key, _), cls in classes.items() if key.startswith("keys/"))
    for key, version in written.items():  # locks survive, versions stay readable by id
        head = s3.head_object(Bucket=env.bucket, Key=key, VersionId=version)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockRetainUntilDate"] == until
        assert head.get("StorageClass", "STANDARD") == classes[(key, version)]
        part = s3.get_object(Bucket=env.bucket, Key=key, VersionId=version,
                             Range="bytes=5-9")["Body"].read()
        assert part == (key.encode() * 1000)[5:10]

    # verify: cold packs are fine; the cold manifest is named, exit status 0.
    verified = env.run("verify", "--json")
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    run = verified.json["runs"][0]
    assert run["ok"] and run["problems"] == []
    assert run["pack_classes"] == {"GLACIER_IR": run["packs"]} and run["packs"] > 0
    manifest_key = f"runs/testhost/{summary['run_id']}.jsonl.zst"
    assert [w["key"] for w in run["warnings"]] == [manifest_key]
    assert "is in GLACIER_IR, not STANDARD" in run["warnings"][0]["message"]
    text = env.run("verify")
    assert text.exit_code == 0
    assert f"{run['packs']} packs present ({run['packs']} GLACIER_IR)" in text.stdout
    assert f"  warning: {manifest_key}@" in text.stdout
    assert "1 with storage-class warnings" in text.stderr
    # --read-data reads cold packs as it reads hot ones.
    read = env.run("verify", "--read-data", "--json")
    assert read.exit_code == 0 and read.json["runs"][0]["chunks_checked"] > 0

    # restore reads from cold packs without a restore request.
    target = tmp_path / "restored"
    restored = env.run("restore", "latest", "--target", str(target))
    assert restored.exit_code == 0, restored.stderr
    assert (target / data.relative_to("/") / "big.bin").read_bytes() == \
        (data / "big.bin").read_bytes()

    # cost: bytes per class and kind, and what reading the cold bytes costs.
    figures = env.run("cost", "--json").json
    cold, hot = (figures["storage"]["classes"][c] for c in ("GLACIER_IR", "STANDARD"))
    sizes = _sizes(env)
    assert cold["data"] == sizes["data/"] and cold["packs"] == sizes["packs/"]
    assert cold["manifests"] == sizes["runs/"]
    assert (hot["metadata"], hot["keys"], hot["data"], hot["packs"]) == (
        sizes["meta/"], sizes["keys/"], 0, 0)
    assert cold["bytes"] == sizes["data/"] + sizes["packs/"] + sizes["runs/"]
    assert cold["price_gb_month"] == 0.004 and cold["retrieval_gb"] == 0.03
    assert cold["retrieval_all"] == pytest.approx(cold["bytes"] / 1024 ** 3 * 0.03, abs=1e-6)
    assert hot["retrieval_all"] == 0
    assert figures["monthly"]["storage_by_class"]["GLACIER_IR"] == pytest.approx(
        cold["bytes"] / 1024 ** 3 * 0.004, abs=1e-4)
    assert "GLACIER_IR: every GB read" in env.run("cost").stdout

    # The bucket check names both operator rules, not s3archive's.
    spec = BucketSpec(bucket=env.bucket, endpoint_url=rgw.endpoint_url, cold_after=1)
    flagged = [d.actual for d in check_bucket(s3, spec, None).differences
               if d.setting == "lifecycle transition"]
    assert [line.split(" ")[1] for line in flagged] == ["operator-packs", "operator-runs"]


def _sizes(env: ArchiveEnv) -> dict[str, int]:
    totals: dict[str, Any] = {p: 0 for p in ("data/", "meta/", "keys/", "packs/", "runs/")}
    for version in env.versions():
        for prefix in totals:
            if version["Key"].startswith(prefix):
                totals[prefix] += version["Size"]
    return totals
