"""Exceptions of the crypto layer; the CLI edge maps them like every S3ArchiveError."""

from __future__ import annotations

from s3archive.errors import EXIT_USAGE, IntegrityError, S3ArchiveError


class KeyFormatError(S3ArchiveError):
    """A key, recipient or dedup secret given by the operator is not valid."""

    exit_code = EXIT_USAGE


class WrongKeyError(S3ArchiveError):
    """None of the identities held opens this object: it was encrypted to other keys."""


class AgeFormatError(IntegrityError):
    """An age file (a pack's key block) is malformed or fails its MAC."""


class BlobAuthError(IntegrityError):
    """A blob failed authentication: tampered, or not at the place it was written for."""
