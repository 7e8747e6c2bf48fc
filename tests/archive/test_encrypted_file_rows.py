"""An encrypting host's file rows: keyed by the HMAC of their directory and of their
path, read a directory at a time, every answer still exact, memory bounded, no path
in clear; rows keyed the way earlier versions did are dropped, not misread."""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import sqlite3
from pathlib import Path

import pytest

from s3archive.archive import local_cache
from s3archive.archive.encryption import FileCipher
from s3archive.archive.local_cache import FileKey, LocalCache
from support.memory_host import MemoryHost

KEY = random.Random(11).randbytes(32)
SECRET_DIR = b"/srv/payroll-confidential"


def digest(n: int) -> str:
    return hashlib.sha256(b"%d" % n).hexdigest()


@pytest.fixture
def cache(tmp_path: Path):
    cache = LocalCache(tmp_path / "cache" / "c.sqlite")
    cache.use_cipher(FileCipher(KEY, "group"))
    yield cache
    cache.close()


def line(n: int) -> bytes:
    return b'{"kind":"file","mode":"0644","uid":%d}' % n


def rows_of(directory: bytes, count: int, first: int = 0):
    return [(directory + b"/f%04d" % n, FileKey(1, first + n, 5, 6, 7), line(first + n),
             [(digest(first + n), 5)]) for n in range(count)]


def ask(cache: LocalCache, path: bytes, ino: int) -> bytes | None:
    hit = cache.get_file(path, FileKey(1, ino, 5, 6, 7))
    return hit.line if hit is not None else None


class Queries:
    """The SELECTs of the ``files`` table the cache makes."""

    def __init__(self, cache: LocalCache):
        self.statements: list[str] = []
        cache.db.set_trace_callback(self.statements.append)

    @property
    def of_files(self) -> int:
        return sum(1 for s in self.statements if s.startswith("SELECT") and "FROM files" in s)


def test_rows_are_read_a_directory_at_a_time_and_every_answer_is_exact(
        cache: LocalCache) -> None:
    rows = rows_of(b"/d", 300) + rows_of(b"/d/sub", 40, first=1000) + rows_of(b"/e", 5, 2000)
    cache.put_files(rows)
    queries = Queries(cache)
    for n in range(300):  # the walk's order, a subdirectory visited midway
        assert ask(cache, b"/d/f%04d" % n, n) == line(n)
        assert ask(cache, b"/d/g%04d" % n, n) is None  # absent
        assert ask(cache, b"/d/f%04d" % n, n + 1) is None, "another inode: not this row"
        if n == 150:
            for m in range(40):
                assert ask(cache, b"/d/sub/f%04d" % m, 1000 + m) == line(1000 + m)
    for n in range(5):
        assert ask(cache, b"/e/f%04d" % n, 2000 + n) == line(2000 + n)
    assert ask(cache, b"/nowhere/f0000", 0) is None
    # one query a directory (the parent's page kept while its subdirectory was walked)
    assert queries.of_files == 3, queries.statements
    # a row written since its page was read is seen; a pending one once committed
    cache.put_files([(b"/d/f0001", FileKey(1, 77, 5, 6, 7), b'{"new":1}', [])])
    assert ask(cache, b"/d/f0001", 77) == b'{"new":1}'
    cache.put_files([(b"/d/f0003", FileKey(1, 78, 5, 6, 7), b'{"new":3}', [])], pending=True)
    assert ask(cache, b"/d/f0003", 78) is None and ask(cache, b"/d/f0003", 3) == line(3)
    cache.commit_pending_files()
    assert ask(cache, b"/d/f0003", 78) == b'{"new":3}'
    cache.forget_files()
    assert ask(cache, b"/d/f0000", 0) is None and ask(cache, b"/d/f0003", 78) is None


def test_a_directory_of_more_rows_than_a_page_is_asked_a_row_at_a_time(
        cache: LocalCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_cache, "_SEALED_PAGE", 16)
    cache.put_files(rows_of(b"/big", 17) + rows_of(b"/small", 16, first=100))
    queries = Queries(cache)
    order = list(range(17))
    random.Random(3).shuffle(order)
    for n in order:
        assert ask(cache, b"/big/f%04d" % n, n) == line(n)
        assert ask(cache, b"/big/g%04d" % n, n) is None
    for n in range(16):
        assert ask(cache, b"/small/f%04d" % n, 100 + n) == line(100 + n)
    # /big: its first page was too large, then one query a name; /small: one page
    assert queries.of_files == 1 + 2 * 17 + 1, queries.statements


def test_the_pages_kept_hold_a_bounded_number_of_rows(
        cache: LocalCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_cache, "_SEALED_KEPT", 50)
    chain = [b"/a", b"/a/b", b"/a/b/c", b"/a/b/c/d"]
    for number, directory in enumerate(chain):
        cache.put_files(rows_of(directory, 20, first=100 * number))
    for number, directory in enumerate(chain):  # down: each ancestor's page is asked first
        assert ask(cache, directory + b"/f0000", 100 * number) == line(100 * number)
        assert sum(len(page.rows) for page in cache._file_pages.values()) <= 50
    for number, directory in reversed(list(enumerate(chain))):  # back up: all still exact
        for n in range(20):
            assert ask(cache, directory + b"/f%04d" % n, 100 * number + n) == \
                line(100 * number + n)
        assert sum(len(page.rows) for page in cache._file_pages.values()) <= 50


