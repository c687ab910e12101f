"""Engines for the ledger's own use, and what differs between backends at connect time.

``create_engine`` is what ``Ledger.from_url`` uses. A host may hand the
ledger an engine of its own instead; nothing here is installed on engines
the ledger did not create.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

__all__ = ["DEFAULT_BUSY_TIMEOUT", "create_engine", "is_sqlite_memory"]

# Seconds a SQLite writer waits for the write lock before giving up.
DEFAULT_BUSY_TIMEOUT = 30.0


def create_engine(
    url: str,
    *,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    sqlite_synchronous: str = "FULL",
    **kwargs: Any,
) -> Engine:
    """An engine configured for the ledger.

    SQLite: write-ahead logging (readers never wait for the writer), a busy
    timeout (a writer waits for the write lock instead of failing), foreign
    keys on, and ``synchronous=FULL`` by default, so a committed entry
    survives a power cut. ``sqlite_synchronous="NORMAL"`` trades the last
    commits before a power cut for speed.

    PostgreSQL: any SQLAlchemy URL, e.g. ``postgresql+psycopg2://`` or
    ``postgresql+psycopg://`` (psycopg 3). psycopg 3 is told never to
    prepare statements on the server (``prepare_threshold=None``) unless
    ``connect_args`` says otherwise: behind PgBouncer in transaction pooling
    mode, a statement prepared on one server connection does not exist on
    the next. The one-entry server function keeps its own plans either way.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if parsed.get_driver_name() == "psycopg":
            connect_args = dict(kwargs.pop("connect_args", {}))
            connect_args.setdefault("prepare_threshold", None)
            kwargs["connect_args"] = connect_args
        return sqlalchemy.create_engine(parsed, **kwargs)

    if sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise ValueError(f"unknown SQLite synchronous setting: {sqlite_synchronous!r}")
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", busy_timeout)
    if is_sqlite_memory(url):
        # One shared connection: every new connection to :memory: would
        # otherwise see a different, empty database.
        connect_args.setdefault("check_same_thread", False)
        kwargs.setdefault("poolclass", StaticPool)
    engine = sqlalchemy.create_engine(parsed, connect_args=connect_args, **kwargs)
    file_backed = not is_sqlite_memory(url)

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            if file_backed:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {sqlite_synchronous.upper()}")
        finally:
            cursor.close()

    return engine


def is_sqlite_memory(url: str) -> bool:
    """True for SQLite URLs that name no file (``sqlite://``, ``:memory:``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    return database in {"", ":memory:"} or "mode=memory" in str(parsed.query)
