"""Group commit: one-entry writes from many threads, one server call and one commit.

A ``GroupCommitter`` serves every thread of one ``Ledger``. A call puts its
draft in the queue; if no batch is in flight it leads at once, so a call that
is alone goes straight to the database. Calls that arrive while a batch is in
flight wait for it and then go together: the first of them leads the next
batch (up to ``max_batch`` drafts) and hands on to whoever queued meanwhile,
so no call waits longer than the batch ahead of it plus its own, and no
thread serves other threads' calls for longer than one batch.

A batch is one transaction (``Poster.post_many``): each draft in it is
accepted or refused on its own, as if posted alone. What the batch as a
whole can fail with is settled per call:

* nothing committed (the database refused the statement, a deadlock that
  outlasted the retries, the server unreachable before the call): each call
  of the batch is posted again on its own, so one call's error never becomes
  another's;
* the outcome unknown (the connection died during the commit): a keyed call
  is posted again on its own, where its key finds the first try or writes it
  once; an unkeyed call raises ``OutcomeUnknown``, as it would alone.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

from tokenledger.domain.errors import InternalError, LedgerError, OutcomeUnknown
from tokenledger.domain.postings import Draft
from tokenledger.domain.records import LedgerEntry
from tokenledger.storage.posting import IdempotencyKeyTaken, Outcome

__all__ = ["MAX_GROUP", "GroupCommitter"]

# Drafts per batch: bounds one transaction's locks and the wait of its last call.
MAX_GROUP = 64

PostMany = Callable[[Sequence[Draft]], list[Outcome]]
PostAlone = Callable[[Draft], LedgerEntry]


class _Call:
    """One caller's draft, and what came of it."""

    __slots__ = ("draft", "leads", "outcome", "ready")

    def __init__(self, draft: Draft) -> None:
        self.draft = draft
        self.ready = threading.Event()  # set when settled, or when this call is to lead
        self.leads = False
        self.outcome: Outcome | BaseException | None = None

    def settle(self, outcome: Outcome | BaseException) -> None:
        self.outcome = outcome
        self.ready.set()

    def result(self) -> LedgerEntry:
        outcome = self.outcome
        if isinstance(outcome, LedgerEntry):
            return outcome
        if outcome is None:
            raise InternalError("a grouped call returned before it was settled")
        raise outcome


class GroupCommitter:
    """Coalesces concurrent one-entry writes into batches; see the module docstring.

    ``post_many`` writes a batch in one transaction (with ``run_write``'s
    retries); ``post_alone`` writes one draft in its own, exactly as a ledger
    without group commit does.
    """

    def __init__(
        self, post_many: PostMany, post_alone: PostAlone, *, max_batch: int = MAX_GROUP
    ) -> None:
        self._post_many = post_many
        self._post_alone = post_alone
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[_Call] = deque()
        self._leading = False  # a batch is in flight, or a call has been told to lead

    @property
    def waiting(self) -> int:
        """How many calls are queued behind the batch in flight."""
        with self._lock:
            return len(self._queue)

    def post(self, draft: Draft) -> LedgerEntry:
        """Write ``draft`` with whatever other calls are waiting; its entry.

        Raises:
            LedgerError: the draft is refused, or the write failed (as alone).
            IdempotencyKeyTaken: its key is already used by a committed entry.
        """
        call = _Call(draft)
        with self._lock:
            self._queue.append(call)
            lead = not self._leading
            self._leading = True
        if not lead:
            try:
                call.ready.wait()
            except BaseException:  # interrupted while queued: leave nothing stuck
                self._abandon(call)
                raise
            lead = call.leads
        if lead:
            self._lead()
        return call.result()

    def _lead(self) -> None:
        """Write the next batch (which holds the leading call), then hand on."""
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
        try:
            self._write(batch)
        finally:
            for call in batch:
                if call.outcome is None:  # the leader was interrupted before settling it
                    call.settle(
                        OutcomeUnknown(
                            "the call leading this call's batch was interrupted; the entry may "
                            "or may not be committed: retry with the same idempotency key"
                        )
                    )
            with self._lock:
                self._hand_on()

    def _hand_on(self) -> None:
        """Tell the first queued call to lead, or note that none is in flight (lock held)."""
        if self._queue:
            successor = self._queue[0]
            successor.leads = True
            successor.ready.set()
        else:
            self._leading = False

    def _abandon(self, call: _Call) -> None:
        """Take back a queued call whose thread was interrupted while it waited."""
        with self._lock:
            if call not in self._queue:
                return  # already in a batch: it is written, or settled, regardless
            self._queue.remove(call)
            if call.leads:
                self._hand_on()

    def _write(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            self._alone(batch[0])
            return
        try:
            outcomes = self._post_many([call.draft for call in batch])
        except OutcomeUnknown as unknown:
            for call in batch:
                if call.draft.idempotency_key is None:
                    call.settle(unknown)
                else:
                    self._alone(call)
            return
        except (LedgerError, IdempotencyKeyTaken):
            # Nothing was committed (a key taken by another transaction while
            # the batch ran fails its statement, too): each on its own.
            for call in batch:
                self._alone(call)
            return
        for call, outcome in zip(batch, outcomes, strict=True):
            call.settle(outcome)

    def _alone(self, call: _Call) -> None:
        try:
            call.settle(self._post_alone(call.draft))
        except (LedgerError, IdempotencyKeyTaken) as refused:
            call.settle(refused)
