"""Where a ledger transaction begins and ends: the one owner of connections.

A ``Binding`` says who owns the transaction and how the ledger reaches it:

* ``EngineBinding``: the ledger does. Each call checks a connection out of
  the engine's pool, runs one short transaction at the isolation the ledger
  needs, whatever the engine is configured with, and returns the connection
  with the engine's own settings (SQLAlchemy resets the isolation level and
  autocommit flag it changed). The ledger never disposes, closes or
  reconfigures the engine itself.
* ``ConnectionBinding`` / ``SessionBinding``: the caller does (a
  ``Connection`` or ``Session`` it handed over). Each write runs inside a
  SAVEPOINT, so a refused call leaves the caller's transaction as it was and
  usable; the ledger never commits, rolls back or closes the caller's
  transaction. A connection in autocommit has no transaction to share and is
  refused.

What a write asks for (``Scope``):

* ``"transaction"``: several statements, atomic. PostgreSQL: READ
  COMMITTED, set on the connection for this transaction (the row locks and
  the absolute figures computed from locked rows need no more, and
  REPEATABLE READ would turn every wait for a row lock into a serialization
  failure). SQLite: ``BEGIN IMMEDIATE``, so the write lock is held from the
  start and a writer waits its turn instead of failing at its first write.
* ``"statement"``: one statement that is atomic on its own (the one-entry
  server function): autocommit on PostgreSQL, so the statement and its
  COMMIT are one round trip. SQLite and a caller's transaction treat it as
  ``"transaction"``.

Reads take no locks. A plain read runs each statement on its own
(autocommit on PostgreSQL: no BEGIN/ROLLBACK round trips); a snapshot read
(``snapshot=True``) sees one consistent state: REPEATABLE READ on
PostgreSQL, one read transaction on SQLite.

A commit on PostgreSQL has a deadline (``commit_deadline``, default
``COMMIT_DEADLINE``): past it the backend is terminated by
``storage.watchdog`` and the write is in doubt (``OutcomeUnknown``), never a
hang and never a success the ledger cannot vouch for. With
``require_synchronous`` every write first makes sure a synchronous standby is
attached (``ReplicationUnavailable`` otherwise, checked at most once a
second). With ``failover_wait``, a write whose primary went away is tried
again, with backoff, until a writable primary answers or the wait is over
(docs/replication.md). ``storage.replication.ReplicatedBinding`` adds a read
engine (a replica) to an ``EngineBinding``.

Driver errors become ledger errors in one place, ``translate``. Every
statement goes through SQLAlchemy's ``Connection``, so engine events
(``before_cursor_execute``, tracing) see all of them.
"""

from __future__ import annotations

import random
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, PendingRollbackError, SQLAlchemyError
from sqlalchemy.orm import Session

from tokenledger.domain.errors import (
    ConcurrencyConflict,
    InvalidArgument,
    LedgerError,
    OutcomeUnknown,
    ReplicationUnavailable,
    StorageError,
)
from tokenledger.storage.posting import IdempotencyKeyTaken, Poster, Scope, poster_for
from tokenledger.storage.watchdog import WATCHDOG

