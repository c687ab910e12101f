"""The ledger's own commit deadline on PostgreSQL: a commit never hangs, never lies.

A commit under synchronous replication waits until a synchronous standby
confirms it, and waits forever when none is attached: ``statement_timeout``
does not apply to that wait. Cancelling the wait (``pg_cancel_backend``)
makes the COMMIT return success with only a warning although the entry is
not replicated, so a cancel would be a silent lie. The watchdog therefore
*terminates* the backend (``pg_terminate_backend``, from a separate
connection) once the deadline has passed, and shuts the client's socket down
too, so the waiting call returns even when the server cannot be reached to
terminate it. The call then reports the write as in doubt (``OutcomeUnknown``):
the entry may be committed on the primary, and only its idempotency key can
tell.

One daemon thread serves every guarded commit of the process (``WATCHDOG``,
started at the first one); it sleeps until the earliest deadline, so a
guarded commit costs a heap push and a dictionary removal, no thread and no
round trip. The backend's pid comes from the
driver (libpq knows it), also without a round trip.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
import weakref
from contextlib import suppress
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text

__all__ = ["WATCHDOG", "CommitWatchdog", "backend_pid"]

# Seconds the watchdog waits for pg_terminate_backend before it closes the socket anyway.
TERMINATE_WAIT = 2.0


def backend_pid(connection: Connection) -> int | None:
    """The server process serving ``connection`` (psycopg2 and psycopg 3), no round trip."""
    driver: Any = connection.connection.driver_connection
    info = getattr(driver, "info", None)
    pid = getattr(info, "backend_pid", None)
    if pid is None and hasattr(driver, "get_backend_pid"):
        pid = driver.get_backend_pid()
    return int(pid) if pid else None


class CommitWatchdog:
    """Terminates a backend whose guarded commit outlives its deadline."""

    def __init__(self) -> None:
        # A side engine per host engine, gone with it.
        self._sides: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
        self._sides_lock = threading.Lock()
        self._condition = threading.Condition()
        self._tokens = itertools.count(1)
        # token -> (engine, pid, socket descriptor); the heap orders tokens by due time
        self._watched: dict[int, tuple[Engine, int, int | None]] = {}
        self._due: list[tuple[float, int]] = []
        self._ending: set[int] = set()  # being terminated right now
        self._ended: set[int] = set()
        self._thread: threading.Thread | None = None

    def start(self, engine: Engine, connection: Connection, deadline: float) -> int | None:
        """Watch the commit about to run on ``connection`` of ``engine``; a token for ``stop``."""
        pid = backend_pid(connection)
        if pid is None:
            return None
        descriptor: int | None
        try:
            descriptor = int(connection.connection.dbapi_connection.fileno())  # type: ignore[union-attr]
        except Exception:
            descriptor = None
        with self._condition:
            token = next(self._tokens)
            self._watched[token] = (engine, pid, descriptor)
            if len(self._due) > 2 * len(self._watched) + 1024:
                # Commits that ended in time leave their due times behind: drop
                # them now and then (amortised), not only when the thread wakes.
                self._due = [item for item in self._due if item[1] in self._watched]
                heapq.heapify(self._due)
            heapq.heappush(self._due, (time.monotonic() + deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tokenledger-commit-watchdog", daemon=True
                )
                self._thread.start()
            elif self._due[0][1] == token:
                self._condition.notify()
        return token

    def stop(self, token: int | None) -> bool:
        """Stop watching; True when the deadline passed and the backend was (being) ended.

        Waits while a termination is in flight, so the connection is never
        handed back to the pool (and to another call) while it is being ended.
        """
        if token is None:
            return False
        with self._condition:
            self._watched.pop(token, None)
            while token in self._ending:
                self._condition.wait()
            if token in self._ended:
                self._ended.discard(token)
                return True
            return False

    def _run(self) -> None:
        while True:
            with self._condition:
                while True:
                    while self._due and self._due[0][1] not in self._watched:
                        heapq.heappop(self._due)  # stopped in time
                    if self._due and self._due[0][0] <= time.monotonic():
                        _, token = heapq.heappop(self._due)
                        engine, pid, descriptor = self._watched.pop(token)
                        self._ending.add(token)
                        break
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._condition.wait(timeout)
            # Each overdue commit is ended on a thread of its own: one whose
            # server cannot be reached must not delay the others.
            threading.Thread(
                target=self._finish,
                args=(token, engine, pid, descriptor),
                name="tokenledger-commit-ender",
                daemon=True,
            ).start()

    def _finish(self, token: int, engine: Engine, pid: int, descriptor: int | None) -> None:
        try:
            self._end(engine, pid, descriptor)
        finally:
            with self._condition:
                self._ending.discard(token)
                self._ended.add(token)
                self._condition.notify_all()

    def _end(self, engine: Engine, pid: int, descriptor: int | None) -> None:
        """Terminate the backend, then make sure the client side returns too."""

        def terminate() -> None:
            with suppress(Exception), self._side_engine(engine).connect() as side:
                side.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        # Terminating first lets the server release the backend's locks; the
        # server may be unreachable, so that gets a bounded wait, and the
        # socket below closes in any case.
        terminator = threading.Thread(target=terminate, daemon=True)
        terminator.start()
        terminator.join(TERMINATE_WAIT)
        if descriptor is not None:
            with suppress(OSError):
                # A duplicate of the driver's socket: shutting it down wakes the
                # driver's blocked read without closing the driver's descriptor.
                duplicate = socket.socket(fileno=os.dup(descriptor))
                try:
                    duplicate.shutdown(socket.SHUT_RDWR)
                finally:
                    duplicate.close()

    def _side_engine(self, engine: Engine) -> Engine:
        # A pool of its own, built from the engine's own pool (same connect
        # function and arguments), so a pool full of stuck commits cannot
        # starve the watchdog.
        with self._sides_lock:
            side = self._sides.get(engine)
            if side is None:
                side = create_engine(engine.url, pool=engine.pool.recreate())
                self._sides[engine] = side
            return side


# The one watchdog of the process.
WATCHDOG = CommitWatchdog()
