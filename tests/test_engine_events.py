"""Every statement the ledger runs passes through SQLAlchemy's engine events.

The driver's own cursors are replaced by counting ones, and every statement
they execute must also have been seen by ``before_cursor_execute`` and
``after_cursor_execute``, the hooks that tracing (OpenTelemetry's
SQLAlchemy instrumentation among them) is built on. The transfer hot path
is included: it is the most frequent write.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg2.extensions
import pytest
from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sqlalchemy_engine

from conftest import with_driver
from exercise import every_operation
from tokenledger import Ledger

DRIVER_SAW: Counter[str] = Counter()


def _saw(statement: object) -> None:
    DRIVER_SAW[" ".join(str(statement).split())] += 1


class Psycopg2Cursor(psycopg2.extensions.cursor):
    def execute(self, query: Any, vars: Any = None) -> Any:
        _saw(query)
        return super().execute(query, vars)

    def executemany(self, query: Any, vars_list: Any) -> Any:
        _saw(query)
        return super().executemany(query, vars_list)


class Psycopg3Cursor(psycopg.Cursor[Any]):
    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        _saw(query)
        return super().execute(query, params, **kwargs)

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        _saw(query)
        return super().executemany(query, params_seq, **kwargs)


class Psycopg3ServerCursor(psycopg.ServerCursor[Any]):
    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        _saw(query)
        return super().execute(query, params, **kwargs)


class SqliteCursor(sqlite3.Cursor):
    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        _saw(sql)
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        _saw(sql)
        return super().executemany(sql, parameters)


class SqliteConnection(sqlite3.Connection):
    def cursor(self, factory: Any = SqliteCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)


def counting_engine(url: str, driver: str) -> Engine:
    """A host's engine whose driver counts every statement it is given."""
    if driver == "psycopg2":
        return sqlalchemy_engine(
            with_driver(url, driver), connect_args={"cursor_factory": Psycopg2Cursor}
        )
    if driver == "psycopg":
        engine = sqlalchemy_engine(
            with_driver(url, driver), connect_args={"cursor_factory": Psycopg3Cursor}
        )

        @event.listens_for(engine, "connect")
        def count_server_cursors(dbapi_connection: Any, _: Any) -> None:
            # What a streamed read (yield_per) uses: a named cursor on the server.
            dbapi_connection.server_cursor_factory = Psycopg3ServerCursor

        return engine
    return sqlalchemy_engine(url, connect_args={"factory": SqliteConnection})


@pytest.fixture
def counted(database_url: str, driver: str) -> Iterator[Engine]:
    engine = counting_engine(database_url, driver)
    with engine.connect():
        pass  # the dialect's own first-connect queries happen here, before counting
    yield engine
    engine.dispose()


@pytest.mark.parametrize(
    ("backend", "driver"),
    [
        pytest.param("sqlite", "pysqlite", marks=pytest.mark.sqlite),
        pytest.param("postgresql", "psycopg2", marks=pytest.mark.postgresql),
        pytest.param("postgresql", "psycopg", marks=pytest.mark.postgresql),
    ],
    indirect=["backend"],
)
def test_every_statement_passes_through_the_engine_events(counted: Engine, driver: str) -> None:
    before: Counter[str] = Counter()
    after: Counter[str] = Counter()

    @event.listens_for(counted, "before_cursor_execute")
    def seen_before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        before[" ".join(statement.split())] += 1

    @event.listens_for(counted, "after_cursor_execute")
    def seen_after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        after[" ".join(statement.split())] += 1

    DRIVER_SAW.clear()
    ledger = Ledger(counted)
    every_operation(ledger, "ev")
    with ledger.transaction() as tx:
        tx.transfer("ev-alice", "ev-bob", 1, "in a block")
    with counted.connect() as connection, connection.begin():
        ledger.using(connection).mint("ev-bob", 1, "in the host's transaction")
    ledger.checkpoint()
    ledger.prove_inclusion(1)
    ledger.list_accounts(limit=10)
    ledger.get_entry(1)
    assert DRIVER_SAW, "the counting cursors saw nothing: the test is not measuring"
    hot_path = [s for s in DRIVER_SAW if "tokenledger_post_entry" in s or "INSERT INTO" in s]
    assert hot_path, "the one-entry write was not among the statements"
    assert before == DRIVER_SAW
    assert after == DRIVER_SAW
