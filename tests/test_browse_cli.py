"""``runs``, ``ls``, ``show``, ``diff``, ``cat-snapshot`` and ``restore-snapshot`` (RGW)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from s3archive.format.model import Warning_
from support.manifest_builder import RunBuilder, invoke, make_bucket_env

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def env(rgw, tmp_path_factory):
    """Two runs of testhost and one of otherhost, built once for the module."""
    env = make_bucket_env(rgw, tmp_path_factory.mktemp("inspect"))
    first = RunBuilder(env.store, run_id="20260301T020000Z", started=T0)
    first.dir(b"/")
    first.dir(b"/etc")
    first.file(b"/etc/hosts", b"127.0.0.1 localhost\n")
    first.file(b"/etc/gone", b"removed later\n")
    first.file(b"/etc/same", b"unchanged\n")
    first.file(b"/etc/\xe9t\xe9", b"latin-1 name\n", mode=0o600)
    first.snapshot("pg", b"-- dump\n" * 1000, restore_through="cat > \"$PGRESTORE_OUT\"",
                   description="pg_dumpall of cluster main\n")
    first.upload()
    second = RunBuilder(env.store, run_id="20260302T020000Z", started=T0 + timedelta(days=1),
                        tier="weekly")
    second.dir(b"/")
    second.dir(b"/etc")
    second.file(b"/etc/hosts", b"127.0.0.1 localhost\n10.0.0.1 db\n")
    second.file(b"/etc/same", b"unchanged\n")
    second.file(b"/etc/\xe9t\xe9", b"latin-1 name\n", mode=0o644)
    second.symlink(b"/etc/new-link", b"hosts")
    second.warnings.append(Warning_("picker", "picker 20-web exited with status 1"))
    second.stats["bytes_new"] = 31
    second.upload()
    other = RunBuilder(env.store, host="otherhost", run_id="20260302T030000Z",
                       started=T0 + timedelta(days=1, hours=1))
    other.file(b"/x", b"other host")
    other.upload()
    return env


def test_runs_table_and_json(env) -> None:
    table = invoke(env, "runs")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["RUN", "TOOK", "TIER", "LOCKED", "UNTIL", "HOLD", "FILES",
                                "SIZE", "NEW", "STATUS"]
    assert set(lines[1]) == {"-", " "}
    assert len(lines) == 4  # header, rule, two runs of this host
    assert lines[2].startswith("20260301T020000Z  ")
    assert lines[2].rstrip().endswith("ok")
    assert "weekly" in lines[3] and lines[3].rstrip().endswith("1 warning")
    assert "31 B" in lines[3] and " G " in lines[3]
    assert max(len(line) for line in lines) <= 100, table.stdout
    widths = {line.index(" G ") for line in lines[2:]}
    assert len(widths) == 1  # aligned

    from s3archive.browse import RunSummary
    from s3archive.cli.browse import runs_table
    from s3archive.stats import RunStats

    widest = RunSummary(host="testhost", run_id="20260302T020000Z-1", started=T0,
                        finished=T0 + timedelta(hours=9, minutes=59), tier="monthly",
                        retain_until=T0, lock_mode="COMPLIANCE", legal_hold=True,
                        stats=RunStats(files=9_999_999, bytes_total=1023 * 2**20,
                                       bytes_new=1000 * 2**20, warnings=("w",) * 99),
                        version_id="v")
    assert max(len(line) for line in runs_table([widest], all_hosts=False).splitlines()) <= 100

    every_table = invoke(env, "runs", "--all-hosts").stdout.splitlines()
    assert every_table[0].split()[:2] == ["RUN", "HOST"]
    assert "otherhost" in every_table[-1]

    every = json.loads(invoke(env, "runs", "--all-hosts", "--json").stdout)
    assert [(r["host"], r["run_id"]) for r in every] == [
        ("testhost", "20260301T020000Z"), ("testhost", "20260302T020000Z"),
        ("otherhost", "20260302T030000Z")]
    first = every[0]
    assert first["files"] == 4 and first["status"] == "complete" and first["legal_hold"] is False
    assert first["bytes_total"] == 20 + 14 + 10 + 13 and first["bytes_snapshots"] == 8000
    assert first["duration_s"] == 42.0 and first["lock_mode"] == "GOVERNANCE"
    assert first["warnings"] == [] and first["requests"] is None
    assert every[1]["warnings"] == ["picker: picker 20-web exited with status 1"]
    assert every[1]["bytes_new"] == 31


def test_runs_json_names_are_the_archive_and_status_names(env) -> None:
    """One set of field names: RunStats' (README, "JSON output")."""
    from dataclasses import fields

    from s3archive.stats import RunStats

    names = {f.name for f in fields(RunStats)}
    run = json.loads(invoke(env, "runs", "--json").stdout)[0]
    assert names <= set(run)
    shown = json.loads(invoke(env, "show", "20260301", "--json").stdout)
    assert names <= set(shown["summary"])


def test_run_names_latest_and_prefixes(env) -> None:
    latest = json.loads(invoke(env, "show", "latest", "--json").stdout)
    assert latest["run_id"] == "20260302T020000Z"
    other = json.loads(invoke(env, "show", "latest", "--host", "otherhost", "--json").stdout)
    assert other["host"] == "otherhost"
    by_prefix = json.loads(invoke(env, "show", "20260301", "--json").stdout)
    assert by_prefix["run_id"] == "20260301T020000Z"
    ambiguous = invoke(env, "show", "202603")
    assert ambiguous.exit_code == 2 and "ambiguous" in ambiguous.stderr
    unknown = invoke(env, "show", "1999")
    assert unknown.exit_code == 1 and "no run matches '1999'" in unknown.stderr


