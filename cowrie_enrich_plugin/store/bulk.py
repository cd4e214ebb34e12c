"""Bulk writes as multi-row ``INSERT ... VALUES (...), (...) ... ON CONFLICT`` statements.

A chunk of rows goes to the database as one statement, not as one execution per
row (``executemany``). Both drivers release Python's interpreter lock around each
execution step; with ``executemany`` that is once per row, and while another
thread of the process is busy (the flusher parses an answer while the store
thread writes), each of those releases can hand the lock over and wait for it back
for up to the interpreter's switch interval. Measured with plain ``sqlite3``,
500-row upserts of the record table: 12 µs per row alone and 480 µs per row beside
one busy thread with ``executemany``; 9 and 12 µs as one statement per chunk.

A column that is ``NULL`` in every row of a chunk is written as the literal ``NULL``,
not bound once per row: Python's ``sqlite3`` before 3.12 binds ``None`` through its
adapter lookup, which raises and clears an exception per value (about 1 µs each, 10
times an integer's). Without MaxMind or a feed listing them, a record row has about
ten such columns.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any, Final

from sqlalchemy.engine import Connection, Dialect

__all__ = ["BulkInsert", "parameter_limit"]

_NAMED: Final = re.compile(r"%\((\w+)\)s")
#: Statements kept per bulk insert, by row count and columns written ``NULL``.
_KEPT_STATEMENTS: Final = 64
#: The most rows one statement writes. The driver prepares and keeps each distinct
#: statement (Python's ``sqlite3`` keeps 128), and a prepared upsert of 1,500 rows
#: holds megabytes: when four batches were saved at once as statements of up to the
#: parameter limit, the worker's peak memory in the simulated day grew from 241 to
#: about 300 MB. Rows per statement beyond a few hundred no longer save time.
_MOST_ROWS: Final = 500


def parameter_limit(dialect: str) -> int:
    """The most bound parameters one statement may carry on this backend."""
    if dialect == "sqlite":  # SQLITE_MAX_VARIABLE_NUMBER: 999 before SQLite 3.32
        return 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
    return 65_535  # PostgreSQL's wire protocol


def _closing(text: str) -> int:
    """The index of the ``)`` closing a group whose ``(`` came just before ``text``."""
    depth = 1
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
    raise AssertionError(f"unbalanced VALUES group: {text}")


def _slots(inner: str) -> list[str]:
    """A VALUES group's expressions (its text between the parentheses), one per value."""
    slots, depth, begin = [], 0, 0
    for index, char in enumerate(inner):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            slots.append(inner[begin:index].strip())
            begin = index + 1
    return [*slots, inner[begin:].strip()]


@dataclass(frozen=True)
class BulkInsert:
    """A single-row ``INSERT`` compiled once, run over many rows as multi-row statements.

    Each row is a tuple of values in :attr:`columns` order. Rows with the same
    :attr:`key` value are merged, the last one winning, as running them one after
    another would (one statement may not upsert a row twice on PostgreSQL).
    """

    head: str
    #: each bound value's expression in the VALUES group, in bound order
    slots: tuple[str, ...]
    #: the placeholder in each slot (``?`` or ``%s``), replaced by ``NULL`` for a null column
    placeholder: str
    tail: str
    columns: tuple[str, ...]
    #: for each bound value of a row, its index in the caller's tuple (None: the same order)
    order: tuple[int, ...] | None
    key: int
    max_rows: int
    _sql: dict[tuple[int, tuple[int, ...]], str] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def compile(
        cls, stmt: Any, columns: Sequence[str], dialect: Dialect, key: str = "ip"
    ) -> BulkInsert:
        """Compile ``stmt`` (an ``INSERT`` of ``columns``, no other parameter) for ``dialect``.

        :raises AssertionError: when the statement binds anything but the columns once.
        """
        compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
        head, found, rest = str(compiled).partition(" VALUES (")
        if not found:
            raise AssertionError(f"not an INSERT ... VALUES statement: {compiled}")
        end = _closing(rest)
        inner, tail = rest[:end], rest[end + 1 :]
        if compiled.positional:
            names = tuple(compiled.positiontup or ())
            placeholder = "?"
            if inner.count("?") != len(names) or "?" in head + tail:
                raise AssertionError(f"parameters outside the VALUES group: {compiled}")
        else:
            names = tuple(_NAMED.findall(inner))
            if _NAMED.search(head + tail):
                raise AssertionError(f"parameters outside the VALUES group: {compiled}")
            placeholder = "%s"
            inner = _NAMED.sub("%s", inner)  # positional: one name per row would not do
        wanted = tuple(columns)
        if sorted(names) != sorted(wanted):
            raise AssertionError(f"a bulk statement binds {names}, not the columns {wanted}")
        slots = _slots(inner)
        if len(slots) != len(names) or any(slot.count(placeholder) != 1 for slot in slots):
            raise AssertionError(f"not one parameter per value: {compiled}")
        order = None if names == wanted else tuple(wanted.index(name) for name in names)
        return cls(
            head=f"{head} VALUES ",
            slots=tuple(slots),
            placeholder=placeholder,
            tail=tail,
            columns=wanted,
            order=order,
            key=wanted.index(key),
            max_rows=max(1, min(_MOST_ROWS, parameter_limit(dialect.name) // len(wanted))),
        )

    def sql(self, rows: int, nulls: tuple[int, ...] = ()) -> str:
        """The statement for ``rows`` rows, the bound values at ``nulls`` written ``NULL``."""
        text = self._sql.get((rows, nulls))
        if text is None:
            if len(self._sql) >= _KEPT_STATEMENTS:
                self._sql.clear()
            null, placeholder = "NULL", self.placeholder
            group = ", ".join(
                slot.replace(placeholder, null) if number in nulls else slot
                for number, slot in enumerate(self.slots)
            )
            text = self.head + ", ".join([f"({group})"] * rows) + self.tail
            self._sql[(rows, nulls)] = text
        return text

    def run(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Write ``rows`` in statements of at most :attr:`max_rows` rows."""
        key = self.key
        unique = list({row[key]: row for row in rows}.values())
        bound = self.order or range(len(self.columns))  # each bound value's index in a row
        for start in range(0, len(unique), self.max_rows):
            part = unique[start : start + self.max_rows]
            size = len(part)
            columns = zip(*part, strict=True)
            empty = {i for i, column in enumerate(columns) if column.count(None) == size}
            nulls = tuple(number for number, i in enumerate(bound) if i in empty)
            kept = [i for i in bound if i not in empty]
            if not nulls and self.order is None:
                values = tuple(chain.from_iterable(part))
            elif not kept:  # every value NULL: the database refuses the rows, as when bound
                values = ()
            elif len(kept) == 1:
                values = tuple(row[kept[0]] for row in part)
            else:
                values = tuple(chain.from_iterable(map(itemgetter(*kept), part)))
            conn.exec_driver_sql(self.sql(size, nulls), values)
