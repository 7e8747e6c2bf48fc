"""Domain exceptions and the exit codes they map to.

Everything the tool raises on purpose derives from :class:`S3ArchiveError`;
the CLI edge (``s3archive.cli.main``) is the only place that turns them into
a one-line message and an exit code.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed; for archive: no manifest was written
EXIT_USAGE = 2  # bad command line or configuration
EXIT_PARTIAL = 3  # manifest written, but some sources failed (warnings)


class S3ArchiveError(Exception):
    """Base of all expected failures; ``str(err)`` is the message for users.

    The class carries its exit code; one raise may override it
    (``CommandFailed("...", exit_code=4)``).
    """

    exit_code = EXIT_FAILED
    level = "error"  # how the CLI edge labels the line: ``s3archive: error: ...``

    def __init__(self, message: str = "", *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class CommandFailed(S3ArchiveError):
    """The command ran to its end and its result is a failure: problems found,
    entries not restored, a restore command that failed.  The details were
    printed already; the message sums them up in one line."""


class RunWithWarnings(S3ArchiveError):
    """The manifest was written, but some sources failed: reported as a warning."""

    exit_code = EXIT_PARTIAL
    level = "warning"


class ConfigError(S3ArchiveError):
    """The configuration file or a command-line value is invalid."""

    exit_code = EXIT_USAGE


class UsageError(S3ArchiveError):
    exit_code = EXIT_USAGE


class StoreError(S3ArchiveError):
    """An S3 request failed for good (after retries)."""


class BucketNotFound(StoreError):
    """The configured bucket does not exist (or is not visible to these credentials)."""

    exit_code = EXIT_USAGE

    @classmethod
    def named(cls, bucket: str) -> "BucketNotFound":
        return cls(f'bucket "{bucket}" does not exist (NoSuchBucket)')


class NoSuchVersion(StoreError):
    """The object version does not exist (deleted, or never written)."""


class TransportError(StoreError):
    """A request did not complete after retries (reset, short body, time-out, 5xx).

    Says nothing about the stored data: not a damaged chunk, not a missing version.
    """


class BucketNotLocked(S3ArchiveError):
    """The bucket has no Object Lock and the configuration does not allow that."""

    exit_code = EXIT_USAGE


class NothingToArchive(S3ArchiveError):
    """Every source failed: a run would commit an empty, locked manifest."""


class ManifestError(S3ArchiveError):
    """A manifest from the bucket is malformed or hostile."""


class RunLocked(S3ArchiveError):
    """Another archive run holds the lock of this configuration."""


class RunNotFound(S3ArchiveError):
    pass


class IntegrityError(S3ArchiveError):
    """Data read back does not match its recorded hash."""
