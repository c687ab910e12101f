"""Reads on a replica, with read-your-writes: ``ReplicatedBinding``.

Writes go to the primary engine, as with an ``EngineBinding``. Reads go to
the read engine (a hot standby, or the host's read-only pool), under three
rules:

* **Read-your-writes, by LSN.** After each commit the binding asks the
  primary for its WAL insert position (``pg_current_wal_insert_lsn()``, one
  round trip on the connection that committed; it is at or past the commit
  record) and keeps the highest it has seen. Before a read, the replica is
  asked how far it has replayed (``pg_last_wal_replay_lsn()``); until that
  reaches the position, the read waits, polling from 0.2 ms up to 5 ms, for
  at most ``replica_wait`` seconds, and past that bound reads from the
  primary. A read engine that is not in recovery (the primary itself, or a
  pool on it) sees every commit at once. The position is the ledger
  object's, not a thread's: a caller sees its own writes, and every read
  through one ``Ledger`` sees every write acknowledged through it before
  (monotonic reads). Writes made through other ``Ledger`` objects or other
  processes are not waited for.
* **Nothing a hot standby refuses.** Reads are plain SELECTs, in autocommit
  or at REPEATABLE READ (never SERIALIZABLE, ``FOR UPDATE``, ``nextval``,
  ``txid_current()``, LISTEN/NOTIFY or temporary tables: those stay on the
  write paths and the event feed's waiter, which use the primary).
  Idempotency replays read on the primary.
* **Failures fall back to the primary.** A read cancelled by a recovery
  conflict (SQLSTATE 40001) or cut by a lost replica runs again on the
  primary (``run_read``); a replica that could not be reached is left alone
  for ``REPLICA_PAUSE`` seconds.

On SQLite a "replica" is a second engine on the same file: every commit is
visible to it at once, so no position is kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from tokenledger.domain.errors import InvalidArgument
from tokenledger.storage.transactions import COMMIT_DEADLINE, EngineBinding

__all__ = ["REPLICA_PAUSE", "REPLICA_WAIT", "ReplicatedBinding"]

# The longest a read waits for the replica to replay the ledger's last write.
REPLICA_WAIT = 0.5
# How long a replica that failed is skipped before it is tried again.
REPLICA_PAUSE = 1.0
_FIRST_POLL = 0.0002
_LONGEST_POLL = 0.005

_INSERT_POSITION = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
_REPLAY_POSITION = (
    "SELECT pg_is_in_recovery(), pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint"
)


class ReplicatedBinding(EngineBinding):
    """Writes on ``engine`` (the primary), reads on ``read_engine`` (a replica)."""

    def __init__(
        self,
        engine: Engine,
        read_engine: Engine,
        *,
        replica_wait: float = REPLICA_WAIT,
        commit_deadline: float | None = COMMIT_DEADLINE,
        require_synchronous: bool = False,
        failover_wait: float = 0.0,
    ) -> None:
        """Bind writes to ``engine`` and reads to ``read_engine``.

        Raises:
            InvalidArgument: the two engines are of different databases
                (dialects), or ``replica_wait`` is negative.
        """
        if read_engine.dialect.name != engine.dialect.name:
            raise InvalidArgument(
                f"the read engine is {read_engine.dialect.name}, the engine "
                f"{engine.dialect.name}: a replica is of the same database"
            )
        if not replica_wait >= 0:
            raise InvalidArgument(f"replica_wait must be 0 or more seconds, not {replica_wait!r}")
        super().__init__(
            engine,
            commit_deadline=commit_deadline,
            require_synchronous=require_synchronous,
            failover_wait=failover_wait,
        )
        self.read_engine = read_engine
        self.replica = EngineBinding(read_engine, commit_deadline=None)
        self.replica_wait = replica_wait
        self._lock = threading.Lock()
        self._written = 0  # the highest WAL position of a commit through this binding
        self._position_unknown = False  # a commit whose position could not be read
        self._paused_until = 0.0
        self._local = threading.local()  # the error this thread's last replica read raised
        # What the reads did, for tests and monitoring (approximate under threads):
        # on the replica, on the primary (asked or fallen back), after a wait for replay.
        self.counts = {"replica": 0, "primary": 0, "waited": 0}

    def _committed(self, connection: Connection) -> None:
        """Note the WAL position of the commit just made; never raises.

        The commit has succeeded: an error now (the connection lost right
        after COMMIT) must not reach ``run_write``, which would take it for a
        failure before the commit and write again. The position stays
        unknown instead, and reads go to the primary until a later commit's
        position is known.
        """
        if self._sqlite:
            return
        try:
            driver: Any = connection.connection.driver_connection
            if not driver.autocommit:
                # The transaction is over: asking in autocommit costs one round trip,
                # not three (the driver mode is put back when the connection returns).
                driver.autocommit = True
            position = int(connection.exec_driver_sql(_INSERT_POSITION).scalar_one())
        except Exception:  # see above: committed, position unknown
            with suppress(Exception):
                connection.invalidate()
            with self._lock:
                self._position_unknown = True
            return
        with self._lock:
            self._written = max(self._written, position)
            self._position_unknown = False

    @contextmanager
    def read(self, *, snapshot: bool = False, primary: bool = False) -> Iterator[Connection]:
        if primary or self._position_unknown or time.monotonic() < self._paused_until:
            self.counts["primary"] += 1
            with super().read(snapshot=snapshot) as connection:
                yield connection
            return
        target = self._written
        if target and not self._sqlite:
            try:
                caught_up = self._wait_for_replay(target)
            except DBAPIError:
                self._pause()
                caught_up = False
            if not caught_up:
                self.counts["primary"] += 1
                with super().read(snapshot=snapshot) as connection:
                    yield connection
                return
        self.counts["replica"] += 1
        try:
            with self.replica.read(snapshot=snapshot) as connection:
                yield connection
        except DBAPIError as exc:
            if _unreachable(exc):
                self._pause()
            self._local.failed = exc
            raise

    def retry_read(self, exc: DBAPIError) -> bool:
        # Whatever failed on the replica (a recovery conflict, a lost or refused
        # connection) is asked of the primary once; the primary's own failures
        # are retried as on any engine.
        if getattr(self._local, "failed", None) is exc:
            self._local.failed = None
            return True
        return super().retry_read(exc)

    def _wait_for_replay(self, target: int) -> bool:
        """Whether the replica has replayed up to ``target`` within ``replica_wait``.

        Asked in autocommit on a connection of its own, so a snapshot read
        that follows takes its snapshot after the replay, not before.
        """
        deadline = time.monotonic() + self.replica_wait
        pause = _FIRST_POLL
        waited = False
        with self.replica.read() as connection:
            while True:
                in_recovery, replayed = connection.exec_driver_sql(_REPLAY_POSITION).one()
                if not in_recovery or (replayed is not None and replayed >= target):
                    if waited:
                        self.counts["waited"] += 1
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                waited = True
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, _LONGEST_POLL)

    def _pause(self) -> None:
        self._paused_until = time.monotonic() + REPLICA_PAUSE


def _unreachable(exc: DBAPIError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return exc.connection_invalidated or sqlstate is None
