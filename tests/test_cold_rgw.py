"""Cold data, hot metadata on Ceph RGW, with real lifecycle transitions.

The session's RGW knows the storage class GLACIER_IR (``tests/conftest.py``),
so the rules ``create-resources --cold-after`` writes really move objects
("a day" is 10 s here).  Shown end to end:

* the rule moves a format-2 run's data packs (data/), current versions and
  non-current ones, to GLACIER_IR and nothing under meta/, runs/ or keys/;
  locks survive the transition and a version stays readable by its id,
  ranged GETs included;
* the readers: ``verify`` counts the run's packs per class and does not fail
  on cold data packs; ``restore`` and ``verify --read-data`` read them;
  ``cost`` reports bytes, kinds and the retrieval fee per class;
* a broken promise: an *operator's* rule beside s3archive's moves runs/ to
  GLACIER_IR, as a careless operator might; ``verify`` names the cold
  manifest (a warning, exit 0) and the bucket check names the rule.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from s3archive.setup import lifecycle
from s3archive.setup.bucket_check import check_bucket
from s3archive.setup.spec import BucketSpec
from s3archive.store.s3_store import content_md5
from support.archive_env import ArchiveEnv

OPERATOR_RULE = {"ID": "operator-runs", "Status": "Enabled", "Filter": {"Prefix": "runs/"},
                 "Transitions": [{"Days": 1, "StorageClass": "GLACIER_IR"}],
                 "NoncurrentVersionTransitions": [{"NoncurrentDays": 1,
                                                   "StorageClass": "GLACIER_IR"}]}
# Beside the run's own packs: a data pack non-current from the start, and a
# dedup-secret copy.
HAND_WRITTEN = ("data/bb/noncurrent", "keys/dedup/0123456789abcdef/0123456789abcdef.age")


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
        LifecycleConfiguration={"Rules": [*lifecycle.s3_rules(1), OPERATOR_RULE]})

    def cold_keys() -> set[str]:
        return {key for (key, _), cls in _classes(env).items() if cls == "GLACIER_IR"}

    keys = {v["Key"] for v in env.versions()}
    assert any(k.startswith("meta/") for k in keys) and not any(k.startswith("packs/")
                                                                for k in keys)
    moved = {k for k in keys if k.startswith(("data/", "runs/"))}
    assert len([k for k in moved if k.startswith("data/")]) >= 2
    deadline = datetime.now(timezone.utc) + timedelta(seconds=90)
    while cold_keys() != moved:
        assert datetime.now(timezone.utc) < deadline, f"not moved: {moved - cold_keys()}"
        rgw.admin("lc", "process")
    # s3archive's own rule moved data/ only: meta/ and keys/ stay STANDARD.
    classes = _classes(env)
    assert {cls for (key, _), cls in classes.items()
            if key.startswith(("meta/", "keys/"))} == {"STANDARD"}
    metadata_packs = [v for v in env.versions() if v["Key"].startswith("meta/")]
    for key, version in written.items():  # locks survive, versions stay readable by id
        head = s3.head_object(Bucket=env.bucket, Key=key, VersionId=version)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockRetainUntilDate"] == until
        assert head.get("StorageClass", "STANDARD") == classes[(key, version)]
        part = s3.get_object(Bucket=env.bucket, Key=key, VersionId=version,
                             Range="bytes=5-9")["Body"].read()
        assert part == (key.encode() * 1000)[5:10]

    # A lease renewal on a cold pack (what archive does to a reused pack): the
    # lock grows, the class stays.
    later = until + timedelta(days=1)
    s3.put_object_retention(Bucket=env.bucket, Key="data/bb/noncurrent",
                            VersionId=written["data/bb/noncurrent"],
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later})
    head = s3.head_object(Bucket=env.bucket, Key="data/bb/noncurrent",
                          VersionId=written["data/bb/noncurrent"])
    assert (head["ObjectLockRetainUntilDate"], head["StorageClass"]) == (later, "GLACIER_IR")

    # verify: cold packs are fine; the cold manifest is named, exit status 0.
    verified = env.run("verify", "--json")
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    run = verified.json["runs"][0]
    assert run["ok"] and run["problems"] == []
    cold_packs = run["packs"] - len(metadata_packs)
    assert run["pack_classes"] == {"GLACIER_IR": cold_packs, "STANDARD": len(metadata_packs)}
    assert cold_packs > 0
    manifest_key = f"runs/testhost/{summary['run_id']}.jsonl.zst"
    assert [w["key"] for w in run["warnings"]] == [manifest_key]
    assert "is in GLACIER_IR, not STANDARD" in run["warnings"][0]["message"]
    text = env.run("verify")
    assert text.exit_code == 0
    assert (f"{run['packs']} packs present ({cold_packs} GLACIER_IR, "
            f"{len(metadata_packs)} STANDARD)") in text.stdout
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

    # archive goes on beside cold packs (it reads no data pack), and restores.
    (data / "note.txt").write_text("warm\n")
    assert env.archive()["exit_code"] == 0
    assert env.run("verify", "--all").exit_code == 0
    again = tmp_path / "again"
    assert env.run("restore", "latest", "--target", str(again)).exit_code == 0
    assert (again / data.relative_to("/") / "big.bin").read_bytes() == \
        (data / "big.bin").read_bytes()
    assert (again / data.relative_to("/") / "note.txt").read_text() == "warm\n"

    # cost: bytes per class and kind, and what reading the cold bytes costs.
    figures = env.run("cost", "--json").json
    cold, hot = (figures["storage"]["classes"][c] for c in ("GLACIER_IR", "STANDARD"))
    sizes = _sizes(env)  # (prefix, class) -> bytes, from the listing
    for entry, cls in ((cold, "GLACIER_IR"), (hot, "STANDARD")):
        assert entry["data"] == sizes["data/", cls]
        assert entry["metadata"] == sizes["meta/", cls]
        assert entry["packs"] == sizes["data/", cls] + sizes["meta/", cls]
        assert entry["manifests"] == sizes["runs/", cls]
        assert entry["keys"] == sizes["keys/", cls]
        assert entry["index"] == sizes["index/", cls]
        assert entry["bytes"] == sum(n for (_, c), n in sizes.items() if c == cls)
    assert cold["data"] > 0 and cold["manifests"] > 0 and hot["metadata"] > 0
    assert cold["metadata"] == cold["keys"] == cold["index"] == 0 and hot["index"] > 0
    assert cold["price_gb_month"] == 0.004 and cold["retrieval_gb"] == 0.03
    assert cold["retrieval_all"] == pytest.approx(cold["bytes"] / 1024 ** 3 * 0.03, abs=1e-6)
    assert hot["retrieval_all"] == 0
    assert figures["monthly"]["storage_by_class"]["GLACIER_IR"] == pytest.approx(
        cold["bytes"] / 1024 ** 3 * 0.004, abs=1e-4)
    assert "GLACIER_IR: every GB read" in env.run("cost").stdout

    # The bucket check names the operator's rule, not s3archive's.
    spec = BucketSpec(bucket=env.bucket, endpoint_url=rgw.endpoint_url, cold_after=1)
    flagged = [d.actual for d in check_bucket(s3, spec, None).differences
               if d.setting.startswith("lifecycle")]
    assert flagged == ["rule operator-runs (prefix 'runs/') moves GLACIER_IR objects under "
                       "runs/: metadata and format-1 packs must stay STANDARD"]


def _sizes(env: ArchiveEnv) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    for version in env.versions():
        for prefix in ("data/", "meta/", "keys/", "packs/", "runs/", "index/"):
            if version["Key"].startswith(prefix):
                totals[prefix, version.get("StorageClass", "STANDARD")] += version["Size"]
    return totals
