"""Many rows into SQLite in few statements.

Python's ``sqlite3`` releases the GIL around every ``sqlite3_step``:
``executemany`` of N rows steps N times, and each time hands the GIL over; with
the upload threads runnable, each hand-over can cost the calling thread a wait
of up to a switch interval to get it back.  :func:`insert_rows` binds a group of
rows to one ``INSERT ... VALUES (?, ...), (?, ...), ...`` statement instead: a
batch of 512 file rows steps twice, not 512 times (and SQLite's own work a row
halves: one statement, one autocommit, a group).

Groups hold :data:`GROUP_ROWS` rows (fewer where a statement's host
parameters, ``SQLITE_LIMIT_VARIABLE_NUMBER``, allow fewer: 999 before SQLite
3.32); the rest of a batch goes in by groups of its binary digits (a remainder
of 13 rows: 8, 4, 1), so at most a handful of statement texts exist a table and
the connection's statement cache keeps them prepared.

Rows go in in their order, a statement's rows one after the other, as
``executemany`` puts them: of two rows with one key ``INSERT OR REPLACE`` keeps
the later and ``INSERT OR IGNORE`` the earlier, inside one statement as across
two.  A statement is atomic: a row that fails leaves none of its group (where
``executemany`` outside a transaction kept the rows before it).
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from typing import Any, Sequence

GROUP_ROWS = 256  # rows bound to one statement at most (a power of two)


@functools.lru_cache(maxsize=256)
def _statement(head: str, width: int, rows: int) -> str:
    one = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES {', '.join([one] * rows)}"


def group_rows(db: sqlite3.Connection, width: int) -> int:
    """Rows of ``width`` columns one statement binds on ``db``: a power of two, at
    most :data:`GROUP_ROWS`, within the connection's limit of host parameters."""
    limit = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    most = max(1, min(GROUP_ROWS, limit // width))
    return 1 << (most.bit_length() - 1)


def insert_rows(db: sqlite3.Connection, head: str, width: int,
                rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` (each of ``width`` values) with ``head`` (``INSERT OR REPLACE
    INTO files``: the statement up to its ``VALUES``), a group a statement."""
    group = group_rows(db, width)
    count, at = len(rows), 0
    while at < count:
        left = count - at
        take = group if left >= group else 1 << (left.bit_length() - 1)
        values = list(itertools.chain.from_iterable(rows[at:at + take]))
        if len(values) != take * width:
            raise ValueError(f"{head}: a row of other than {width} values")
        db.execute(_statement(head, width, take), values)
        at += take
