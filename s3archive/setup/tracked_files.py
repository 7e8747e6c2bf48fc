"""Write files without ever clobbering an operator's edit.

Every file written is recorded (path -> SHA-256) in a record beside the
configuration.  On a later run a file is replaced only when it is missing,
already identical, or still exactly what s3archive wrote last time; anything
else is a conflict that ``--force`` alone overrides.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from s3archive.errors import UsageError


@dataclass(frozen=True)
class PlannedFile:
    target: Path  # absolute path on the configured host (below --root when given)
    content: bytes
    mode: int
    keep_mode: bool = False  # scripts: keep the operator's chmod +x on upgrade

    def __repr__(self) -> str:  # content may be a secret
        return f"PlannedFile(target={str(self.target)!r}, mode={oct(self.mode)})"


@dataclass(frozen=True)
class WriteOutcome:
    target: Path
    action: str  # "created" | "updated" | "unchanged" | "overwritten"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class TrackedWriter:
    def __init__(self, root: Path, record: Path):
        self.root = root
        self.record_path = record
        self.record: dict[str, str] = self._load_record()

    def host_path(self, target: Path) -> Path:
        """Where ``target`` lives on this machine (below the root)."""
        return self.root / target.relative_to("/")

    def conflicts(self, files: list[PlannedFile]) -> list[Path]:
        found = []
        for planned in files:
            path = self.host_path(planned.target)
            if not path.exists() and not path.is_symlink():
                continue
            if path.is_symlink() or not path.is_file():
                found.append(planned.target)
                continue
            current = sha256(path.read_bytes())
            if current != sha256(planned.content) and self.record.get(str(planned.target)) != current:
                found.append(planned.target)
        return found

    def check(self, files: list[PlannedFile], force: bool) -> None:
        conflicts = self.conflicts(files)
        if conflicts and not force:
            names = ", ".join(str(self.host_path(p)) for p in conflicts)
            raise UsageError(f"changed since s3archive wrote them (or not written by it), "
                             f"left alone: {names}; use --force to overwrite")

    def write(self, files: list[PlannedFile]) -> list[WriteOutcome]:
        conflicts = set(self.conflicts(files))
        outcomes = []
        for planned in files:
            path = self.host_path(planned.target)
            existed = path.exists() or path.is_symlink()
            if existed and path.is_file() and not path.is_symlink() \
                    and path.read_bytes() == planned.content:
                action = "unchanged"
            else:
                mode = planned.mode
                if existed and planned.keep_mode and path.is_file() and not path.is_symlink():
                    mode = path.stat().st_mode & 0o7777
                write_file(path, planned.content, mode)
                action = ("overwritten" if planned.target in conflicts
                          else "updated" if existed else "created")
            self.record[str(planned.target)] = sha256(planned.content)
            outcomes.append(WriteOutcome(planned.target, action))
        self._save_record()
        return outcomes

    def _load_record(self) -> dict[str, str]:
        try:
            data = json.loads(self.record_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise UsageError(f"{self.record_path}: unreadable record of written files: {err}") from None
        files = data.get("files", {}) if isinstance(data, dict) else {}
        return {str(k): str(v) for k, v in files.items()}

    def _save_record(self) -> None:
        text = json.dumps({"format": 1, "files": self.record}, indent=1, sort_keys=True) + "\n"
        write_file(self.record_path, text.encode(), 0o644)


def write_file(path: Path, content: bytes, mode: int, *, exclusive: bool = False) -> None:
    """Write ``path`` never through a symlink, the file 0600 before any byte
    (a secret) is in it and ``mode`` after, fsynced.  By default a temporary
    file is renamed over the target; ``exclusive`` creates the target itself
    and fails (``FileExistsError``) if anything is at its name already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path if exclusive else path.with_name(f".{path.name}.s3archive-tmp")
    if not exclusive:
        try:
            os.unlink(target)
        except FileNotFoundError:
            pass
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(target)
        raise
    if not exclusive:
        os.replace(target, path)
