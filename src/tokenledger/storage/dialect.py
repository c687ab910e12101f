"""What differs between PostgreSQL and SQLite, in the few places statements share."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Insert, func, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.schema import Table

from tokenledger.storage.models import UTCDateTime

__all__ = [
    "clock",
    "clock_now",
    "insert_ignoring_conflicts",
    "is_postgresql",
    "postgres_array",
    "writer_txid",
]


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


def clock_now() -> datetime:
    """The clock of an embedded database: this process's, in UTC."""
    return datetime.now(UTC)


def clock(connection: Connection) -> ColumnElement[datetime]:
    """The ledger's one clock, as an expression to store.

    PostgreSQL: the server's clock (``statement_timestamp()``: one value
    however often a statement uses it), one clock for every host process
    whatever their own clocks say. SQLite: the embedding process's clock,
    which is the database's (it lives in that process).
    """
    if is_postgresql(connection):
        return func.statement_timestamp(type_=UTCDateTime())
    return literal(clock_now(), UTCDateTime())


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
