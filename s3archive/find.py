"""Which runs hold a path: ``find`` (patterns over runs) and ``history`` (one
path's versions across runs, so a user can pick the one before the damage).

Patterns: a pattern without ``/`` matches an entry's **name** (its last
component); a pattern with ``/`` matches the **whole path** (absolute; a
pattern not starting with ``/`` may match at any depth).  ``*`` and ``?``
never cross ``/``, ``**`` crosses any number of components, ``[...]`` is a
character class.  Matching works on bytes, so non-UTF-8 names can be found
(the pattern is taken as UTF-8).

Format-2 runs are read by their trees, never whole: ``find`` searches run
after run, remembering what it found under each tree node's id, so a node
an earlier run shares (an unchanged directory, or leaf of a large one) is
neither read nor decoded again; it skips directories below which no pattern
can match, reads nodes as names and kinds, and decodes only matching
entries whole.  ``history`` looks the path up run by run, reusing an earlier
run's answer where a directory on the way is the same node.  Memory holds
the nodes along one path, a bounded memo (repo/run_set.py) and the matches;
a format-1 run is read whole, one at a time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from s3archive.errors import ManifestError, UsageError
from s3archive.format.limits import LIMITS
from s3archive.format.model import FILE, HARDLINK, SYMLINK, Entry, Manifest
from s3archive.repo.catalog import RunRef
from s3archive.repo.run_set import PathLookup, TreeSearch, expand
from s3archive.repo.run_tree import PackCache, RunTree


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


@dataclass(frozen=True)
class Pattern:
    """One pattern, compiled: a matcher for whole paths, and the components a
    tree walk steps through (``None`` for ``**``) to know where it may prune."""

    text: str
    whole: Callable[[bytes], bool]
    steps: tuple[Callable[[str], bool] | None, ...]
    literals: tuple[str | None, ...]  # a component without wildcards, else None
    name: Callable[[str], bool] | None = None  # a name pattern: its matcher
    by_steps: bool = False  # the steps decide a match (else ``whole`` or ``name`` does)

    def __call__(self, path: bytes) -> bool:
        return self.whole(path)

    @property
    def needs_path(self) -> bool:
        """Whether a match needs the whole path (else the state and the name decide)."""
        return self.name is None and not self.by_steps

    def start(self) -> int:
        """The state at ``/``: a bit per step position reached."""
        return self._closure(1)

    def step(self, state: int, name: str) -> int:
        moved = 0
        for j, matcher in enumerate(self.steps):
            if state >> j & 1:
                if matcher is None:
                    moved |= 1 << j  # '**' takes this name and may take more
                elif matcher(name):
                    moved |= 1 << (j + 1)
        return self._closure(moved)

    def live(self, state: int) -> bool:
        """Something below a directory in this state may match."""
        return state & ((1 << len(self.steps)) - 1) != 0

    def accepts(self, state: int, path: bytes, name: str) -> bool:
        """``path`` (named ``name``, in a directory in ``state``) matches."""
        if self.name is not None:
            return self.name(name)
        if self.by_steps:
            return self.step(state, name) >> len(self.steps) & 1 == 1
        return self.whole(path)

    def wanted(self, state: int) -> set[str] | None:
        """The only names a directory in ``state`` can continue with, or None."""
        names: set[str] = set()
        for j, literal in enumerate(self.literals):
            if state >> j & 1:
                if literal is None:
                    return None
                names.add(literal)
        return names

    def _closure(self, state: int) -> int:
        for j, matcher in enumerate(self.steps):
            if matcher is None and state >> j & 1:
                state |= 1 << (j + 1)  # '**' may also take no name
        return state


_WILDCARDS = frozenset("*?[")


def compile_pattern(pattern: str) -> Pattern:
    """A matcher for one pattern (see the module's doc).

    Paths are matched as text (``os.fsdecode``: a byte that is not UTF-8
    stands for itself), so ``?`` is one character, not one byte.  Whole-path
    patterns are matched component by component (``**`` alone is zero or
    more components); each component, and a name pattern, by ``fnmatch``'s
    translation, which does not backtrack without bound.
    """
    if "/" not in pattern:
        name = _component(pattern)
        return Pattern(pattern, lambda path: name(os.fsdecode(path.rsplit(b"/", 1)[-1])),
                       (None,), (None,), name=name)
    parts = [p for p in pattern.split("/") if p]
    if not pattern.startswith("/"):
        parts = ["**"] + parts  # a relative pattern matches at any depth
    if any("**" in p and p.strip("*") for p in parts):
        # e.g. /etc/**.conf: ** inside a component crosses '/'; a walk descends
        # along the components before the first wildcard, then everywhere
        lead: list[str] = []
        for part in parts:
            if _WILDCARDS & set(part):
                break
            lead.append(part)
        return Pattern(pattern, _crossing(pattern),
                       tuple([_component(p) for p in lead] + [None]),
                       tuple([*lead, None]))
    steps = tuple(None if p.strip("*") == "" and "**" in p else _component(p) for p in parts)
    literals = tuple(None if _WILDCARDS & set(p) else p for p in parts)
    matchers = list(steps)

    def match(path: bytes) -> bool:
        names = [n for n in os.fsdecode(path).split("/") if n]
        return _match_components(matchers, names)
    return Pattern(pattern, match, steps, literals, by_steps=True)


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


State = tuple[int, ...]  # per pattern, the step positions reached (0: cannot match below)


class Search:
    """Several patterns as a ``Matcher`` of a tree search (repo/run_set.py): a
    directory is entered only when some pattern can match below it, and only
    the names a pattern spells out are looked up when every live pattern spells
    out the next name (``/etc/ssh/*``: ``etc``, then ``ssh``, then all)."""

    def __init__(self, patterns: list[Pattern]):
        self.patterns = patterns
        self.by_path = any(p.needs_path for p in patterns)
        self._names = ([p.name for p in patterns if p.name is not None]
                       if all(p.name is not None for p in patterns) else None)

    def start(self) -> State:
        return tuple(p.start() for p in self.patterns)

    def child(self, state: State, name: bytes, text: str) -> State | None:
        inner = tuple(p.step(s, text) if s else 0 for p, s in zip(self.patterns, state))
        live = tuple(s if p.live(s) else 0 for p, s in zip(self.patterns, inner))
        return live if any(live) else None

    def names(self, state: State) -> set[bytes] | None:
        wanted: set[bytes] = set()
        for pattern, s in zip(self.patterns, state):
            if s:
                names = pattern.wanted(s)
                if names is None:
                    return None
                wanted |= {os.fsencode(n) for n in names}
        return wanted

    def matches(self, state: State, parent: bytes, name: bytes, text: str) -> bool:
        """Entry ``name`` (``text``: as text) of directory ``parent`` (in ``state``) matches."""
        if self._names is not None:  # name patterns only: the usual search
            for match in self._names:
                if match(text):
                    return True
            return False
        for pattern, s in zip(self.patterns, state):
            if s and pattern.accepts(s, _join(parent, name) if pattern.needs_path else b"",
                                     text):
                return True
        return False

    def matches_root(self) -> bool:
        return any(p(b"/") for p in self.patterns)


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + name if parent == b"/" else parent + b"/" + name


# A run opened (raises ManifestError when it cannot be): a format-2 run as its
# tree, whose metadata packs are read whole when the flag is set (a walk of
# most of the run), else node by node; a format-1 run whole.
Opener = Callable[[RunRef, bool], "RunTree | Manifest"]
Skip = Callable[[RunRef, str], None]  # a run that cannot be read: reported, the rest go on


SHARED_PACKS = 4096  # whole metadata packs kept for all the runs of a search: at most
SHARED_PACK_BYTES = 256 << 20  # this many bytes of them
PREFETCH_BYTES = 1 << 20  # runs this small are opened ahead, in parallel (root objects)
PREFETCH_WORKERS = 8


def _opened(runs: list[RunRef], open_run: Opener, whole_first: bool
            ) -> Iterator[tuple[int, RunRef, RunTree | Manifest | ManifestError]]:
    """Each run opened, in order.  Format-2 root objects (small) are fetched in
    parallel with their run records; a format-1 manifest (read whole) only
    when its turn comes, so one is held at a time.  ``whole_first``: the
    first run reads its metadata packs whole."""
    def one(number: int, ahead: bool) -> RunTree | Manifest | ManifestError | None:
        try:
            opened = open_run(runs[number], whole_first and number == 0)
            if isinstance(opened, RunTree):
                opened.top()  # the run record: read here, in parallel
            elif ahead:
                return None  # format 1: not kept, read again in its turn
            return opened
        except ManifestError as err:
            return err

    small = [n for n, run in enumerate(runs) if run.size <= PREFETCH_BYTES]
    with ThreadPoolExecutor(max_workers=PREFETCH_WORKERS) as pool:
        early = dict(zip(small, pool.map(lambda n: one(n, True), small)))
    for number, run in enumerate(runs):
        opened = early.pop(number, None)
        if opened is None:
            opened = one(number, False)
        assert opened is not None
        yield number, run, opened


def find(runs: list[RunRef], open_run: Opener, patterns: list[str], skip: Skip
         ) -> list[Hit]:
    """Every entry of ``runs`` matching any pattern: run by run in the order
    given, each run's entries in path order.

    Format-2 runs are searched one after the other by one ``TreeSearch``
    (repo/run_set.py): a node an earlier run shares was searched already and
    is not read again, directories below which no pattern can match are not
    read, and only a matching entry is decoded whole.  A walk of everything
    reads whole metadata packs, kept for all the runs.  A format-1 run is
    read whole, one at a time.
    """
    search = Search([compile_pattern(p) for p in patterns])
    broad = search.names(search.start()) is None
    packs = PackCache(kept=SHARED_PACKS, bytes_kept=SHARED_PACK_BYTES, once=True)
    searcher: TreeSearch[State] = TreeSearch(search)
    hits: list[Hit] = []
    for _, run, opened in _opened(runs, open_run, broad):
        try:
            if isinstance(opened, ManifestError):
                raise opened
            if isinstance(opened, RunTree):
                if broad:
                    opened.blobs.share_packs(packs)
                hits += _tree_hits(run, opened, search, searcher)
            else:
                hits += [Hit(run, e.path, e.kind, e.size, e.mtime_ns) for e in opened.entries
                         if any(p(e.path) for p in search.patterns)]
        except ManifestError as err:
            skip(run, str(err))
    return hits


def _tree_hits(run: RunRef, tree: RunTree, search: Search, searcher: TreeSearch[State]
               ) -> list[Hit]:
    root, below = searcher.search(tree, search.start())
    hits = []
    if root is not None and search.matches_root():
        hits.append(Hit(run, root.path, root.kind, root.size, root.mtime_ns))
    if below is not None:
        for path, found in expand(below, b"/"):
            if len(path) > LIMITS.path_bytes:  # a subtree shared at a deeper place
                raise ManifestError(f"{tree.where}: a path longer than {LIMITS.path_bytes} "
                                    "bytes")
            hits.append(Hit(run, path, found.kind, found.size, found.mtime_ns))
    return hits


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


def history(runs: Iterable[RunRef], open_run: Opener, path: bytes, skip: Skip
            ) -> list[Version]:
    """``path`` in each of ``runs`` (give them oldest first), with changes marked.

    In a format-2 run the path is looked up (one node per level), and a run
    that holds the same directory node as an earlier one at some level on
    the way reuses that answer without reading (repo/run_set.py).  A
    format-1 run is read whole.
    """
    lookup = PathLookup(path)
    targets: dict[bytes, PathLookup] = {}  # the files hardlinks name, looked up alike
    versions: list[Version] = []
    previous: tuple[str | None, str | None] | None = None
    for _, run, opened in _opened(list(runs), open_run, False):
        try:
            if isinstance(opened, ManifestError):
                raise opened
            if isinstance(opened, RunTree):
                found = lookup.entry(opened)
                group: dict[bytes, Entry] = {}
                if found is not None and found.kind == HARDLINK and found.target is not None:
                    target = targets.setdefault(found.target, PathLookup(found.target))
                    named = target.entry(opened)
                    if named is not None:
                        group[found.target] = named
            else:
                found = next((e for e in opened.entries if e.path == path), None)
                group = {e.path: e for e in opened.entries
                         if found is not None and e.path == found.target}
        except ManifestError as err:
            skip(run, str(err))
            continue
        content = None
        if found is not None and found.kind == HARDLINK:
            content = content_digest(found, group)
        elif found is not None:
            content = content_digest(found)
        kind = None if found is None else (FILE if found.kind == HARDLINK else found.kind)
        state = (kind, content)
        changed = previous is not None and state != previous
        versions.append(Version(run, found, content, changed))
        previous = state
    return versions
