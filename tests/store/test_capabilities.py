"""Who may do what to the bucket: the capability split, checked without a type checker.

``StoreReader`` reads, ``StoreWriter`` adds versions and lengthens locks,
``DeletingStore`` deletes (``s3archive/store/base.py``).  The annotations of
the operations say which one each takes, and no module outside ``store/``
and ``prune.py`` calls ``delete_version`` at all.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

import s3archive
from s3archive.store.base import DeletingStore, StoreReader, StoreWriter

PACKAGE = Path(s3archive.__file__).parent


def members(protocol: type) -> set[str]:
    return {name for name in dir(protocol) if not name.startswith("_")}


def test_each_capability_adds_only_its_own_methods() -> None:
    assert members(StoreReader) == {"location", "get", "head", "list_versions", "list_keys",
                                    "bucket_lock_config", "usage"}
    assert members(StoreWriter) - members(StoreReader) == {"put", "put_once",
                                                           "extend_retention", "set_legal_hold"}
    assert members(DeletingStore) - members(StoreWriter) == {"delete_version"}


def _store_annotation(function: typing.Any) -> typing.Any:
    return typing.get_type_hints(function)["store"]


def _users() -> list[tuple[str, typing.Any, type]]:
    from s3archive import browse, export, fleet, hold, prune, verify
    from s3archive.archive import archiver, chunk_writer, pack_lease
    from s3archive.repo import catalog, pack_reader
    from s3archive.restore import restorer

    return [
        ("Archiver", archiver.Archiver.__init__, StoreWriter),
        ("ChunkWriter", chunk_writer.ChunkWriter, StoreWriter),
        ("PackLease", pack_lease.PackLease, StoreWriter),
        ("hold_run", hold.hold_run, StoreWriter),
        ("restore_run", restorer.restore_run, StoreReader),
        ("snapshot_stream", restorer.snapshot_stream, StoreReader),
        ("Verifier", verify.Verifier.__init__, StoreReader),
        ("PackReader", pack_reader.PackReader.__init__, StoreReader),
        ("list_runs", catalog.list_runs, StoreReader),
        ("load_manifest", catalog.load_manifest, StoreReader),
        ("pick_run", browse.pick_run, StoreReader),
        ("write_tar", export.write_tar, StoreReader),
        ("fleet_view", fleet.fleet_view, StoreReader),
        ("prune", prune.prune, DeletingStore),
    ]


@pytest.mark.parametrize("name,function,capability", _users(), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_operations_take_the_narrowest_capability(name: str, function: typing.Any,
                                                  capability: type) -> None:
    assert _store_annotation(function) is capability, name


def test_only_prune_deletes() -> None:
    callers = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "delete_version":
                callers.add(str(path.relative_to(PACKAGE)))
    assert {c for c in callers if not c.startswith("store/")} == {"prune.py"}
