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

import fnmatch
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from s3archive.errors import UsageError
from s3archive.format.model import FILE, HARDLINK, SYMLINK, Entry, Manifest
from s3archive.repo.catalog import RunRef


@dataclass(frozen=True, slots=True)
class Hit:
    """One matching entry: what the listing shows, not the whole entry (a broad
    pattern over many runs must not keep every run's chunk lists)."""

    run: RunRef
    path: bytes
    kind: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Version:
    """One run's view of a path: absent (``entry`` None) or present."""

    run: RunRef
    entry: Entry | None
    content: str | None  # a digest of the file's chunk hashes; None when not a file
    changed: bool  # content or kind differs from the older run before it


def compile_pattern(pattern: str) -> Callable[[bytes], bool]:
    """A matcher for one pattern (see the module's doc).

    Paths are matched as text (``os.fsdecode``: a byte that is not UTF-8
    stands for itself), so ``?`` is one character, not one byte.  Whole-path
    patterns are matched component by component (``**`` alone is zero or
    more components); each component, and a name pattern, by ``fnmatch``'s
    translation, which does not backtrack without bound.
    """
    if "/" not in pattern:
        name = _component(pattern)
        return lambda path: name(os.fsdecode(path.rsplit(b"/", 1)[-1]))
    parts = [p for p in pattern.split("/") if p]
    if not pattern.startswith("/"):
        parts = ["**"] + parts  # a relative pattern matches at any depth
    if any("**" in p and p.strip("*") for p in parts):
        return _crossing(pattern)  # e.g. /etc/**.conf: ** inside a component crosses '/'
    matchers: list[Callable[[str], bool] | None] = [
        None if p.strip("*") == "" and "**" in p else _component(p) for p in parts]

    def match(path: bytes) -> bool:
        names = [n for n in os.fsdecode(path).split("/") if n]
        return _match_components(matchers, names)
    return match


def _component(pattern: str) -> Callable[[str], bool]:
    try:
        regex = re.compile(fnmatch.translate(pattern), re.S)
    except re.error as err:
        raise UsageError(f"pattern {pattern!r}: {err}") from None
    return lambda name: regex.match(name) is not None


def _match_components(matchers: list[Callable[[str], bool] | None], names: list[str]) -> bool:
    """``None`` stands for ``**`` (zero or more names); O(patterns x names)."""
    # reachable[j]: the pattern parts so far can consume exactly names[:j]
    reachable = [True] + [False] * len(names)
    for matcher in matchers:
        if matcher is None:
            for j in range(1, len(names) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            reachable = [False] + [reachable[j - 1] and matcher(names[j - 1])
                                   for j in range(1, len(names) + 1)]
    return reachable[len(names)]


def _crossing(pattern: str) -> Callable[[bytes], bool]:
    """The rare pattern with ``**`` inside a component: one regex, stars merged."""
    body = pattern.rstrip("/")
    out = []
    i = 0
    while i < len(body):
        if body.startswith("**", i):
            while body.startswith("*", i):
                i += 1
            out.append(".*")
        elif body[i] == "*":
            out.append("[^/]*")
            i += 1
        elif body[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(body[i]))
            i += 1
    lead = "" if pattern.startswith("/") else "(?:.*/)?"
    regex = re.compile("(?s:" + lead + "".join(out) + r")\Z")
    if sum(part == ".*" for part in out) > 2:
        raise UsageError(f"pattern {pattern!r}: at most two '**' inside a path component")
    return lambda path: regex.match(os.fsdecode(path)) is not None


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
                yield Hit(run, entry.path, entry.kind, entry.size, entry.mtime_ns)


def content_digest(entry: Entry, files: dict[bytes, Entry] | None = None) -> str | None:
    """Identity of a file's bytes without reading them: its chunk hashes, in order."""
    if entry.kind == HARDLINK and files is not None and entry.target in files:
        entry = files[entry.target]
    if entry.kind == SYMLINK:  # a symlink's content is its target
        return hashlib.sha256(b"symlink:" + (entry.target or b"")).hexdigest()
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
