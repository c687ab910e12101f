"""Small helpers for what differs between PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Insert, Row, Select, func, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.schema import Table


def is_postgresql(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def insert_ignoring_conflicts(connection: Connection, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` on either backend."""
    if is_postgresql(connection):
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def writer_txid(connection: Connection) -> ColumnElement[Any]:
    """The id of the writing transaction (PostgreSQL), or 0 where writers are serial."""
    if is_postgresql(connection):
        return func.txid_current()
    return literal(0)


def postgres_array(values: Iterable[str | int | datetime | None]) -> str:
    """A column of values (one type, or None) as one PostgreSQL array literal.

    For ``CAST(:param AS type[])``. psycopg2 sends a list parameter as
    ``ARRAY[...]`` with one constant per element, which the server parses
    element by element; one text literal is several times cheaper for both
    sides at batch sizes, on either driver. Strings are quoted, so none of
    them can read as ``NULL``.
    """
    items = list(values)
    # A batch's entries share their timestamp and often their texts: encode each value once.
    encoded = {value: _array_element(value) for value in set(items)}
    return "{" + ",".join([encoded[value] for value in items]) + "}"


def _array_element(value: str | int | datetime | None) -> str:
    # Subclasses (bool, a str Enum member) would format as something else
    # than their value: write the value itself, and refuse anything unforeseen.
    if value is None:
        return "NULL"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, datetime) and value.tzinfo is not None:
        return f'"{value.isoformat()}"'
    if not isinstance(value, str):
        raise TypeError(f"no array literal for {type(value).__name__} {value!r}")
    text = str.__str__(value)
    if '"' in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def keyset_pages(
    connection: Connection,
    statement: Select[Any],
    key: ColumnElement[Any],
    *,
    label: str,
    chunk: int = 5000,
) -> Iterator[Row[Any]]:
    """Every row of ``statement`` in ``key`` order, read ``chunk`` rows at a time.

    Keyset pages (``WHERE key > last``) keep memory flat on any backend and
    any driver; ``label`` is the key's name in the result rows. The first
    page has no lower bound, so no key value is ever skipped.
    """
    last: Any = None
    while True:
        page = statement.order_by(key).limit(chunk)
        if last is not None:
            page = page.where(key > last)
        rows = connection.execute(page).all()
        yield from rows
        if len(rows) < chunk:
            return
        last = getattr(rows[-1], label)
