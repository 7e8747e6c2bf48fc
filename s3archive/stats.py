"""The figures of one run: one type, one set of JSON names.

``archive --json``, the state file and run history, ``status --json``,
``runs --json``, ``show --json`` and ``cost`` all carry these fields under
these names (README, "JSON output").  This module imports only the
format's model, so the archive path and every reader may use it.

Where the figures come from: the archiver counts them while it runs; a
reader rebuilds them from a manifest (entries, trailer statistics,
warnings), or from a state-file record.  ``requests`` is known only to the
archiving host (the manifest does not record them): ``None`` elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from s3archive.format.model import Warning_


@dataclass(frozen=True)
class RunStats:
    files: int = 0  # regular files (further names of a hard-linked file count as others)
    dirs: int = 0
    symlinks: int = 0
    others: int = 0  # hard links, devices, FIFOs
    snapshots: int = 0
    files_unchanged: int = 0  # taken from the local cache without reading
    bytes_total: int = 0  # logical size of the files
    bytes_snapshots: int = 0  # size of the snapshot streams
    bytes_read: int = 0
    bytes_new: int = 0  # plain bytes of the chunks this run added
    bytes_uploaded: int = 0  # stored (compressed) bytes it uploaded
    chunks_new: int = 0
    chunks_reused: int = 0
    trees_new: int = 0  # metadata blobs it added (format 2: tree nodes, chunk lists, record)
    packs_uploaded: int = 0
    packs_extended: int = 0
    packs_rewritten: int = 0
    warnings: tuple[str, ...] = ()
    requests: Mapping[str, int] | None = None  # S3 requests by operation

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["warnings"] = list(self.warnings)
        data["requests"] = dict(self.requests) if self.requests is not None else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RunStats":
        """Read the fields back from a state file, a history line or a trailer's
        statistics.  What is missing (an older writer) or of the wrong type (a
        file someone edited, a hostile manifest) is left at its default."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = data.get(f.name)
            if f.name == "warnings":
                if isinstance(value, list):
                    values["warnings"] = tuple(str(w) for w in value)
            elif f.name == "requests":
                if isinstance(value, dict):
                    values["requests"] = {str(k): v for k, v in value.items()
                                          if _count(v) is not None}
            elif _count(value) is not None:
                values[f.name] = value
        return cls(**values)

    @property
    def bytes_logical(self) -> int:
        """Files and snapshots: what a full restore would write."""
        return self.bytes_total + self.bytes_snapshots

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values()) if self.requests else 0


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def describe_warning(warning: Warning_) -> str:
    """A warning as one line (``source: path: message``), as ``warnings`` lists it."""
    where = f"{warning.path.decode('utf-8', 'backslashreplace')}: " if warning.path else ""
    return f"{warning.source}: {where}{warning.message}"
