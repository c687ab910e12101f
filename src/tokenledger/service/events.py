"""The event feed: the sealed journal as one ordered, gap-free stream.

Every committed entry gets a position (``seq``) in the one sealed chain when
it is sealed, and positions never change: reading the chain in ``seq`` order
from any position yields every entry after it exactly once, with no gap,
whatever order concurrent writers committed in (the sealer only links
entries below its commit horizon; see docs/audit.md). ``events`` seals
first when it has caught up, so a reader never waits for a sealing service.

A ``Consumer`` is a durable, named position in that stream, stored in the
ledger's database (``token_consumers``). Committing a position inside the
host's own transaction (``ledger.using(connection).consumer(name)``) makes a
handler's effects and the position one commit: exactly-once processing.
See docs/events.md.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection

from tokenledger.domain import inputs
from tokenledger.domain.errors import ConsumerConflict, InvalidArgument
from tokenledger.domain.records import Event, event_from_row
from tokenledger.service.audit import AuditOperations
from tokenledger.storage.notifications import Waiter
from tokenledger.storage.repository import chain, consumers
from tokenledger.storage.transactions import run_read, run_write

__all__ = ["MAX_EVENTS", "MAX_WAIT", "POLL_INTERVAL", "Consumer", "EventOperations"]

MAX_EVENTS = 10_000  # events per call
MAX_WAIT = 3600.0  # seconds a call may wait for the first event
# How often a waiting reader looks (and seals) when no notice wakes it sooner.
POLL_INTERVAL = 0.25


class EventOperations(AuditOperations):
    """``events`` and ``consumer``: reading the feed, and durable positions in it."""

    def events(self, after: int = 0, limit: int = 100, *, wait: float | None = None) -> list[Event]:
        """The sealed entries after chain position ``after``, in chain order, at most ``limit``.

        Page with ``after`` set to the last ``seq`` seen: every committed
        entry comes exactly once, with no gap. Entries not sealed yet are
        sealed first (on a ledger bound to an engine; inside a caller's
        transaction, what is sealed is what is read).

        Args:
            after: the last position seen; 0 for the beginning.
            limit: at most this many events (1 to ``MAX_EVENTS``).
            wait: when there is nothing after ``after`` yet, wait up to this
                many seconds for the next event (woken by the sealer's notice
                on PostgreSQL, polling every ``POLL_INTERVAL`` everywhere)
                before answering with an empty list.

        Raises:
            InvalidArgument: a negative or non-integer ``after``, a bad
                ``limit`` or ``wait``, or ``wait`` inside a caller's transaction.
        """
        start = inputs.chain_position(after)
        count = inputs.limit(limit, maximum=MAX_EVENTS) or 100
        timeout = None if wait is None else inputs.seconds(wait, name="wait", maximum=MAX_WAIT)
        engine = self._engine
        if timeout and engine is None:
            raise InvalidArgument("waiting for events needs a ledger on an engine, not a caller's")
        page = self._page(start, count)
        if page or not timeout or engine is None:
            return page
        deadline = time.monotonic() + timeout
        with Waiter(engine, POLL_INTERVAL) as waiter:
            while (remaining := deadline - time.monotonic()) > 0:
                waiter.wait(remaining)
                page = self._page(start, count)
                if page:
                    return page
        return []

    def consumer(self, name: str) -> Consumer:
        """The durable consumer ``name`` (created at its first commit, at position 0 until then).

        Raises:
            InvalidArgument: a malformed name.
        """
        return Consumer(self, inputs.account_id(name, name="consumer name"))

    def _page(self, after: int, limit: int) -> list[Event]:
        def read(connection: Connection) -> list[Event]:
            return [
                event_from_row(row._mapping) for row in chain.links_after(connection, after, limit)
            ]

        page = run_read(self._binding, read)
        # Caught up: seal what has committed since, and read again if that added any.
        if len(page) < limit and self._engine is not None and self.seal():
            page = run_read(self._binding, read)
        return page


class Consumer:
    """A named, durable position in the event feed.

    ``poll`` reads the events after the position without moving it;
    ``commit(seq)`` moves it forward. On a ledger bound to the host's
    transaction (``ledger.using(connection).consumer(name)``), the commit is
    part of that transaction: the host's own writes and the position commit
    together or not at all.
    """

    def __init__(self, ledger: EventOperations, name: str) -> None:
        self._ledger = ledger
        self.name = name

    def position(self) -> int:
        """The chain position of the last event committed; 0 before the first."""
        return run_read(self._ledger._binding, lambda c: consumers.position(c, self.name))

    def poll(self, limit: int = 100, *, wait: float | None = None) -> list[Event]:
        """The events after the position (see ``Ledger.events``); the position does not move.

        Raises:
            InvalidArgument: a bad ``limit`` or ``wait``.
        """
        return self._ledger.events(self.position(), limit, wait=wait)

    def commit(self, seq: int) -> None:
        """Move the position to ``seq``: every event up to it is handled.

        Raises:
            InvalidArgument: ``seq`` is not a position of the sealed chain.
            ConsumerConflict: the position is already at or past ``seq`` (another
                instance handled these events): roll back what handled them again.
        """
        target = inputs.positive_id(seq, name="seq")

        def work(connection: Connection) -> None:
            head = chain.read_head(connection)
            if target > head.seq:
                raise InvalidArgument(f"seq {target} is past the sealed chain (at {head.seq})")
            if not consumers.advance(connection, self.name, target):
                raise ConsumerConflict(self.name, target, consumers.position(connection, self.name))

        run_write(self._ledger._binding, work)
