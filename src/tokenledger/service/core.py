"""What every part of the ``Ledger`` shares: its binding and the write path.

``LedgerCore`` holds how the ledger reaches the database (an engine, or a
caller's connection or session) and the steps every write goes through:
lock, compute a ``Posting``, append, save. ``Ledger`` (ledger.py) and its
sibling operation sets (stakes.py, audit.py, analytics.py) build on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Row
from sqlalchemy.orm import Session

from tokenledger import inputs
from tokenledger.amounts import AmountInput, to_units
from tokenledger.errors import AccountNotFound, IdempotencyConflict
from tokenledger.records import LedgerEntry
from tokenledger.repository import accounts, journal
from tokenledger.service.postings import Draft, Posting, entry_record, now_after
from tokenledger.service.unit_of_work import (
    Binding,
    EngineBinding,
    IdempotencyKeyTaken,
    binding_for,
    owned_transaction,
    run_read,
    run_write,
)
from tokenledger.storage import create_engine

__all__ = ["LedgerCore", "check_same_request"]

T = TypeVar("T")
Self = TypeVar("Self", bound="LedgerCore")

_IDEMPOTENT_FIELDS = (
    "from_account",
    "to_account",
    "amount",
    "reason",
    "reference_type",
    "reference_id",
    "memo",
)


class LedgerCore:
    """The ledger's binding and shared write path; see ``Ledger``.

    ``Ledger(engine)`` runs each call in its own transaction.
    ``ledger.using(connection_or_session)`` runs calls inside a transaction
    the caller owns; ``with ledger.transaction() as tx:`` groups several
    calls into one transaction that commits when the block ends.
    """

    def __init__(self, bind: Engine | Connection | Session) -> None:
        self._binding: Binding = binding_for(bind)
        self._engine: Engine | None = bind if isinstance(bind, Engine) else None

    @classmethod
    def from_url(cls: type[Self], url: str, **engine_options: Any) -> Self:
        """A ledger on a new engine for ``url`` (see ``tokenledger.storage.create_engine``)."""
        return cls(create_engine(url, **engine_options))

    @property
    def engine(self) -> Engine | None:
        """The engine this ledger opens transactions on (``None`` when bound to a caller's)."""
        return self._engine

    def using(self: Self, bind: Connection | Session) -> Self:
        """This ledger working inside the caller's transaction, which it never commits."""
        if not isinstance(bind, Connection | Session):
            raise TypeError("using() takes a Connection or a Session")
        return type(self)(bind)

    @contextmanager
    def transaction(self: Self) -> Iterator[Self]:
        """Several calls, one transaction: all commit at the end of the block, or none.

        Deadlocks are not retried inside the block (the block's own code would
        have to run again); they surface as ``ConcurrencyConflict``.
        """
        if not isinstance(self._binding, EngineBinding):
            yield self  # already inside the caller's transaction
            return
        with owned_transaction(self._binding) as connection:
            yield type(self)(connection)

    def dispose(self) -> None:
        """Close the pooled connections of an engine this ledger created."""
        if self._engine is not None:
            self._engine.dispose()

    # -- internals shared with the sibling modules --------------------------

    def _draft(
        self,
        sender: str,
        receiver: str,
        amount: AmountInput,
        reason: str,
        reference_type: str | None,
        reference_id: str | None,
        memo: str | None,
        idempotency_key: str | None,
        **links: int | None,
    ) -> Draft:
        return Draft(
            from_account=sender,
            to_account=receiver,
            amount=to_units(amount),
            reason=inputs.reason(reason),
            reference_type=inputs.optional_text(reference_type, name="reference_type"),
            reference_id=inputs.optional_text(reference_id, name="reference_id"),
            memo=inputs.memo(memo),
            idempotency_key=inputs.optional_text(idempotency_key, name="idempotency_key"),
            **links,
        )

    def _post_one(self, draft: Draft) -> LedgerEntry:
        """Write a single-entry operation (transfer, mint, burn)."""
        key = draft.idempotency_key

        def replay(_: Connection, rows: Sequence[Row[Any]]) -> LedgerEntry:
            check_same_request(key or "", rows, draft)
            return entry_record(rows[0])

        def work(connection: Connection) -> LedgerEntry:
            if key is not None:
                earlier = journal.by_idempotency_key(connection, key)
                if earlier:
                    return replay(connection, earlier)
            posting = self._open_posting(connection, draft.accounts())
            row = posting.add(draft)
            (entry_id,) = self._write_posting(connection, posting)
            return entry_record(row, entry_id)

        return self._idempotent_write(work, key, replay)

    def _idempotent_write(
        self,
        work: Callable[[Connection], T],
        key: str | None,
        replay: Callable[[Connection, Sequence[Row[Any]]], T],
    ) -> T:
        """Run ``work``; if a concurrent call won the race for ``key``, answer as it did."""
        try:
            return run_write(self._binding, work, idempotent=key is not None)
        except IdempotencyKeyTaken:
            if key is None:  # only keyed writes can collide on a key
                raise
            return run_read(self._binding, lambda c: replay(c, journal.by_idempotency_key(c, key)))

    @staticmethod
    def _open_posting(connection: Connection, account_ids: set[str]) -> Posting:
        """Lock the accounts (all must exist) and start a posting on their figures.

        The posting's timestamp is now, but never before the last change of
        any locked account, so an account's entries never go back in time.
        """
        locked = accounts.lock(connection, account_ids)
        for account_id in sorted(account_ids):
            if account_id not in locked:
                raise AccountNotFound(account_id)
        return Posting(
            {account_id: accounts.balances_of(row) for account_id, row in locked.items()},
            now_after(*(row.updated_at for row in locked.values())),
        )

    @staticmethod
    def _write_posting(connection: Connection, posting: Posting) -> list[int]:
        ids = journal.append(connection, posting.rows)
        accounts.save(connection, posting.changed_books(), posting.timestamp)
        return ids


def check_same_request(key: str, earlier: Sequence[Row[Any]], draft: Draft) -> None:
    """Raise ``IdempotencyConflict`` unless ``draft`` repeats what ``earlier`` recorded."""
    first = earlier[0]._mapping
    differing = [name for name in _IDEMPOTENT_FIELDS if first[name] != getattr(draft, name)]
    if differing:
        raise IdempotencyConflict(key, "differs in " + ", ".join(differing))
