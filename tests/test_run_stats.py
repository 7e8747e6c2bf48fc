"""RunStats: one type and one set of names for a run's figures."""

from __future__ import annotations

from dataclasses import fields

from s3archive.archive.archiver import ArchiveSummary
from s3archive.stats import RunStats


def test_archive_summary_json_is_identity_plus_run_stats() -> None:
    summary = ArchiveSummary(run_id="r", host="h", started="s", files=3, bytes_total=30,
                             warnings=["file: /x: vanished"], requests={"PutObject": 2})
    data = summary.to_json()
    assert {f.name for f in fields(RunStats)} <= set(data)
    assert RunStats.from_json(data) == summary.stats
    assert data["warnings"] == ["file: /x: vanished"] and data["requests"] == {"PutObject": 2}


def test_records_of_older_versions_and_edited_files_read_as_far_as_they_go() -> None:
    old = {"format": 1, "run_id": "20261101T020000Z", "files": 7, "bytes_total": 700,
           "bytes_new": 10, "warnings": ["picker: exited 1"], "requests": {"GetObject": 3}}
    stats = RunStats.from_json(old)  # written before bytes_snapshots existed
    assert (stats.files, stats.bytes_total, stats.bytes_snapshots) == (7, 700, 0)
    assert stats.warnings == ("picker: exited 1",) and stats.total_requests == 3
    hostile = RunStats.from_json({"files": "many", "dirs": True, "bytes_new": -5,
                                  "warnings": 3, "requests": {"PutObject": "x", "Get": 2}})
    assert hostile == RunStats(requests={"Get": 2})
