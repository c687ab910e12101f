"""Small helpers for what differs between PostgreSQL and SQLite."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, Insert, func, literal
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
