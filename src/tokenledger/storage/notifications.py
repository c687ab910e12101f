"""Wake-ups for the event feed: PostgreSQL's LISTEN/NOTIFY, bounded polling elsewhere.

The sealer announces on ``CHANNEL`` each time it links entries into the
chain (``announce``, inside its transaction: the notice is delivered at its
commit). A waiter (``Waiter``) holds one connection of its own in autocommit,
listens on the channel and sleeps until a notice or its timeout, whichever
comes first. Notices are a hint, never the truth: a waiter always reads the
chain after waking, and also wakes at the end of each ``interval``, so a lost
notice (a connection through PgBouncer in transaction pooling mode, where
LISTEN does not follow the client; SQLite, which has none) costs latency,
never an event.
"""

from __future__ import annotations

import select
import time
from contextlib import suppress
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from tokenledger.storage.dialect import is_postgresql

__all__ = ["CHANNEL", "Waiter", "announce"]

CHANNEL = "tokenledger_sealed"


def announce(connection: Connection, seq: int) -> None:
    """Tell listeners the chain now reaches ``seq`` (PostgreSQL; nothing elsewhere)."""
    if is_postgresql(connection):
        connection.execute(
            text("SELECT pg_notify(:channel, :seq)"), {"channel": CHANNEL, "seq": str(seq)}
        )


class Waiter:
    """Sleep until the sealer announces, or ``interval`` seconds pass.

    Use as a context manager around a wait loop; it holds one pooled
    connection (PostgreSQL) while open, and none on SQLite.
    """

    def __init__(self, engine: Engine, interval: float) -> None:
        self._engine = engine
        self._interval = interval
        self._connection: Connection | None = None
        self._driver: Any = None
        self._autocommit_before = False

    def __enter__(self) -> Waiter:
        if self._engine.dialect.name != "postgresql":
            return self
        try:
            connection = self._engine.connect()
            driver: Any = connection.connection.driver_connection
            self._autocommit_before = bool(driver.autocommit)
            driver.autocommit = True  # LISTEN takes effect at once, outside a transaction
            connection.exec_driver_sql(f"LISTEN {CHANNEL}")
        except (SQLAlchemyError, Exception):
            return self  # no notices then: polling alone still finds every event
        self._connection, self._driver = connection, driver
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._connection is None:
            return
        with suppress(Exception):
            self._connection.exec_driver_sql(f"UNLISTEN {CHANNEL}")
            self._driver.autocommit = self._autocommit_before  # as the host's pool had it
        with suppress(Exception):
            self._connection.close()
        self._connection = self._driver = None

    def wait(self, timeout: float) -> None:
        """Return after a notice, ``interval`` seconds, or ``timeout``, whichever is first."""
        delay = max(0.0, min(timeout, self._interval))
        if self._driver is None:
            time.sleep(delay)
            return
        try:
            if hasattr(self._driver, "notifies") and callable(self._driver.notifies):
                # psycopg 3: a generator that stops after one notice or the timeout.
                for _ in self._driver.notifies(timeout=delay, stop_after=1):
                    break
                return
            # psycopg2: the socket turns readable when a notice arrives.
            poller = select.poll()
            poller.register(self._driver.fileno(), select.POLLIN)
            if poller.poll(delay * 1000):
                self._driver.poll()
                self._driver.notifies.clear()
        except Exception:  # the listening connection broke: poll from now on
            with suppress(Exception):
                if self._connection is not None:
                    self._connection.invalidate()
            self._connection = self._driver = None
            time.sleep(delay)
