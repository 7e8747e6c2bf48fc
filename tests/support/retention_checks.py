"""Checks shared by the retention simulations (tests/archive/test_retention_simulation.py:
one host; test_fleet_retention_simulation.py: a dedup group of hosts), over an in-memory
Object Lock store: the retention invariant (docs/FORMAT.md 8.2), the lease bound, and
byte-identical restores from the pinned versions."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterable, Mapping

from s3archive.format.chunk_codec import decode_chunk
from s3archive.format.model import FILE, Manifest
from support.memory_store import MemoryStore, StoredVersion


def check_live_run(store: MemoryStore, stored: StoredVersion, manifest: Manifest) -> None:
    """A live run's root is locked as it says, and every pack version it references
    exists with its size, locked in its mode (or COMPLIANCE) at least until the run's
    retain-until, and at least until the lock the run claims for it."""
    header = manifest.header
    where = f"{stored.key}@{stored.version_id} (tier {header.tier}, until {header.retain_until})"
    assert stored.lock_mode == header.lock_mode and stored.retain_until is not None \
        and stored.retain_until >= header.retain_until, f"manifest {where} not locked"
    for pack in manifest.packs:
        version = store.version(pack.key, pack.version_id)
        assert version is not None, f"{where} references {pack.key}@{pack.version_id}: gone"
        assert not version.is_delete_marker and version.size == pack.size
        assert version.lock_mode in (header.lock_mode, "COMPLIANCE"), \
            f"{where}: pack {pack.key} locked in {version.lock_mode}"
        assert version.retain_until is not None and version.retain_until >= header.retain_until, \
            f"{where}: pack {pack.key}@{pack.version_id} locked only until {version.retain_until}"
        assert pack.locked_until is None or version.retain_until >= pack.locked_until, \
            f"{where}: the manifest claims {pack.key} locked until {pack.locked_until}"


def check_lease_bound(versions: Iterable[StoredVersion],
                      lease_needed: Callable[[str, str], datetime | None], now: datetime) -> None:
    """Nothing is kept alive for nothing: no pack version is locked past the latest
    retain-until + slack of a run that references it (``lease_needed``, None: no run
    does), so lifecycle collects it within two days of its lease."""
    for version in versions:
        needed = lease_needed(version.key, version.version_id)
        where = f"{version.key}@{version.version_id}"
        assert needed is not None, f"{where} is used by no run"
        assert version.retain_until is not None and version.retain_until <= needed, \
            f"{where} locked until {version.retain_until}, but no run needs it after {needed}"
        assert needed > now - timedelta(days=2), \
            f"{where} outlived its lease ({needed}) by more than two days"


def check_restores(store: MemoryStore, manifest: Manifest, expected: Mapping[bytes, str],
                   where: str) -> None:
    """Every file of the run reads back byte-identical from the pinned versions (ranged
    GETs, decoded and hash-checked), and the run has exactly the files expected."""
    files = {e.path: e for e in manifest.entries if e.kind == FILE}
    assert set(files) == set(expected), (
        f"{where}: manifest files differ from the tree: "
        f"missing {sorted(set(expected) - set(files))[:3]}, "
        f"extra {sorted(set(files) - set(expected))[:3]}")
    for path, entry in files.items():
        digest = hashlib.sha256()
        for chunk in entry.chunks:
            pack = manifest.packs[chunk.pack]
            stored = store.get(pack.key, pack.version_id,
                               (chunk.offset, chunk.offset + chunk.stored - 1))
            digest.update(decode_chunk(stored, chunk.encoding, chunk.size, chunk.hash))
        assert digest.hexdigest() == expected[path], f"{where}: {path!r} differs"


def tree_digests(*trees: Path) -> dict[bytes, str]:
    """SHA-256 of every file under ``trees``, by path."""
    found = {}
    for tree in trees:
        for dirpath, _dirs, files in os.walk(tree):
            for name in files:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as handle:
                    found[os.fsencode(path)] = hashlib.sha256(handle.read()).hexdigest()
    return found
