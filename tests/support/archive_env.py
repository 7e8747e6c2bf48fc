"""A configured host for archive tests: config, pickers, snapshotters, the real CLI."""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from s3archive.cli.main import cli


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)


@dataclass
class ArchiveEnv:
    """A config dir with pickers.d/ and snapshots.d/ and a fresh locked bucket."""

    root: Path
    endpoint_url: str
    access_key: str
    secret_key: str
    client: Any
    bucket: str = field(default_factory=lambda: f"t-{secrets.token_hex(6)}")
    extra_config: str = ""
    locked_bucket: bool = True
    pack_size_mib: int = 4

    def __post_init__(self) -> None:
        self.etc = self.root / "etc"
        (self.etc / "pickers.d").mkdir(parents=True, exist_ok=True)
        (self.etc / "snapshots.d").mkdir(exist_ok=True)
        self.cache_dir = self.root / "cache"
        # made now, not by the first run: a run that creates them changes the mtime of
        # the directory above the trees tests pick, which the next run would record
        self.cache_dir.mkdir(exist_ok=True)
        (self.root / "state").mkdir(exist_ok=True)
        creds = self.etc / "credentials"
        creds.write_text(f"[default]\naws_access_key_id = {self.access_key}\n"
                         f"aws_secret_access_key = {self.secret_key}\n")
        creds.chmod(0o600)
        if self.locked_bucket:
            self.client.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)
        else:
            self.client.create_bucket(Bucket=self.bucket)
        self.write_config()

    @property
    def config(self) -> Path:
        return self.etc / "config.toml"

    def write_config(self, extra: str | None = None, retention: str = "",
                     host: str = "testhost") -> None:
        if extra is not None:
            self.extra_config = extra
        self.config.write_text(
            f'{self.extra_config}\n'
            f'[s3]\nbucket = "{self.bucket}"\nendpoint_url = "{self.endpoint_url}"\n'
            f'credentials_file = "credentials"\n'
            f'[host]\nname = "{host}"\n'
            f'[retention]\n{retention}\n'
            f'[content]\npack_size_mib = {self.pack_size_mib}\n'
            f'[local]\ncache_dir = "{self.cache_dir}"\nstate_file = "{self.root}/state/last-run.json"\n')

    def picker(self, name: str, body: str) -> Path:
        return self._executable(self.etc / "pickers.d" / name, body)

    def pick(self, *paths: Path | str, name: str = "10-paths") -> Path:
        lines = "".join(f"printf '%s\\n' '{p}'\n" for p in paths)
        return self.picker(name, lines)

    def snapshotter(self, name: str, body: str) -> Path:
        return self._executable(self.etc / "snapshots.d" / name, body)

    @staticmethod
    def _executable(path: Path, body: str) -> Path:
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path

    def run(self, *args: str) -> CliResult:
        result = CliRunner().invoke(cli, ["--config", str(self.config), *args],
                                    catch_exceptions=False, env={"JOURNAL_STREAM": ""})
        return CliResult(result.exit_code, result.stdout, result.stderr)

    def archive(self, *args: str) -> dict[str, Any]:
        """Run `archive --json`; returns the summary (exit code inside)."""
        result = self.run("archive", "--json", *args)
        assert result.exit_code in (0, 3), result.stderr
        summary = result.json
        assert summary["exit_code"] == result.exit_code
        return summary

    def versions(self, prefix: str = "") -> list[dict[str, Any]]:
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=prefix)
        return [v for page in pages for v in page.get("Versions", [])]

    def manifest_lines(self, key: str) -> list[dict[str, Any]]:
        """The run as format-1 manifest lines: a format-2 run is read through its
        trees by the tool's reader (so it is proven readable) and shown as format 1
        shows a run; ``root_lines`` gives a run object's own lines."""
        from support.runs import ClientReader, as_format1_lines, read_run
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return as_format1_lines(read_run(ClientReader(self.client, self.bucket), key, body))

    def root_lines(self, key: str) -> list[dict[str, Any]]:
        import zstandard
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        text = zstandard.ZstdDecompressor().stream_reader(body).read().decode()
        return [json.loads(line, object_pairs_hook=_no_duplicate_keys)
                for line in text.splitlines()]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in a manifest line: {keys}"
    return dict(pairs)


def entries_by_path(lines: list[dict[str, Any]]) -> dict[bytes, dict[str, Any]]:
    import base64
    found = {}
    for line in lines:
        if line["type"] == "entry":
            path = line["path"].encode() if "path" in line else base64.b64decode(line["path_b64"])
            found[path] = line
    return found


def rewrite_inside(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)
    os.utime(path)
