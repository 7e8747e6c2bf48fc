"""Read a run object (format 1 manifest or format 2 root) as a whole Manifest, for tests.

Tests check what a run holds; this reads it with the tool's own strict
readers (format 2: every node and blob checked), so a test reading a run
here also proves the run is readable.
"""

from __future__ import annotations

from typing import Any

from s3archive.format.manifest_codec import decode_manifest, dumps, encode_manifest
from s3archive.format.model import Manifest
from s3archive.format.run_root import decode_root
from s3archive.repo.catalog import peek_format
from s3archive.repo.run_tree import RunTree

PACK_PREFIXES = ("packs/", "data/", "meta/")


class ClientReader:
    """The one StoreReader method the tree reader uses, over a boto3 client."""

    def __init__(self, client: Any, bucket: str):
        self.client = client
        self.bucket = bucket

    def get(self, key: str, version_id: str | None = None,
            byte_range: tuple[int, int] | None = None) -> bytes:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            args["VersionId"] = version_id
        if byte_range:
            args["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        return self.client.get_object(**args)["Body"].read()


def read_run(store: Any, key: str, body: bytes) -> Manifest:
    """The whole run whose run object is ``body``; ``store`` reads its metadata packs."""
    if peek_format(body, key) == 2:
        return RunTree(store, decode_root(body, key), key, whole_packs=True).manifest()
    return decode_manifest(body, key)


def as_format1_lines(manifest: Manifest) -> list[dict[str, Any]]:
    """The run as format-1 manifest lines (header, packs, entries, snapshots, trailer)."""
    import json
    import zstandard
    text = zstandard.ZstdDecompressor().stream_reader(encode_manifest(manifest)).read()
    return [json.loads(line) for line in text.decode().splitlines()]


__all__ = ["ClientReader", "read_run", "as_format1_lines", "PACK_PREFIXES", "dumps"]
