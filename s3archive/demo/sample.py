"""The demo's sample data: a small tree with every metadata kind a newcomer
cares about, a SQLite database, the picker and the snapshotter that back
them up, and an exact comparison of two trees."""

from __future__ import annotations

import hashlib
import os
import random
import shlex
import sqlite3
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

XATTR_NAME = "user.s3archive-demo"
ACL_USER = 65534  # "nobody": a named-user ACL entry any owner may set
BLOB_BYTES = 3 * 1024 * 1024 + 12345


@dataclass
class SampleData:
    """What was made, and what this machine would not allow (notes)."""

    tree: Path
    database: Path
    notes: list[str] = field(default_factory=list)
    acl: bool = False
    xattr: bool = False


def make_sample(base: Path) -> SampleData:
    tree = base / "data"
    sample = SampleData(tree=tree, database=base / "app" / "app.sqlite3")
    (tree / "docs").mkdir(parents=True)
    (tree / "bin").mkdir()
    (tree / "private").mkdir(mode=0o700)
    (tree / "empty-dir").mkdir()
    (tree / "docs" / "readme.txt").write_text(
        "s3archive demo data.\nEvery file here is archived, locked and restored.\n")
    (tree / "docs" / "notes.md").write_text("# Notes\n\n- first archive\n")
    (tree / "bin" / "tool.sh").write_text("#!/bin/sh\necho hello from a restored script\n")
    (tree / "bin" / "tool.sh").chmod(0o755)
    (tree / "private" / "secret.txt").write_text("only the owner (and the ACL's user) reads this\n")
    (tree / "private" / "secret.txt").chmod(0o640)
    (tree / "empty").write_bytes(b"")
    # Several chunks of incompressible data, the same on every run of the demo.
    (tree / "blob.bin").write_bytes(random.Random(20240501).randbytes(BLOB_BYTES))
    os.link(tree / "docs" / "readme.txt", tree / "docs" / "readme-hardlink.txt")
    os.symlink("docs/notes.md", tree / "notes-symlink")
    _set_xattr(sample, tree / "docs" / "notes.md")
    _set_acl(sample, tree / "private" / "secret.txt")
    _make_database(sample.database)
    return sample


def _set_xattr(sample: SampleData, path: Path) -> None:
    try:
        os.setxattr(path, XATTR_NAME, b"archived with its extended attributes")
        sample.xattr = True
    except OSError as err:
        sample.notes.append(f"no xattr on the sample ({err.strerror} on this file system): "
                            "the tree is archived without one")


def _set_acl(sample: SampleData, path: Path) -> None:
    try:
        import posix1e

        acl = posix1e.ACL(text=f"u::rw-,u:{ACL_USER}:r--,g::r--,m::r--,o::---")
        acl.applyto(str(path))
        sample.acl = True
    except (ImportError, OSError) as err:
        sample.notes.append(f"no ACL on the sample ({err}): the tree is archived without one")


def _make_database(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL)")
        db.executemany("INSERT INTO orders (customer, total) VALUES (?, ?)",
                       [(f"customer {i}", i * 1.25) for i in range(1, 501)])
    db.close()


def small_change(sample: SampleData) -> list[str]:
    """What a day changes: a line in one file, a new file, a row in the database."""
    with open(sample.tree / "docs" / "notes.md", "a") as handle:
        handle.write("- second archive: only this change is uploaded\n")
    (sample.tree / "docs" / "new-today.txt").write_text("a file created between the runs\n")
    db = sqlite3.connect(sample.database)
    with db:
        db.execute("INSERT INTO orders (customer, total) VALUES ('late customer', 99.5)")
    db.close()
    return ["docs/notes.md: one line appended", "docs/new-today.txt: new file",
            "app.sqlite3: one row inserted"]


