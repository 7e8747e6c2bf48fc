"""Which runs hold a path: ``find`` (patterns over runs) and ``history`` (one
path's versions across runs, so a user can pick the one before the damage).

Patterns: a pattern without ``/`` matches an entry's **name** (its last
component); a pattern with ``/`` matches the **whole path** (absolute; a
pattern not starting with ``/`` may match at any depth).  ``*`` and ``?``
never cross ``/``, ``**`` crosses any number of components, ``[...]`` is a
character class.  Matching works on bytes, so non-UTF-8 names can be found
(the pattern is taken as UTF-8).

Runs are read one at a time, newest first, so memory holds one run's
metadata at most.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from s3archive.format.model import FILE, HARDLINK, Entry, Manifest
from s3archive.repo.catalog import RunRef


@dataclass(frozen=True)
class Hit:
    run: RunRef
    entry: Entry


@dataclass(frozen=True)
class Version:
    """One run's view of a path: absent (``entry`` None) or present."""

    run: RunRef
    entry: Entry | None
    content: str | None  # a digest of the file's chunk hashes; None when not a file
    changed: bool  # content or kind differs from the older run before it


def compile_pattern(pattern: str) -> Callable[[bytes], bool]:
    """A matcher for one pattern (see the module's doc)."""
    raw = pattern.encode("utf-8", "surrogateescape")
    whole_path = b"/" in raw
    regex = _translate(raw.rstrip(b"/") if raw != b"/" else raw)
    if whole_path:
        anchored = re.compile(rb"(?s:" + (b"" if raw.startswith(b"/") else rb"(?:.*/)?")
                              + regex + rb")\Z")
        return lambda path: anchored.match(path) is not None
    by_name = re.compile(rb"(?s:" + regex + rb")\Z")
    return lambda path: by_name.match(path.rsplit(b"/", 1)[-1]) is not None


def _translate(pattern: bytes) -> bytes:
    out: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i:i + 1]
        if pattern.startswith(b"**", i):
            out.append(rb".*")
            i += 2
        elif c == b"*":
            out.append(rb"[^/]*")
            i += 1
        elif c == b"?":
            out.append(rb"[^/]")
            i += 1
        elif c == b"[":
            end = pattern.find(b"]", i + 2 if pattern[i + 1:i + 2] in (b"!", b"^") else i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = pattern[i + 1:end]
            if body[:1] in (b"!", b"^"):
                body = b"^" + body[1:]
            out.append(b"[" + body.replace(b"\\", b"\\\\") + b"]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return b"".join(out)


Loader = Callable[[RunRef], Manifest | None]  # None: the run cannot be read; skip it


def find(runs: Iterable[RunRef], load: Loader, patterns: list[str]) -> Iterator[Hit]:
    """Every entry of ``runs`` (in the order given) matching any pattern."""
    matchers = [compile_pattern(p) for p in patterns]
    for run in runs:
        manifest = load(run)
        if manifest is None:
            continue
        for entry in manifest.entries:
            if any(m(entry.path) for m in matchers):
                yield Hit(run, entry)


def content_digest(entry: Entry, files: dict[bytes, Entry] | None = None) -> str | None:
    """Identity of a file's bytes without reading them: its chunk hashes, in order."""
    if entry.kind == HARDLINK and files is not None and entry.target in files:
        entry = files[entry.target]
    if entry.kind != FILE:
        return None
    digest = hashlib.sha256(b"%d:" % entry.size)
    for ref in entry.chunks:
        digest.update(ref.hash.encode("ascii"))
    for offset, length in entry.extents or []:
        digest.update(b"|%d+%d" % (offset, length))
    return digest.hexdigest()


def history(runs: Iterable[RunRef], load: Loader, path: bytes) -> list[Version]:
    """``path`` in each of ``runs`` (give them oldest first), with changes marked."""
    versions: list[Version] = []
    previous: tuple[str | None, str | None] | None = None
    for run in runs:
        manifest = load(run)
        if manifest is None:
            continue
        found = next((e for e in manifest.entries if e.path == path), None)
        content = None
        if found is not None and found.kind == HARDLINK:
            group = {e.path: e for e in manifest.entries if e.path == found.target}
            content = content_digest(found, group)
        elif found is not None:
            content = content_digest(found)
        kind = None if found is None else (FILE if found.kind == HARDLINK else found.kind)
        state = (kind, content)
        changed = previous is not None and state != previous
        versions.append(Version(run, found, content, changed))
        previous = state
    return versions