__all__ = [
    "COMMIT_DEADLINE",
    "MAX_ATTEMPTS",
    "Binding",
    "ConnectionBinding",
    "EngineBinding",
    "IdempotencyKeyTaken",
    "Scope",
    "SessionBinding",
    "binding_for",
    "owned_transaction",
    "run_read",
    "run_write",
    "stream_read",
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
# The primary is going away or not there yet (a failover in progress): nothing
# was done, and a new primary may answer soon.
_PRIMARY_AWAY_SQLSTATES = {
    "57P01",  # admin_shutdown: terminating connection due to administrator command
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: the database system is starting up
    "25006",  # read_only_sql_transaction: reached a standby (a demoted primary)
}
# The session was ended by the server (pg_terminate_backend, a shutdown).
_ENDED_SQLSTATES = {"57P01", "57P02"}
MAX_ATTEMPTS = 5
# Seconds a commit (or a one-statement write) may take before it is ended and in doubt.
COMMIT_DEADLINE = 30.0
# How often, at most, ``require_synchronous`` asks the primary about its standbys.
SYNC_CHECK_INTERVAL = 1.0
# The isolation level of every transaction the ledger owns on PostgreSQL.
WRITE_ISOLATION = "READ COMMITTED"
SNAPSHOT_ISOLATION = "REPEATABLE READ"
AUTOCOMMIT = "AUTOCOMMIT"


class _CommitFailed(Exception):
    """COMMIT itself (or an autocommit statement) failed: the outcome is unknown here.

    ``overdue``: the commit outlived the deadline and its backend was ended
    (``cause`` is then what the driver said, if anything).
    """

    def __init__(self, cause: DBAPIError | None, *, overdue: bool = False) -> None:
        super().__init__(str(cause) if cause is not None else "the commit was overdue")
        self.cause = cause
        self.overdue = overdue


class Binding:
    """How the ledger reaches its database, and who owns the transaction."""

    owns_transactions: bool
    dialect_name: str
    poster: Poster
    failover_wait: float = 0.0  # seconds a write may wait for a new primary
    commit_deadline: float | None = None
    # Keyed writes whose commit was cut and that were tried again (resolved by
    # their key); for monitoring, approximate under threads.
    in_doubt_retries: int = 0

    def write(self, scope: Scope = "transaction") -> AbstractContextManager[Connection]:
        """A connection inside a write transaction (see the module docstring)."""
        raise NotImplementedError

    def read(
        self, *, snapshot: bool = False, primary: bool = False
    ) -> AbstractContextManager[Connection]:
        """A connection for reading; one consistent snapshot when ``snapshot``.

        ``primary``: the read must see the primary itself (a binding with a
        replica otherwise may read there).
        """
        raise NotImplementedError

    def retry_read(self, exc: DBAPIError) -> bool:
        """Whether a read that failed with ``exc`` is worth running again (on the primary)."""
        return self.owns_transactions and exc.connection_invalidated


class EngineBinding(Binding):
    """The ledger opens, commits and closes its own transactions on ``engine``."""

    owns_transactions = True

    def __init__(
        self,
        engine: Engine,
        *,
        first_use: Callable[[], None] | None = None,
        commit_deadline: float | None = COMMIT_DEADLINE,
        require_synchronous: bool = False,
        failover_wait: float = 0.0,
    ) -> None:
        """Bind to ``engine``; ``first_use`` runs once before the first connection is used.

        ``first_use`` (creating an embedded database, say) is retried at the
        next call if it fails, so a database that was away at start-up is
        picked up when it comes back. ``commit_deadline``,
        ``require_synchronous`` and ``failover_wait``: see the module
        docstring (PostgreSQL only; SQLite has no standby to wait for).
        """
        self.engine = engine
        self.dialect_name = engine.dialect.name
        self.poster = poster_for(self.dialect_name)
        self._sqlite = self.dialect_name == "sqlite"
        self._first_use = first_use
        self._first_use_lock = threading.Lock()
        self._server_default: str | None = None
        self.failover_wait = 0.0 if self._sqlite else failover_wait
        self.commit_deadline = None if self._sqlite else commit_deadline
        self._require_synchronous = require_synchronous and not self._sqlite
        self._sync_checked = -float("inf")

    @contextmanager
    def write(self, scope: Scope = "transaction") -> Iterator[Connection]:
        if scope == "statement" and not self._sqlite:
            with self._autocommit_statement() as connection:
                yield connection
            return
        with self._checkout(isolation=WRITE_ISOLATION) as connection:
            transaction = connection.begin()
            try:
                if self._sqlite:
                    _begin_immediate(connection)
                self._before_write(connection)
                yield connection
            except BaseException:
                with suppress(SQLAlchemyError):  # the connection may be gone already
                    transaction.rollback()
                raise
            try:
                with self._deadline(connection):
                    transaction.commit()
            except DBAPIError as exc:
                raise _CommitFailed(exc) from exc
            except PendingRollbackError as exc:
                # The connection was lost inside the block (the caller caught
                # that error and went on): no COMMIT was sent, nothing stays.
                raise StorageError(
                    "the connection was lost inside the transaction; nothing was committed"
                ) from exc
            self._committed(connection)

    @contextmanager
    def _autocommit_statement(self) -> Iterator[Connection]:
        """One statement that is its own transaction (PostgreSQL)."""
        with self._checkout(isolation=AUTOCOMMIT) as connection:
            self._before_write(connection)
            try:
                # The statement and its commit are one: the deadline covers both.
                with self._deadline(connection):
                    yield connection
            except DBAPIError as exc:
                # Without an SQLSTATE the server never answered, and a session
                # ended mid-statement may have been ended in its commit (while
                # waiting for a synchronous standby, the entry is committed
                # although the client sees 57P01): it may have committed or not.
                if _sqlstate(exc) is None or _sqlstate(exc) in _ENDED_SQLSTATES:
                    raise _CommitFailed(exc) from exc
                raise
            self._committed(connection)

    @contextmanager
    def _deadline(self, connection: Connection) -> Iterator[None]:
        """Run the block under the commit deadline; overdue means ``_CommitFailed(overdue)``."""
        deadline = self.commit_deadline
        if deadline is None:
            yield
            return
        watchdog = WATCHDOG
        token = watchdog.start(self.engine, connection, deadline)
        try:
            yield
        except DBAPIError as exc:
            if watchdog.stop(token):
                connection.invalidate()
                raise _CommitFailed(exc, overdue=True) from exc
            raise
        except BaseException:
            if watchdog.stop(token):
                connection.invalidate()
            raise
        if watchdog.stop(token):
            # It returned, but its backend was being ended: what it said cannot be trusted.
            connection.invalidate()
            raise _CommitFailed(None, overdue=True)

    def _before_write(self, connection: Connection) -> None:
        """With ``require_synchronous``: refuse to write without a synchronous standby.

        Raises:
            ReplicationUnavailable: no synchronous standby is attached, or the
                session does not wait for one.
        """
        if not self._require_synchronous:
            return
        now = time.monotonic()
        if now - self._sync_checked < SYNC_CHECK_INTERVAL:
            return
        problem = synchronous_problem(connection)
        if problem is not None:
            raise ReplicationUnavailable(problem)
        self._sync_checked = now

    def confirm_replicated(self) -> None:
        """With ``require_synchronous``: return once the standby has what is committed so far.

        A transaction that takes a transaction id commits with a WAL record of
        its own, and a synchronous commit waits until the standby confirms
        that record, so everything committed before it is confirmed too
        (under the commit deadline). Without ``require_synchronous``, nothing.

        Raises:
            ReplicationUnavailable: no synchronous standby is attached.
            OutcomeUnknown: the confirmation outlived the commit deadline.
        """
        if self._require_synchronous:
            run_write(self, lambda c: c.exec_driver_sql("SELECT txid_current()").scalar())

    def _committed(self, connection: Connection) -> None:
        """Called on the connection right after a commit succeeded (see ReplicatedBinding)."""

    @contextmanager
    def read(self, *, snapshot: bool = False, primary: bool = False) -> Iterator[Connection]:
        with self._checkout(isolation=SNAPSHOT_ISOLATION if snapshot else AUTOCOMMIT) as connection:
            if self._sqlite and snapshot:
                _begin(connection)
            try:
                yield connection
            finally:
                with suppress(SQLAlchemyError):
                    connection.rollback()

    @contextmanager
    def _checkout(self, *, isolation: str) -> Iterator[Connection]:
        """A pooled connection in the mode ``isolation`` names, put back as it came.

        The mode (autocommit, isolation level) is set on the driver connection
        for this use and restored before the connection goes back to the pool;
        one whose mode cannot be restored (the server went away meanwhile) is
        discarded instead. SQLAlchemy's ``isolation_level`` execution option
        would do the same, but a failure while resetting it escapes from
        ``Connection.close()`` and costs the pool a slot.
        """
        connection = self._connect()
        try:
            if self._sqlite:
                yield connection
                return
            with _driver_mode(connection, isolation, self._server_default):
                yield connection
        finally:
            _release(connection)

    def _connect(self) -> Connection:
        """A pooled connection, known not to have been closed by the server while idle."""
        if self._first_use is not None:
            with self._first_use_lock:
                if self._first_use is not None:
                    self._first_use()
                    self._first_use = None
        for attempt in (1, 2):
            connection = self.engine.connect()
            if self._sqlite or attempt == 2 or not _hung_up(connection):
                if not self._sqlite and self._server_default is None:
                    # What a driver left at its default gets: read once, at first connect.
                    self._server_default = str(self.engine.dialect.default_isolation_level)
                return connection
            # The server closed this idle connection (restart, pg_terminate_backend,
            # idle timeout). Nothing was sent on it, so taking another is safe even
            # for an unkeyed write; once a statement is sent, a lost connection
            # is an unknown outcome.
            connection.invalidate()
            connection.close()
        raise AssertionError("unreachable")  # pragma: no cover


class ConnectionBinding(Binding):
    """The caller owns the transaction; the ledger works inside it."""

    owns_transactions = False

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.dialect_name = connection.dialect.name
        self.poster = poster_for(self.dialect_name)
        self._sqlite = self.dialect_name == "sqlite"
        _refuse_autocommit(connection)

    @property
    def connection(self) -> Connection:
        return self._connection

    @contextmanager
    def write(self, scope: Scope = "transaction") -> Iterator[Connection]:
        connection = self.connection
        if self._sqlite and not _driver_in_transaction(connection):
            # pysqlite has not begun a transaction yet: begin one that holds
            # the write lock, or the savepoint below would commit on release.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        with connection.begin_nested():
            yield connection

    @contextmanager
    def read(self, *, snapshot: bool = False, primary: bool = False) -> Iterator[Connection]:
        yield self.connection


class SessionBinding(ConnectionBinding):
    """The caller's ORM ``Session``: the ledger uses the session's current connection.

    The connection is asked of the session at every call, so a ledger kept
    across ``session.commit()`` works in the session's next transaction.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        super().__init__(session.connection())

    @property
    def connection(self) -> Connection:
        connection = self.session.connection()
        if connection is not self._connection:
            _refuse_autocommit(connection)
            self._connection = connection
        return connection


def binding_for(bind: Engine | Connection | Session) -> Binding:
    """The binding for an engine (ledger-owned) or a connection or session (caller-owned).

    Raises:
        InvalidArgument: a connection or session in autocommit, or anything
            that is not an Engine, Connection or Session.
    """
    if isinstance(bind, Engine):
        return EngineBinding(bind)
    if isinstance(bind, Connection):
        return ConnectionBinding(bind)
    if isinstance(bind, Session):
        return SessionBinding(bind)
    raise InvalidArgument(
        f"a ledger is bound to an Engine, Connection or Session, not {type(bind).__name__}"
    )


def run_write(
    binding: Binding,
    work: Callable[[Connection], T],
    *,
    idempotent: bool = False,
    scope: Scope = "transaction",
) -> T:
    """Run ``work`` in a write transaction, retrying what is safe to retry.

    With an owned transaction, a deadlock, serialization failure or lost
    connection before COMMIT is retried up to ``MAX_ATTEMPTS`` times: nothing
    was committed, so running again cannot write twice. A failure during
    COMMIT leaves the outcome unknown; it is retried only when ``idempotent``
    (the call has an idempotency key, and ``work`` looks it up first, so a
    retry finds the entry if the first attempt committed it, and writes it
    once if not). A commit that outlived the deadline is never retried here:
    it is ``OutcomeUnknown`` at once (a retry would wait as long again).

    When the primary went away (a lost connection, a refused connect, a
    server shutting down or still in recovery), the binding's
    ``failover_wait`` extends the retries with backoff until a writable
    primary answers (a multi-host URL with ``target_session_attrs=read-write``
    finds the new one) or the wait is over.

    Raises:
        LedgerError: what ``work`` raised, or the translated driver error.
        OutcomeUnknown: the commit's outcome is unknown (only an idempotency
            key can tell).
        IdempotencyKeyTaken: a concurrent call committed this key first.
    """
    attempt = 1
    failover_until: float | None = None
    while True:
        try:
            with binding.write(scope) as connection:
                return work(connection)
        except _CommitFailed as failed:
            cause = failed.cause
            if failed.overdue:
                raise OutcomeUnknown(_overdue_message(binding, cause)) from cause
            if cause is None:  # pragma: no cover - only an overdue commit lacks a driver error
                raise OutcomeUnknown("the commit's outcome is unknown") from failed
            error = translate(cause)
            retry = idempotent and binding.owns_transactions and _transient(cause)
            if not (retry and _again(binding, cause, attempt, failover_until)):
                if type(error) is StorageError:
                    error = OutcomeUnknown(f"the commit failed and its outcome is unknown: {error}")
                raise error from cause
            binding.in_doubt_retries += 1
        except DBAPIError as exc:
            error = translate(exc)
            away = binding.failover_wait > 0 and _primary_away(exc)
            retry = binding.owns_transactions and (_transient(exc) or away)
            if not (retry and _again(binding, exc, attempt, failover_until)):
                raise error from exc
        if failover_until is None and binding.failover_wait > 0:
            failover_until = time.monotonic() + binding.failover_wait
        _backoff(attempt, ceiling=0.25 if failover_until is not None else None)
        attempt += 1


def _again(binding: Binding, exc: DBAPIError, attempt: int, failover_until: float | None) -> bool:
    """Whether a retryable failure gets one more attempt."""
    if attempt < MAX_ATTEMPTS:
        return True
    if binding.failover_wait <= 0 or not _primary_away(exc):
        return False
    return failover_until is None or time.monotonic() < failover_until


def _primary_away(exc: DBAPIError) -> bool:
    """The primary is gone or not writable yet: a connection failure or a shutdown."""
    if exc.connection_invalidated:
        return True
    sqlstate = _sqlstate(exc)
    if sqlstate in _PRIMARY_AWAY_SQLSTATES:
        return True
    # No SQLSTATE on an OperationalError: the connection could not be made or was cut.
    return sqlstate is None and type(exc).__name__ == "OperationalError"


def _overdue_message(binding: Binding, cause: DBAPIError | None) -> str:
    deadline = binding.commit_deadline
    said = f" ({_first_line(cause)})" if cause is not None else ""
    return (
        f"the commit did not finish within the ledger's deadline of {deadline} s and was "
        f"ended{said}; its outcome is unknown (a synchronous standby may be missing); "
        "retry with the same idempotency key"
    )


def synchronous_problem(connection: Connection) -> str | None:
    """Why a commit on this PostgreSQL session would not wait for a synchronous standby.

    ``None`` when ``synchronous_commit`` waits for a standby, standbys are
    named, and at least one is attached in ``sync`` or ``quorum`` state
    (``pg_stat_replication`` shows the state to superusers and members of
    ``pg_monitor``).
    """
    mode, names, attached = connection.exec_driver_sql(
        "SELECT current_setting('synchronous_commit'), "
        "current_setting('synchronous_standby_names'), "
        "(SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))"
    ).one()
    if mode in ("off", "local"):
        return f"synchronous_commit is {mode!r}: a commit does not wait for any standby"
    if not str(names).strip():
        return "synchronous_standby_names is empty: no standby is synchronous"
    if not attached:
        return (
            f"no synchronous standby is attached (synchronous_standby_names = {names!r}; "
            "pg_stat_replication shows none in sync or quorum state)"
        )
    return None


@contextmanager
def owned_transaction(binding: EngineBinding) -> Iterator[Connection]:
    """One transaction for a block of calls; driver errors become ledger errors."""
    try:
        with binding.write() as connection:
            yield connection
    except _CommitFailed as failed:
        if failed.cause is None or failed.overdue:
            raise OutcomeUnknown(_overdue_message(binding, failed.cause)) from failed.cause
        raise translate(failed.cause) from failed.cause
    except DBAPIError as exc:
        raise translate(exc) from exc


def run_read(
    binding: Binding,
    work: Callable[[Connection], T],
    *,
    snapshot: bool = False,
    primary: bool = False,
) -> T:
    """Run ``work`` on a connection for reading; driver errors become ``StorageError``.

    A read on a connection the server closed while it sat in the pool is
    run once more on a new connection: a read is always safe to repeat. A
    read that failed on a replica (a recovery conflict cancelled it, the
    replica went away) runs once more on the primary. ``primary``: see
    ``Binding.read``.
    """
    for attempt in (1, 2):
        try:
            with binding.read(snapshot=snapshot, primary=primary or attempt > 1) as connection:
                return work(connection)
        except DBAPIError as exc:
            if attempt == 1 and binding.retry_read(exc):
                continue
            raise translate(exc) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def stream_read(
    binding: Binding, rows: Callable[[Connection], Iterator[T]], *, snapshot: bool = True
) -> Iterator[T]:
    """Yield what ``rows`` yields, reading on one connection held until the iterator ends.

    Closing the iterator (or dropping it) returns the connection at once;
    driver errors become ``StorageError``.
    """
    try:
        with binding.read(snapshot=snapshot) as connection:
            yield from rows(connection)
    except DBAPIError as exc:
        raise translate(exc) from exc


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


def _backoff(attempt: int, *, ceiling: float | None = None) -> None:
    # Jittered exponential backoff: 5, 10, 20, 40 ms on average (capped while
    # waiting for a failover, so a new primary is found soon after it is up).
    delay = 0.005 * 2 ** (min(attempt, 12) - 1)
    if ceiling is not None:
        delay = min(delay, ceiling)
    time.sleep(delay * (0.5 + random.random()))  # noqa: S311


def _hung_up(connection: Connection) -> bool:
    """True when an idle connection's socket is readable: the server closed it or said FATAL.

    A healthy idle connection has nothing to read (no query is in flight), so
    a readable socket means end-of-file or a termination message. One
    non-blocking poll, no round trip; ``poll`` works for any descriptor
    number (``select`` stops at 1024).
    """
    try:
        descriptor = connection.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
    except (OSError, ValueError, AttributeError):
        return False  # not a socket we can poll: let the statement find out
    except Exception:  # the driver refused fileno(): the connection is closed
        return True
    poller = select.poll()
    poller.register(descriptor, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


# -- the driver's transaction mode ------------------------------------------------

_DRIVER_IDLE = 0  # psycopg2's TRANSACTION_STATUS_IDLE and psycopg's TransactionStatus.IDLE


@contextmanager
def _driver_mode(
    connection: Connection, isolation: str, server_default: str | None
) -> Iterator[None]:
    """Set the PostgreSQL driver's autocommit and isolation for one use; put them back after.

    Only what differs is changed (each change of psycopg2's mode costs
    microseconds). A connection that comes out of the pool inside a
    transaction (a host whose pool does not reset on return) is rolled back
    first, as SQLAlchemy's own reset would have done: what it held was
    abandoned. A driver error here is a ``DBAPIError`` like any other.
    """
    driver: Any = connection.connection.driver_connection
    autocommit, level = driver.autocommit, driver.isolation_level
    try:
        if driver_transaction_status(driver) != _DRIVER_IDLE:
            driver.rollback()
        if isolation == AUTOCOMMIT:
            if not autocommit:
                driver.autocommit = True
        else:
            wanted = _isolation_value(connection, isolation)
            effective = level if level is not None else _isolation_value(connection, server_default)
            if autocommit:
                driver.autocommit = False
            if effective != wanted:
                driver.isolation_level = wanted
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _as_dbapi_error(connection, exc) from exc
    try:
        yield
    finally:
        try:
            if driver.isolation_level != level:
                if driver.autocommit:
                    driver.autocommit = False
                driver.isolation_level = level
            if driver.autocommit != autocommit:
                driver.autocommit = autocommit
        except Exception:  # the connection broke meanwhile: never hand it out again
            with suppress(Exception):
                connection.invalidate()


def driver_transaction_status(driver: Any) -> int:
    """The driver connection's transaction status, 0 when idle (psycopg2 and psycopg 3)."""
    info = getattr(driver, "info", None)
    if info is not None and hasattr(info, "transaction_status"):
        return int(info.transaction_status)
    return int(driver.get_transaction_status())


