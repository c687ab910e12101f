"""Where a ledger transaction begins and ends, and the one boundary for driver errors.

A ``Binding`` says who owns the transaction:

* ``EngineBinding``: the ledger does. Each write is its own short
  transaction, committed on success and rolled back on any error; it may be
  retried (see ``run_write``).
* ``ConnectionBinding``: the caller does (a ``Connection`` or ``Session`` it
  handed over). Each write runs inside a SAVEPOINT, so a rejected call
  leaves the caller's transaction as it was and usable; the ledger never
  commits, rolls back or closes the caller's transaction.

SQLite takes its write lock at ``BEGIN IMMEDIATE``: two writers that both
read balances and then write would otherwise fail with SQLITE_BUSY at the
write instead of waiting their turn at the start.
"""

from __future__ import annotations

import random
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, PendingRollbackError, SQLAlchemyError
from sqlalchemy.orm import Session

from tokenledger.errors import ConcurrencyConflict, InvalidArgument, LedgerError, StorageError

__all__ = [
    "Binding",
    "ConnectionBinding",
    "EngineBinding",
    "IdempotencyKeyTaken",
    "binding_for",
    "owned_transaction",
    "run_read",
    "run_write",
    "translate",
]

T = TypeVar("T")

# PostgreSQL SQLSTATEs after which the whole transaction can simply run again.
_RETRYABLE_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
}
_TIMEOUT_SQLSTATES = {"57014"}  # query_canceled, e.g. statement_timeout
MAX_ATTEMPTS = 5


class IdempotencyKeyTaken(Exception):
    """Another transaction committed an entry with this idempotency key first."""


