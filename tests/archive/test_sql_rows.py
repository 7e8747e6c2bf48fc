"""Many rows a statement (archive/sql_rows.py): the same table as ``executemany``
leaves, duplicate keys included, in few statements, within SQLite's parameter limit."""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest

from s3archive.archive.sql_rows import GROUP_ROWS, group_rows, insert_rows


def _db(limit: int | None = None) -> tuple[sqlite3.Connection, list[str]]:
    db = sqlite3.connect(":memory:", isolation_level=None)
    if limit is not None:
        db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, a TEXT NOT NULL, b BLOB)")
    db.execute("CREATE TABLE log (k INTEGER NOT NULL, a TEXT NOT NULL, b BLOB)")  # no key
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    return db, statements


def _rows(count: int, seed: int) -> list[tuple[Any, ...]]:
    """Rows whose keys repeat, inside one group as across groups: the first rows'
    keys come again near the end, and neighbours share keys."""
    rng = random.Random(seed)
    keys = [rng.randrange(max(1, count // 3)) for _ in range(count)]
    return [(k, f"row {i}", rng.randbytes(3) if i % 2 else None) for i, k in enumerate(keys)]


@pytest.mark.parametrize("count", [0, 1, 2, GROUP_ROWS - 1, GROUP_ROWS, GROUP_ROWS + 1,
                                   2 * GROUP_ROWS + 13])
@pytest.mark.parametrize("verb", ["INSERT OR REPLACE", "INSERT OR IGNORE"])
def test_a_table_ends_as_executemany_leaves_it(count: int, verb: str) -> None:
    rows = _rows(count, seed=count)
    expected, _ = _db()
    expected.executemany(f"{verb} INTO t VALUES (?, ?, ?)", rows)
    expected.executemany("INSERT INTO log VALUES (?, ?, ?)", rows)
    db, statements = _db()
    insert_rows(db, f"{verb} INTO t", 3, rows)
    insert_rows(db, "INSERT INTO log", 3, rows)
    inserts = len(statements)
    for table in ("t", "log"):  # (log: every row, in the order put)
        assert db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() == \
            expected.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    if count > 1:  # duplicates were there to resolve
        assert len({row[0] for row in rows}) < count
    # a group a statement; a remainder by its binary digits
    per_table = count // GROUP_ROWS + bin(count % GROUP_ROWS).count("1")
    assert inserts == 2 * per_table


def test_of_one_key_in_one_statement_replace_keeps_the_later_ignore_the_earlier() -> None:
    rows = [(7, "first", None), (8, "other", None), (7, "second", b"x")]
    for verb, kept in (("INSERT OR REPLACE", "second"), ("INSERT OR IGNORE", "first")):
        db, statements = _db()
        insert_rows(db, f"{verb} INTO t", 3, rows)
        assert len(statements) == 2  # 2 rows, then 1
        assert db.execute("SELECT a FROM t WHERE k = 7").fetchone() == (kept,)
        assert db.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_groups_stay_within_the_parameter_limit() -> None:
    """An SQLite built with the old limit (999 host parameters) gets smaller groups."""
    db, statements = _db(limit=999)
    assert group_rows(db, 10) == 64 and group_rows(db, 3) == GROUP_ROWS
    assert group_rows(db, 5000) == 1, "wider than the limit: a row a statement"
    db.execute("CREATE TABLE wide (" + ", ".join(f"c{i}" for i in range(10)) + ")")
    statements.clear()
    rows = [tuple(range(i, i + 10)) for i in range(200)]
    insert_rows(db, "INSERT INTO wide", 10, rows)
    assert len(statements) == 4  # 64 + 64 + 64 + 8
    assert db.execute("SELECT * FROM wide ORDER BY rowid").fetchall() == rows


def test_a_row_of_the_wrong_width_is_refused_before_it_is_bound() -> None:
    db, _ = _db()
    with pytest.raises(ValueError, match="other than 3 values"):
        insert_rows(db, "INSERT INTO t", 3, [(1, "a", None), (2, "b")])
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