def _isolation_value(connection: Connection, level: str | None) -> object:
    """``level`` in the form the driver's ``isolation_level`` attribute holds."""
    if level is None:
        return None
    name = level.upper()
    if connection.dialect.driver == "psycopg":
        import psycopg  # noqa: PLC0415  (only engines of this driver get here)

        return psycopg.IsolationLevel[name.replace(" ", "_")]
    return {"READ UNCOMMITTED": 4, "READ COMMITTED": 1, "REPEATABLE READ": 2, "SERIALIZABLE": 3}[
        name
    ]


def _as_dbapi_error(connection: Connection, exc: Any) -> DBAPIError:
    """A raw driver error as SQLAlchemy's ``DBAPIError`` (the type ``translate`` reads)."""
    dialect = connection.dialect
    disconnect = dialect.is_disconnect(exc, connection.connection.dbapi_connection, None)
    if disconnect:
        with suppress(Exception):
            connection.invalidate(exc)
    wrapped = DBAPIError.instance(
        None,
        None,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=disconnect,
        dialect=dialect,
    )
    if not isinstance(wrapped, DBAPIError):  # pragma: no cover - instance() of a DBAPI error
        raise TypeError("expected a DBAPIError") from exc
    return wrapped


def _release(connection: Connection) -> None:
    """Return a connection to the pool; one that cannot be returned cleanly is discarded."""
    try:
        connection.close()
    except Exception:  # resetting a connection the server has dropped
        with suppress(Exception):
            connection.invalidate()


def _in_autocommit(connection: Connection) -> bool:
    """Whether the connection commits every statement on its own (no transaction to share)."""
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return True
    driver = connection.connection.driver_connection
    if connection.dialect.name == "sqlite":
        # isolation_level None: pysqlite's autocommit; autocommit True: Python 3.12's
        return getattr(driver, "isolation_level", "") is None or (
            getattr(driver, "autocommit", None) is True
        )
    return bool(getattr(driver, "autocommit", False))


def _refuse_autocommit(connection: Connection) -> None:
    if _in_autocommit(connection):
        raise InvalidArgument(
            "the connection is in autocommit: there is no transaction for the ledger to "
            "share; begin one (or use Ledger(engine), which runs its own)"
        )


def _driver_in_transaction(connection: Connection) -> bool:
    return bool(getattr(connection.connection.driver_connection, "in_transaction", False))


def _begin_immediate(connection: Connection) -> None:
    if not _driver_in_transaction(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _begin(connection: Connection) -> None:
    """A read transaction on SQLite: every read until rollback sees one snapshot."""
    if not _driver_in_transaction(connection):
        connection.exec_driver_sql("BEGIN")
