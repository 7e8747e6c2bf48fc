"""The one mapping from an exception to the line a user reads and the exit code.

Domain errors (:class:`~s3archive.errors.S3ArchiveError`) carry both.
Foreign errors are translated here and nowhere else: botocore's (a missing
profile is a configuration error, exit 2; anything else from S3 names the
request) and the operating system's (the path and the reason).
``cli.main`` prints the result; ``archive`` also records it in the state file.
"""

from __future__ import annotations

from dataclasses import dataclass

from s3archive.errors import EXIT_FAILED, EXIT_USAGE, S3ArchiveError

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


@dataclass(frozen=True)
class Failure:
    message: str
    exit_code: int
    level: str = "error"  # "warning" for an outcome that is not an error (exit 3)


def foreign_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of other libraries that are expected at the edge."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError, OSError)


def describe_failure(err: BaseException) -> Failure:
    if isinstance(err, S3ArchiveError):
        return Failure(str(err), err.exit_code, err.level)
    if isinstance(err, KeyboardInterrupt):
        return Failure("interrupted", EXIT_INTERRUPTED)
    from botocore.exceptions import ProfileNotFound

    if isinstance(err, ProfileNotFound):
        profile = err.kwargs.get("profile", "?")
        return Failure(f'AWS profile "{profile}" is not in ~/.aws/config or '
                       "~/.aws/credentials (s3.profile; ProfileNotFound)", EXIT_USAGE)
    if isinstance(err, PermissionError):
        where = f"{err.filename}: " if err.filename else ""
        return Failure(f"{where}permission denied (run as root, or configure paths this user "
                       "may use)", EXIT_FAILED)
    from s3archive.store.errors import describe_error

    return Failure(describe_error(err), EXIT_FAILED)
