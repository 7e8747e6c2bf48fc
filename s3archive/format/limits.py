"""The size bounds a reader enforces on format 1 objects (docs/FORMAT.md, 6.1).

Everything read from the bucket is untrusted: these bounds are checked while
streaming, before anything of the declared size is allocated.  They are
generous for real hosts (the reasons are in FORMAT) and small enough that a
hostile object costs seconds and a bounded amount of memory, never a
MemoryError.  A writer must never write beyond them.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

# Chunks: the chunker cuts at most 4 MiB (archive/chunker.py); the format allows
# twice that, so the chunker may grow without a new format.
MAX_CHUNK_SIZE = 8 * MiB

INT64_MAX = (1 << 63) - 1  # sizes, offsets, ids, times: what the filesystem and S3 hold


@dataclass(frozen=True, slots=True)
class ManifestLimits:
    """Bounds on one manifest.  Tests may pass smaller ones; readers use ``LIMITS``."""

    stored_bytes: int = 1 * GiB  # the compressed object (held in memory while decoded)
    plain_bytes: int = 4 * GiB  # decompressed, all lines
    line_bytes: int = 256 * MiB  # one line (a file of ~2.4 TiB at the average chunk size)
    lines: int = 5_000_000  # non-empty lines: header + packs + entries + snapshots + trailer
    blank_lines: int = 1024  # the writer writes none
    path_bytes: int = 4096  # PATH_MAX: the walker lstat()s full paths
    name_bytes: int = 255  # one path component (NAME_MAX)
    target_bytes: int = 4096  # a symlink's text (PATH_MAX)
    owner_chars: int = 256  # user / group name (LOGIN_NAME_MAX)
    acl_chars: int = 256 * KiB  # an ACL in text form (its xattr holds at most 64 KiB)
    xattr_names_bytes: int = 64 * KiB  # XATTR_LIST_MAX: all names of one entry, NUL-terminated
    xattr_value_bytes: int = 64 * KiB  # XATTR_SIZE_MAX
    snapshots: int = 10_000
    snapshot_name_chars: int = 255
    description_chars: int = 1 * MiB
    command_chars: int = 64 * KiB  # ::restore-through::
    warnings: int = 1_000_000
    warning_chars: int = 64 * KiB  # one warning's message
    text_chars: int = 4096  # host, run id, tier, tool, version ids, timestamps
    object_keys: int = 1000  # keys of header.chunker, trailer.counts, trailer.stats


LIMITS = ManifestLimits()