class _CommitFailed(Exception):
    """COMMIT itself failed: the outcome is unknown to this process."""

    def __init__(self, cause: DBAPIError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Binding(Protocol):
    owns_transactions: bool

    def write(self) -> Any: ...  # a context manager yielding a Connection

    def driver_write(self) -> Any: ...  # a context manager yielding a DBAPI cursor

    def read(self, *, snapshot: bool = False) -> Any: ...


class EngineBinding:
    """The ledger opens, commits and closes its own transactions."""

    owns_transactions = True

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            transaction = connection.begin()
            try:
                if self._sqlite:
                    _begin_immediate(connection)
                yield connection
            except BaseException:
                with suppress(SQLAlchemyError):  # the connection may be gone already
                    transaction.rollback()
                raise
            try:
                transaction.commit()
            except DBAPIError as exc:
                raise _CommitFailed(exc) from exc
            except PendingRollbackError as exc:
                # The connection was lost inside the block (the caller caught
                # that error and went on): no COMMIT was sent, nothing stays.
                raise StorageError(
                    "the connection was lost inside the transaction; nothing was committed"
                ) from exc

    @contextmanager
    def driver_write(self) -> Iterator[Any]:
        """A driver (DBAPI) cursor for the hot path, in the cheapest safe transaction.

        PostgreSQL: autocommit, because the hot path is one statement and a
        statement is atomic on its own: one round trip, COMMIT included.
        SQLite: ``BEGIN IMMEDIATE`` ... ``COMMIT`` around the statements.
        """
        pooled = self._checkout()
        cursor = pooled.cursor()
        scope = _sqlite_immediate if self._sqlite else _postgres_autocommit
        try:
            with scope(self.engine.dialect, pooled.driver_connection, cursor):
                yield cursor
        except DBAPIError as exc:
            if exc.connection_invalidated:
                pooled.invalidate(exc)
            raise
        except _CommitFailed as exc:
            if exc.cause.connection_invalidated:
                pooled.invalidate(exc.cause)
            raise
        finally:
            with suppress(Exception):
                cursor.close()
            pooled.close()

    def _checkout(self) -> Any:
        """A pooled DBAPI connection, known not to have been closed by the server."""
        dialect = self.engine.dialect
        for attempt in (1, 2):
            try:
                pooled = self.engine.raw_connection()
            except dialect.loaded_dbapi.Error as exc:
                # Engine.raw_connection() does not wrap driver errors the way
                # Engine.connect() does; nothing was sent yet.
                raise _wrap_driver_error(dialect, exc, None, None) from exc
            if self._sqlite or attempt == 2 or not _hung_up(pooled.driver_connection):
                return pooled
            # The server closed this idle connection (restart, pg_terminate_backend,
            # idle timeout). Nothing was sent on it, so taking another is safe even
            # for an unkeyed write; once the statement is sent, a lost connection
            # is an unknown outcome.
            pooled.invalidate()
            pooled.close()
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            if snapshot:
                _begin_snapshot(connection)
            try:
                yield connection
            finally:
                with suppress(SQLAlchemyError):
                    connection.rollback()


class ConnectionBinding:
    """The caller owns the transaction; the ledger works inside it."""

    owns_transactions = False

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._sqlite = connection.dialect.name == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        connection = self.connection
        if self._sqlite and not _driver_in_transaction(connection):
            # pysqlite has not begun a transaction yet: begin one that holds
            # the write lock, or the savepoint below would commit on release.
            _begin_immediate(connection)
        with connection.begin_nested():
            yield connection

    @contextmanager
    def driver_write(self) -> Iterator[Any]:
        """A driver cursor inside a savepoint of the caller's transaction."""
        with self.write() as connection:
            pooled = connection.connection
            cursor = pooled.cursor()
            try:
                yield cursor
            except connection.dialect.loaded_dbapi.Error as exc:
                raise _wrap_driver_error(
                    connection.dialect, exc, pooled.driver_connection, cursor
                ) from exc
            finally:
                cursor.close()

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        yield self.connection


class SessionBinding(ConnectionBinding):
    """The caller's ORM ``Session``: the ledger uses the session's connection."""

    def __init__(self, session: Session) -> None:
        self.session = session
        super().__init__(session.connection())


def binding_for(bind: Engine | Connection | Session) -> Binding:
    if isinstance(bind, Engine):
        return EngineBinding(bind)
    if isinstance(bind, Connection):
        return ConnectionBinding(bind)
    if isinstance(bind, Session):
        return SessionBinding(bind)
    raise TypeError(f"expected an Engine, Connection or Session, got {type(bind).__name__}")


def run_write(
    binding: Binding,
    work: Callable[[Any], T],
    *,
    idempotent: bool = False,
    driver: bool = False,
) -> T:
    """Run ``work`` in a write transaction, retrying what is safe to retry.

    With an owned transaction, a deadlock, serialization failure or lost
    connection before COMMIT is retried up to ``MAX_ATTEMPTS`` times: nothing
    was committed, so running again cannot write twice. A failure during
    COMMIT leaves the outcome unknown; it is retried only when ``idempotent``
    (the call has an idempotency key, so a retry returns the first result).

    ``work`` gets a SQLAlchemy ``Connection``, or with ``driver=True`` a
    DBAPI cursor (the hot path; see ``Binding.driver_write``).
    """
    attempt = 1
    while True:
        try:
            scope = binding.driver_write() if driver else binding.write()
            with scope as connection:
                return work(connection)
        except _CommitFailed as failed:
            error = translate(failed.cause)
            retry = idempotent and _transient(failed.cause)
            if not retry or not binding.owns_transactions or attempt >= MAX_ATTEMPTS:
                if type(error) is StorageError:
                    error = StorageError(f"the commit failed and its outcome is unknown: {error}")
                raise error from failed.cause
        except DBAPIError as exc:
            error = translate(exc)
            if not (binding.owns_transactions and _transient(exc) and attempt < MAX_ATTEMPTS):
                raise error from exc
        _backoff(attempt)
        attempt += 1


@contextmanager
def owned_transaction(binding: EngineBinding) -> Iterator[Connection]:
    """One transaction for a block of calls; driver errors become ledger errors."""
    try:
        with binding.write() as connection:
            yield connection
    except _CommitFailed as failed:
        error = translate(failed.cause)
        raise error from failed.cause
    except DBAPIError as exc:
        error = translate(exc)
        raise error from exc


def run_read(binding: Binding, work: Callable[[Connection], T], *, snapshot: bool = False) -> T:
    """Run ``work`` on a connection for reading; driver errors become ``StorageError``.

    A read on a connection the server closed while it sat in the pool is
    run once more on a new connection: a read is always safe to repeat.
    """
    for attempt in (1, 2):
        try:
            with binding.read(snapshot=snapshot) as connection:
                return work(connection)
        except DBAPIError as exc:
            if attempt == 1 and binding.owns_transactions and exc.connection_invalidated:
                continue
            raise translate(exc) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def translate(exc: DBAPIError) -> LedgerError | IdempotencyKeyTaken:
    """Map a driver error to the ledger's error tree (the one place that does).

    A unique violation of the idempotency key is not an error for the caller
    but a signal: the service answers it by reading the entry that won.
    """
    constraint = constraint_name(exc)
    if constraint and "idempotency_key" in constraint:
        return IdempotencyKeyTaken(constraint)
    if constraint and "reverses_entry_id" in constraint:
        return InvalidArgument("that entry was already reversed")
    sqlstate = _sqlstate(exc)
    if sqlstate in _RETRYABLE_SQLSTATES or _sqlite_busy(exc):
        return ConcurrencyConflict(f"concurrent writers conflicted: {_first_line(exc)}")
    if sqlstate in _TIMEOUT_SQLSTATES:
        return StorageError(f"the database cancelled the statement: {_first_line(exc)}")
    if constraint:
        return StorageError(f"the database refused the write ({constraint}): {_first_line(exc)}")
    return StorageError(f"database error: {_first_line(exc)}")


def constraint_name(exc: DBAPIError) -> str | None:
    """The violated constraint or unique index, from either driver family."""
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name:
        return str(name)
    message = str(exc.orig)
    for prefix in ("UNIQUE constraint failed: ", "CHECK constraint failed: "):
        if message.startswith(prefix):
            return message[len(prefix) :].strip()
    return None


def _transient(exc: BaseException) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    return _sqlstate(exc) in _RETRYABLE_SQLSTATES


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _sqlite_busy(exc: DBAPIError) -> bool:
    message = str(exc.orig)
    return "database is locked" in message or "database table is locked" in message


def _first_line(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc).__name__


def _backoff(attempt: int) -> None:
    # Jittered exponential backoff: 5, 10, 20, 40 ms on average.
    time.sleep(0.005 * 2 ** (attempt - 1) * (0.5 + random.random()))  # noqa: S311


def _wrap_driver_error(dialect: Any, exc: Exception, driver: Any, cursor: Any) -> DBAPIError:
    """A driver exception as SQLAlchemy's ``DBAPIError``, the one type ``translate`` reads."""
    wrapped = DBAPIError.instance(
        None,
        None,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=dialect.is_disconnect(exc, driver, cursor),
        dialect=dialect,
    )
    if not isinstance(wrapped, DBAPIError):  # pragma: no cover - instance() of a DBAPI error
        raise TypeError("expected a DBAPIError") from exc
    return wrapped


@contextmanager
def _postgres_autocommit(dialect: Any, driver: Any, cursor: Any) -> Iterator[None]:
    """The hot path's one statement is its own transaction."""
    driver.autocommit = True
    try:
        yield
    except dialect.loaded_dbapi.Error as exc:
        # Without an SQLSTATE the server never answered: it may have
        # committed the statement or not.
        wrapped = _wrap_driver_error(dialect, exc, driver, cursor)
        if _sqlstate(wrapped) is None:
            raise _CommitFailed(wrapped) from exc
        raise wrapped from exc
    finally:
        if not _is_closed(driver):
            driver.autocommit = False


@contextmanager
def _sqlite_immediate(dialect: Any, driver: Any, cursor: Any) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock from the start."""
    try:
        cursor.execute("BEGIN IMMEDIATE")
        yield
    except dialect.loaded_dbapi.Error as exc:
        with suppress(dialect.loaded_dbapi.Error):
            driver.rollback()
        raise _wrap_driver_error(dialect, exc, driver, cursor) from exc
    except BaseException:
        driver.rollback()
        raise
    try:
        driver.commit()
    except dialect.loaded_dbapi.Error as exc:
        raise _CommitFailed(_wrap_driver_error(dialect, exc, driver, cursor)) from exc


def _hung_up(driver: Any) -> bool:
    """True when an idle connection's socket is readable: the server closed it or said FATAL.

    A healthy idle connection has nothing to read (no query is in flight), so
    a readable socket means end-of-file or a termination message. One
    non-blocking poll, no round trip.
    """
    try:
        ready, _, _ = select.select([driver.fileno()], [], [], 0)
    except (OSError, ValueError, AttributeError):
        return False  # not a socket we can poll: let the statement find out
    except Exception:  # the driver refused fileno(): the connection is closed
        return True
    return bool(ready)


def _is_closed(driver: Any) -> bool:
    closed = getattr(driver, "closed", False)
    return bool(closed)


def _driver_in_transaction(connection: Connection) -> bool:
    return bool(getattr(connection.connection.driver_connection, "in_transaction", False))


def _begin_immediate(connection: Connection) -> None:
    if not _driver_in_transaction(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _begin_snapshot(connection: Connection) -> None:
    """Make every read until rollback see one consistent snapshot."""
    if connection.dialect.name == "postgresql":
        # The driver has just sent BEGIN; this must be the first statement after it.
        connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    elif not _driver_in_transaction(connection):
        connection.exec_driver_sql("BEGIN")
