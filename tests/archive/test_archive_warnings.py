"""Warnings are recorded within the manifest's bounds: a run never commits what
its reader refuses (over-long paths, too many warnings)."""

from __future__ import annotations

from pathlib import Path

from s3archive.archive import archiver as archiver_module
from s3archive.archive.archiver import Archiver
from s3archive.config import parse_config
from s3archive.repo.catalog import list_runs, load_manifest
from support.memory_store import FakeClock, MemoryStore


def run_with_picker(tmp_path: Path, lines: list[str]):
    (tmp_path / "etc" / "pickers.d").mkdir(parents=True)
    listing = tmp_path / "paths.txt"
    listing.write_text("".join(line + "\n" for line in lines))
    picker = tmp_path / "etc" / "pickers.d" / "10"
    picker.write_text(f"#!/bin/sh\ncat '{listing}'\n")
    picker.chmod(0o755)
    clock = FakeClock()
    store = MemoryStore(clock)
    config = parse_config({
        "s3": {"bucket": "warnings-test"}, "host": {"name": "h"},
        "local": {"cache_dir": str(tmp_path / "cache"), "state_file": str(tmp_path / "s.json")},
    }, tmp_path / "etc" / "config.toml", clock=clock)
    summary = Archiver(config, store, clock=clock).run()
    return summary, load_manifest(store, list_runs(store)[0])


def test_a_picked_path_longer_than_a_reader_accepts_is_recorded_in_the_message(
        tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("x\n")
    long_path = "/" + "a" * 6000
    summary, manifest = run_with_picker(tmp_path, [str(real), long_path])
    assert summary.exit_code == 3
    (warning,) = [w for w in manifest.trailer.warnings if "bytes" in w.message]
    assert warning.path is None and "path of 6001 bytes: /aaaa" in warning.message
    assert any(e.path == str(real).encode() for e in manifest.entries)


def test_warnings_beyond_the_recorded_maximum_are_counted_in_one(tmp_path: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.setattr(archiver_module, "MAX_RECORDED_WARNINGS", 3)
    real = tmp_path / "real.txt"
    real.write_text("x\n")
    missing = [str(tmp_path / f"missing-{i}") for i in range(10)]
    summary, manifest = run_with_picker(tmp_path, [str(real), *missing])
    assert summary.exit_code == 3
    warnings = manifest.trailer.warnings
    assert len(warnings) == 4
    assert warnings[-1].message == "7 more warnings were logged but not recorded in the manifest"