def test_the_cache_keeps_no_directory_or_file_name_in_clear(cache: LocalCache) -> None:
    cache.put_files(rows_of(SECRET_DIR, 3) + rows_of(SECRET_DIR + b"/q3-bonus", 2, 10))
    cache.commit()
    cache.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = b"".join(p.read_bytes() for p in cache.path.parent.iterdir())
    for word in (b"payroll", b"confidential", b"q3-bonus", b"f0000", b"srv"):
        assert word not in data, word
    with sqlite3.connect(cache.path) as db:
        stored = {row[0] for row in db.execute("SELECT path FROM dirs")}
        assert stored == {hmac.digest(KEY, b"files-dir\0" + d, "sha256")[:16]
                          for d in (SECRET_DIR, SECRET_DIR + b"/q3-bonus")}
        names = {row[0] for row in db.execute("SELECT name FROM files")}
        assert names == {hmac.digest(KEY, b"name\0" + path, "sha256")[:16]
                         for path, _, _, _ in rows_of(SECRET_DIR, 3)
                         + rows_of(SECRET_DIR + b"/q3-bonus", 2, 10)}


@pytest.mark.parametrize("earlier", ["every row in directory 0", "lines sealed by AEAD"])
def test_rows_keyed_the_earlier_way_are_dropped_and_the_host_uploads_nothing_again(
        tmp_path: Path, earlier: str) -> None:
    """Earlier versions kept every row in directory 0 named by the HMAC of its path,
    under the label of the dedup secret alone, then rows by directory with their lines
    sealed by ChaCha20-Poly1305 ("by-directory"): such rows are dropped (and the
    database compacted), the files read again, but their chunks are still known: no
    data is uploaded again, and the next run finds every file unchanged."""
    host = MemoryHost(tmp_path, encrypted=True)
    for n in range(30):
        (host.tree / ("d%d" % (n % 3))).mkdir(exist_ok=True)
        (host.tree / ("d%d" % (n % 3)) / ("f%d" % n)).write_bytes(os.urandom(200 + n))
    first = host.attempt()
    assert first.exit_code == 0 and first.files == 30
    db_path = next((tmp_path / "cache").glob("*.sqlite"))
    with sqlite3.connect(db_path) as db:  # the cache as the earlier version left it
        if earlier == "every row in directory 0":
            db.execute("UPDATE files SET dir = 0")
            db.execute("DELETE FROM dirs")
            label = host.secret.dedup_id
        else:  # nonce ‖ ChaCha20-Poly1305 of the line under a key of the row's own
            db.execute("UPDATE files SET sealed = randomblob(length(sealed))")
            label = f"{host.secret.dedup_id} by-directory"
        db.execute("UPDATE meta SET value = ? WHERE key = 'file_rows'", (label,))
    again = host.attempt()
    assert again.exit_code == 0, again.warnings
    assert again.files_unchanged == 0 and again.bytes_read == again.bytes_total > 0
    assert again.chunks_new == 0, again
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM files WHERE dir = 0").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM files").fetchone()[0] == 30
        assert db.execute("SELECT value FROM meta WHERE key = 'file_rows'").fetchone()[0] \
            == f"{host.secret.dedup_id} by-directory stream"
    third = host.attempt()
    assert third.files_unchanged == third.files == 30 and third.bytes_read == 0


def test_rows_are_found_by_inode_and_open_only_for_their_own_path(
        cache: LocalCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory's rows are looked up by inode, no name computed; a row opens only
    for the path it was put for: names of one inode (hard links) each get their own
    line, a renamed file or another file given a deleted file's inode is no hit."""
    same = FileKey(1, 42, 5, 6, 7)
    cache.put_files([(b"/h/a", same, b'{"name":"a"}', [(digest(1), 5)]),
                     (b"/h/b", same, b'{"name":"b"}', [(digest(2), 5)]),
                     (b"/h/c", FileKey(1, 43, 5, 6, 7), b'{"name":"c"}', [(digest(3), 5)])])
    names: list[bytes] = []
    cipher = cache._cipher
    assert cipher is not None
    monkeypatch.setattr(cipher, "name", lambda path: names.append(path) or b"")
    for path, line in ((b"/h/a", b'{"name":"a"}'), (b"/h/b", b'{"name":"b"}')):
        hit = cache.get_file(path, same)
        assert hit is not None and hit.line == line
        assert [c.hash for c in hit.chunks] == [digest(1 if path == b"/h/a" else 2)]
    assert cache.get_file(b"/h/c", FileKey(1, 43, 5, 6, 7)).line == b'{"name":"c"}'
    assert cache.get_file(b"/h/d", same) is None, "a third name of the inode, renamed"
    assert cache.get_file(b"/h/e", FileKey(1, 43, 5, 6, 7)) is None, "c's inode, reused"
    assert cache.get_file(b"/h/f", FileKey(1, 44, 5, 6, 7)) is None, "a new file"
    assert cache.get_file(b"/h/a", FileKey(2, 42, 5, 6, 7)) is None, "another device"
    assert names == []
