"""A host archiving one tree into the in-memory store, plain or encrypting.

``root/tree`` is the tree its one picker names; ``root/etc`` holds ``pickers.d``
and (once the host encrypts) the dedup secret; the cache is ``root/cache`` and
the state file ``root/state/s.json`` (its own directory, so that writing it
leaves the mtime of ``root``, the tree's parent, alone).  The clock starts at
2031-11-24 03:15 UTC and moves a day on after every run.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from s3archive.archive.archiver import Archiver, ArchiveSummary
from s3archive.config import dedup_secret_file_text, parse_config
from s3archive.crypto.dedup import DedupSecret
from s3archive.crypto.keys import Identity
from s3archive.format.model import Entry
from s3archive.repo.catalog import RunRef, list_runs, load_manifest
from s3archive.restore.restorer import restore_run
from support.memory_store import FakeClock, MemoryStore

START = datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc)


class MemoryHost:
    """``encrypted=True`` gives the host an ``[encryption]`` section: ``identity``
    is the restore key readers pass, ``secret`` its dedup secret."""

    def __init__(self, root: Path, bucket: str = "memory-host", *, encrypted: bool = False,
                 name: str = "h"):
        self.root = root
        self.etc = root / "etc"
        (self.etc / "pickers.d").mkdir(parents=True)
        (root / "state").mkdir(exist_ok=True)
        self.tree = root / "tree"
        self.tree.mkdir()
        picker = self.etc / "pickers.d" / "10-tree"
        picker.write_text(f"#!/bin/sh\necho '{self.tree}'\n")
        picker.chmod(0o755)
        self.bucket, self.name = bucket, name
        self.clock = FakeClock(START)
        self.store = MemoryStore(self.clock)
        self.identity = Identity.generate()
        self.secret = DedupSecret.generate()
        self.configure(encrypted)

    def configure(self, encrypted: bool) -> None:
        """(Re)write the configuration: plain, or encrypting to ``identity``."""
        table: dict[str, Any] = {
            "s3": {"bucket": self.bucket}, "host": {"name": self.name},
            "content": {"pack_size_mib": 1},
            "local": {"cache_dir": str(self.root / "cache"),
                      "state_file": str(self.root / "state" / "s.json")}}
        if encrypted:
            secret_file = self.etc / "dedup.key"
            if not secret_file.exists():
                fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(dedup_secret_file_text(self.secret))
            table["encryption"] = {"recipients": [str(self.identity.recipient())],
                                   "dedup_secret_file": str(secret_file)}
        self.config = parse_config(table, self.etc / "config.toml", clock=self.clock)

    def attempt(self, **options: Any) -> ArchiveSummary:
        """One run, whatever its exit code (the caller checks it); then a day passes."""
        summary = Archiver(self.config, self.store, clock=self.clock, **options).run()
        self.clock.advance(timedelta(days=1))
        return summary

    def archive(self, **options: Any) -> RunRef:
        """One run that must succeed (exit code 0); returns its ref."""
        summary = self.attempt(**options)
        assert summary.exit_code == 0, summary.warnings
        return self.latest()

    def latest(self) -> RunRef:
        return max(list_runs(self.store, self.name), key=lambda r: r.run_id)

    def entries(self) -> dict[str, Entry]:
        """The latest run's entries below the tree, by path relative to it."""
        prefix = os.fsencode(self.tree) + b"/"
        return {os.fsdecode(e.path.removeprefix(prefix)): e
                for e in load_manifest(self.store, self.latest()).entries
                if e.path.startswith(prefix)}

    def gets(self) -> int:
        return self.store.usage().requests.get("GetObject", 0)

    def restores_exactly(self, target: Path) -> None:
        """The latest run, restored into ``target``, is the tree as it is now."""
        manifest = load_manifest(self.store, self.latest(), identities=[self.identity])
        assert restore_run(self.store, manifest, target, []).ok
        assert tree_snapshot(target / str(self.tree).lstrip("/")) == tree_snapshot(self.tree)


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """Every path below ``root``: its mode, size and content (a symlink's target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            content = (os.readlink(path) if path.is_symlink()
                       else path.read_bytes() if path.is_file() else None)
            out[str(path.relative_to(root))] = (st.st_mode, st.st_size, content)
    return out