def database_dump(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return "\n".join(db.iterdump()) + "\n"
    finally:
        db.close()


# ---------------------------------------------------------------- scripts

def picker_script(tree: Path) -> str:
    return ("#!/bin/sh\n"
            "# Demo picker: the sample tree (a directory means its whole tree).\n"
            f"echo {shlex.quote(str(tree))}\n")


def snapshotter_script(database: Path) -> str:
    """Dumps the database as SQL to the fd given as the only argument.

    The ``::restore-through::`` command loads the dump into the database
    named by $S3ARCHIVE_RESTORE_DB (a new file: a restore never overwrites).
    """
    python = shlex.quote(sys.executable)
    dump = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
            "out = open(int(sys.argv[2]), 'w', closefd=False); "
            "[out.write(line + chr(10)) for line in db.iterdump()]; out.flush()")
    load = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
            "db.executescript(sys.stdin.read()); db.commit()")
    restore = f"{python} -c {shlex.quote(load)} \"$S3ARCHIVE_RESTORE_DB\""
    return ("#!/bin/sh\n"
            "# Demo snapshotter: a consistent SQL dump of a SQLite database.\n"
            "set -eu\n"
            f"{python} -c {shlex.quote(dump)} {shlex.quote(str(database))} \"$1\"\n"
            f"echo 'SQLite database {database} (SQL dump)'\n"
            f"echo {shlex.quote('::restore-through:: ' + restore)}\n")


def install_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


# ---------------------------------------------------------------- comparison

def compare_trees(original: Path, restored: Path) -> tuple[int, list[str]]:
    """Every entry below ``original`` against ``restored``: type, mode, owner,
    size, content, mtime, symlink target, xattrs, ACL and hardlink groups.

    Returns (entries compared, differences); no difference means exact.
    """
    differences: list[str] = []
    seen_original: list[str] = []
    links_a: dict[tuple[int, int], set[str]] = {}
    links_b: dict[tuple[int, int], set[str]] = {}
    seen_original.append(".")
    differences += _compare_entry(".", original, restored, links_a, links_b)
    for directory, dirs, files in os.walk(original):
        dirs.sort()
        for name in sorted(dirs + files):
            path_a = Path(directory) / name
            rel = str(path_a.relative_to(original))
            seen_original.append(rel)
            differences += _compare_entry(rel, path_a, restored / rel, links_a, links_b)
    for directory, dirs, files in os.walk(restored):
        for name in dirs + files:
            rel = str((Path(directory) / name).relative_to(restored))
            if rel not in seen_original:
                differences.append(f"{rel}: only in the restored tree")
    groups_a = sorted(sorted(g) for g in links_a.values() if len(g) > 1)
    groups_b = sorted(sorted(g) for g in links_b.values() if len(g) > 1)
    if groups_a != groups_b:
        differences.append(f"hardlinks differ: original {groups_a}, restored {groups_b}")
    return len(seen_original), differences


def _compare_entry(rel: str, a: Path, b: Path, links_a: dict[tuple[int, int], set[str]],
                   links_b: dict[tuple[int, int], set[str]]) -> list[str]:
    try:
        st_b = os.lstat(b)
    except FileNotFoundError:
        return [f"{rel}: missing from the restored tree"]
    st_a = os.lstat(a)
    problems = []
    checks = [("type", stat.S_IFMT(st_a.st_mode), stat.S_IFMT(st_b.st_mode)),
              ("owner", (st_a.st_uid, st_a.st_gid), (st_b.st_uid, st_b.st_gid))]
    if not stat.S_ISLNK(st_a.st_mode):
        checks += [("mode", oct(stat.S_IMODE(st_a.st_mode)), oct(stat.S_IMODE(st_b.st_mode))),
                   ("mtime_ns", st_a.st_mtime_ns, st_b.st_mtime_ns),
                   ("xattrs", _xattrs(a), _xattrs(b)), ("acl", _acl(a), _acl(b))]
    if stat.S_ISREG(st_a.st_mode):
        checks += [("size", st_a.st_size, st_b.st_size), ("sha256", _sha256(a), _sha256(b))]
        links_a.setdefault((st_a.st_dev, st_a.st_ino), set()).add(rel)
        links_b.setdefault((st_b.st_dev, st_b.st_ino), set()).add(rel)
    if stat.S_ISLNK(st_a.st_mode):
        checks.append(("symlink target", os.readlink(a), os.readlink(b)))
    for what, value_a, value_b in checks:
        if value_a != value_b:
            problems.append(f"{rel}: {what} differs: original {value_a!r}, restored {value_b!r}")
    return problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in sorted(names)
            if not n.startswith("system.posix_acl")}


def _acl(path: Path) -> str:
    try:
        import posix1e

        return str(posix1e.ACL(file=str(path)).to_any_text(options=posix1e.TEXT_NUMERIC_IDS))
    except (ImportError, OSError) as err:
        return f"unreadable: {err}"
