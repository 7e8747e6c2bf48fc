"""A run opened the cheapest way its format allows, with one GET of its root.

Format 2: the root object only (a :class:`RunTree`; nodes are read on
demand).  Format 1: the manifest, read whole (it has no other shape).  The
object is fetched and its names checked as :func:`catalog.load_manifest`
does (the same helpers); here it is read once.
"""

from __future__ import annotations

from s3archive.crypto.keys import Identity
from s3archive.format import run_root
from s3archive.format.limits import LIMITS
from s3archive.format.manifest_codec import decode_manifest
from s3archive.format.model import Manifest
from s3archive.repo.catalog import (RunRef, check_names, fetch_run_object, open_tree,
                                   peek_format)
from s3archive.repo.run_tree import RunTree
from s3archive.store.base import StoreReader


def open_run(store: StoreReader, run: RunRef, whole_packs: bool = False,
             identities: list[Identity] | None = None) -> RunTree | Manifest:
    """``run`` as a tree (format 2; ``identities``: the restore keys of an
    encrypted run) or a whole manifest (format 1)."""
    blob, where = fetch_run_object(store, run)
    if peek_format(blob, where) == run_root.FORMAT:
        return open_tree(store, run, blob, whole_packs=whole_packs, identities=identities)
    manifest = decode_manifest(blob, where=where, limits=LIMITS)
    check_names(manifest.header, run)
    return manifest