def test_ls(env) -> None:
    listing = invoke(env, "ls", "20260302", "/etc")
    assert listing.exit_code == 0, listing.output
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["MODE", "USER", "GROUP", "SIZE", "MODIFIED", "(UTC)", "PATH"]
    paths = [line.split("  ")[-1].strip() for line in lines[2:]]
    assert paths == ["/etc", "/etc/hosts", "/etc/new-link -> hosts", "/etc/same",
                     "/etc/\\xe9t\\xe9"]
    assert lines[3].startswith("-rw-r--r--  root  root     32  2023-11-14 22:13:20  /etc/hosts")

    listing = json.loads(invoke(env, "ls", "20260302", "--json").stdout)
    assert (listing["host"], listing["run_id"], listing["path"]) == (
        "testhost", "20260302T020000Z", "/")
    rows = listing["entries"]
    odd = next(r for r in rows if r.get("path_b64"))
    assert odd["path_b64"] == "L2V0Yy/pdOk=" and odd["mode"] == "0644"
    missing = invoke(env, "ls", "20260302", "/nope")
    assert missing.exit_code == 2 and "/nope: not in this run" in missing.stderr


def test_show(env) -> None:
    text = invoke(env, "show", "20260301").stdout
    assert "Run:        testhost/20260301T020000Z" in text
    assert "Lock:       GOVERNANCE until" in text
    assert "Snapshots: 1" in text
    assert "  pg: 7.8 KiB, ok, took 0.5s" in text
    assert "      pg_dumpall of cluster main" in text
    assert '      restore through: cat > "$PGRESTORE_OUT"' in text
    warned = invoke(env, "show", "20260302").stdout
    assert "Warnings: 1\n  [picker] picker 20-web exited with status 1" in warned
    figures = warned.split("Figures recorded by the run:\n", 1)[1].split("\n\n", 1)[0]
    assert "  New data: " in figures and "31 B" in figures
    assert "  Files:" in figures and "  Entries:" in figures
    assert "_" not in figures, figures  # labels, not snake_case keys
    data = json.loads(invoke(env, "show", "20260301", "--json").stdout)
    assert data["snapshots"][0]["restore_through"] == 'cat > "$PGRESTORE_OUT"'
    assert data["packs"] == 1 and data["legal_hold"] is False


def test_diff(env) -> None:
    result = invoke(env, "diff", "20260301", "20260302")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "-  /etc/gone",
        "M  /etc/hosts  (size, content changed)",
        "+  /etc/new-link",
        "U  /etc/\\xe9t\\xe9  (mode changed)",
    ]
    assert "1 added, 1 removed, 1 changed, 1 metadata only" in result.stderr
    diff = json.loads(invoke(env, "diff", "20260301", "20260302", "--json").stdout)
    assert diff["from"]["run_id"] == "20260301T020000Z"
    assert diff["to"]["run_id"] == "20260302T020000Z"
    assert diff["counts"] == {"added": 1, "removed": 1, "content": 1, "metadata": 1}
    assert [r["change"] for r in diff["changes"]] == ["removed", "content", "added", "metadata"]
    assert diff["changes"][1]["fields"] == ["size", "content"]


def test_cat_and_restore_snapshot(env, tmp_path: Path, monkeypatch) -> None:
    cat = invoke(env, "cat-snapshot", "20260301", "pg")
    assert cat.exit_code == 0
    assert cat.stdout_bytes == b"-- dump\n" * 1000

    out = tmp_path / "restored.sql"
    monkeypatch.setenv("PGRESTORE_OUT", str(out))
    # No terminal to ask on: refused (tests/test_restore_snapshot_cli.py asks on a pty).
    declined = invoke(env, "restore-snapshot", "20260301", "pg", input="n\n")
    assert declined.exit_code == 2 and 'cat > "$PGRESTORE_OUT"' in declined.stderr
    assert not out.exists()
    done = invoke(env, "restore-snapshot", "20260301", "pg", "--yes")
    assert done.exit_code == 0, done.output
    assert out.read_bytes() == b"-- dump\n" * 1000

    unknown = invoke(env, "cat-snapshot", "20260301", "mysql")
    assert unknown.exit_code == 2 and "no snapshot 'mysql'" in unknown.stderr


def test_diff_names_fields_in_words(rgw, tmp_path: Path) -> None:
    env = make_bucket_env(rgw, tmp_path)
    for run_id, day, mtime in (("20260401T020000Z", 0, 1_700_000_000_000_000_000),
                               ("20260402T020000Z", 1, 1_700_000_999_000_000_000)):
        run = RunBuilder(env.store, run_id=run_id, started=T0 + timedelta(days=30 + day))
        run.dir(b"/")
        run.file(b"/touched", b"same bytes\n", mtime_ns=mtime)
        run.file(b"/chmod", b"same\n", mode=0o600 if day == 0 else 0o640, user=None,
                 uid=1000 + day)
        run.upload()
    result = invoke(env, "diff", "20260401", "20260402")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["U  /chmod  (mode, owner id changed)",
                                          "U  /touched  (mtime changed)"]
    assert "mtime_ns" not in result.stdout
    rows = json.loads(invoke(env, "diff", "20260401", "20260402", "--json").stdout)["changes"]
    assert rows[1]["fields"] == ["mtime_ns"]  # JSON keeps the manifest's field names
