"""`s3archive cost`: storage measured by class from the bucket, requests of
the last runs from the run history, and a monthly estimate from [cost]."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.archive_env import ArchiveEnv

GIB = 1024 ** 3


@pytest.fixture
def env(rgw, tmp_path: Path) -> ArchiveEnv:
    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(bytes(range(256)) * 8192)
    (data / "note.txt").write_text("first\n")
    env.pick(data)
    return env


def test_cost_measures_storage_runs_and_requests(env: ArchiveEnv) -> None:
    first = env.archive()
    (env.root / "data" / "note.txt").write_text("second\n")
    second = env.archive()
    versions = env.versions()
    stored = sum(v["Size"] for v in versions)
    packs = sum(v["Size"] for v in versions if v["Key"].startswith(("data/", "meta/")))
    index = sum(v["Size"] for v in versions if v["Key"].startswith("index/"))  # group index

    result = env.run("cost", "--json")
    assert result.exit_code == 0, result.stderr
    figures = result.json
    classes = figures["storage"]["classes"]
    assert list(classes) == ["STANDARD"]
    standard = classes["STANDARD"]
    assert standard["objects"] == len(versions)
    assert standard["bytes"] == stored
    assert standard["packs"] == packs > 0
    assert standard["manifests"] == stored - packs - index > 0
    assert standard["index"] == index > 0
    assert standard["month"] == pytest.approx(stored / GIB * 0.023, abs=1e-6)
    assert figures["runs"] == {"manifests": 2, "live": 2, "by_host": {"testhost": 2},
                               "lapsed": 0}
    recent = figures["recent_runs"]
    assert [r["run_id"] for r in recent] == [first["run_id"], second["run_id"]]
    assert recent[0]["requests"] == first["requests"]
    assert recent[1]["total_requests"] == sum(second["requests"].values())
    writes = sum(n for op, n in first["requests"].items()
                 if op in ("PutObject", "PutObjectRetention", "PutObjectLegalHold",
                           "ListObjectVersions", "ListObjectsV2"))
    reads = sum(first["requests"].values()) - writes
    assert recent[0]["cost"] == pytest.approx(writes * 0.005 / 1000 + reads * 0.0004 / 1000,
                                              abs=1e-6)
    assert [r["initial_upload"] for r in recent] == [True, False]
    monthly = figures["monthly"]
    # the first run uploads everything once: the runs after it give the monthly rates
    assert monthly["requests"] == pytest.approx(recent[1]["cost"] * 30, abs=1e-4)
    assert monthly["requests_from_initial_upload"] is False
    assert monthly["storage"] == pytest.approx(stored / GIB * 0.023, abs=1e-4)
    assert monthly["total"] == pytest.approx(monthly["storage"] + monthly["requests"], abs=1e-4)
    assert monthly["uploaded_per_month_bytes"] == second["bytes_uploaded"] * 30

    text = env.run("cost")
    assert text.exit_code == 0
    assert "STANDARD" in text.stdout and "2 live (still locked) of 2 manifests" in text.stdout
    assert first["run_id"] + " (first)" in text.stdout and "monthly estimate: USD" in text.stdout
    assert "(runs after the first)" in text.stdout


def test_first_run_is_not_projected_as_monthly_growth(env: ArchiveEnv) -> None:
    first = env.archive()
    assert first["bytes_uploaded"] > 0
    figures = env.run("cost", "--json").json
    assert figures["recent_runs"][0]["initial_upload"] is True
    assert figures["monthly"]["uploaded_per_month_bytes"] is None
    assert figures["monthly"]["requests_from_initial_upload"] is True
    text = env.run("cost").stdout
    assert "storage growth: not known until a run after the first" in text
    assert "storage grows by" not in text


def test_price_table_from_the_config_drives_the_estimate(env: ArchiveEnv) -> None:
    env.archive()
    env.write_config(extra='[cost]\ncurrency = "EUR"\nstorage_gb_month = 1000\n'
                     'put_per_1000 = 1000\nget_per_1000 = 0\nruns_per_month = 1\n'
                     '[cost.class_gb_month]\nGLACIER_IR = 0.5\n')
    figures = env.run("cost", "--json").json
    stored = figures["storage"]["classes"]["STANDARD"]["bytes"]
    assert figures["currency"] == "EUR"
    assert figures["prices"]["class_gb_month"]["GLACIER_IR"] == 0.5
    assert figures["monthly"]["storage"] == pytest.approx(stored / GIB * 1000, abs=1e-4)
    run = figures["recent_runs"][0]
    writes = sum(n for op, n in run["requests"].items() if op.startswith(("Put", "List")))
    assert writes > 0
    assert figures["monthly"]["requests"] == pytest.approx(writes, abs=1e-4)


@pytest.mark.parametrize("section, message", [
    ("[cost]\nput_per_1000 = -0.1\n", "cost.put_per_1000 = -0.1: must be between 0 and 1000"),
    ("[cost]\nstorage_gb_month = \"cheap\"\n", "cost.storage_gb_month = 'cheap': must be"),
    ("[cost]\nprice = 1\n", "unknown key 'cost.price'"),
    ("[cost.class_gb_month]\nGLACIER_FAST = 0.1\n",
     "cost.class_gb_month.GLACIER_FAST = 0.1: unknown storage class"),
    ("[cost]\nruns_per_month = true\n", "cost.runs_per_month = True: must be"),
    ("[cost]\ncurrency = \"US$\"\n", "must be a currency code"),
])
def test_bad_price_tables_are_configuration_errors(env: ArchiveEnv, section: str,
                                                   message: str) -> None:
    env.write_config(extra=section)
    result = env.run("cost")
    assert result.exit_code == 2
    assert message in result.stderr
