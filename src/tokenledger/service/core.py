"""What every part of the ``Ledger`` shares: its binding and the write path.

``LedgerCore`` holds how the ledger reaches the database (an engine, or a
caller's connection or session) and the steps every write goes through:
lock, compute a ``Posting``, append, save. ``Ledger`` (ledger.py) and its
sibling operation sets (stakes.py, audit.py, analytics.py) build on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Row
from sqlalchemy.orm import Session

from tokenledger import inputs
from tokenledger.amounts import AmountInput, to_units
from tokenledger.books import Balances
from tokenledger.errors import AccountNotFound, IdempotencyConflict, LedgerError, StorageError
from tokenledger.records import LedgerEntry
from tokenledger.repository import accounts, journal, single_entry
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
R = TypeVar("R")
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
        self._dialect = (bind.get_bind() if isinstance(bind, Session) else bind).dialect.name

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
        """Write a single-entry operation (transfer, mint, burn) on the hot path."""
        key = draft.idempotency_key
        parties = sorted(draft.accounts())
        postgresql = self._dialect == "postgresql"

        def replay(_: Connection, rows: Sequence[Row[Any]]) -> LedgerEntry:
            check_same_request(key or "", rows, draft)
            return entry_record(rows[0])

        def work(cursor: Any) -> LedgerEntry | _Earlier:
            if postgresql:
                outcome = single_entry.post_postgresql(
                    cursor,
                    sender=draft.from_account,
                    receiver=draft.to_account,
                    amount=draft.amount,
                    reason=draft.reason,
                    reference_type=draft.reference_type,
                    reference_id=draft.reference_id,
                    memo=draft.memo,
                    key=key,
                )
                if outcome.prior_id is not None:
                    return _Earlier()
                if outcome.entry_id is None:
                    raise _refusal(draft, outcome.locked)
                return entry_record(
                    {
                        **draft.as_row(),
                        "timestamp": outcome.timestamp,
                        "balance_after_from": outcome.balance_after_from,
                        "balance_after_to": outcome.balance_after_to,
                    },
                    outcome.entry_id,
                )
            prior, locked = single_entry.lock_sqlite(cursor, parties, key)
            if prior is not None:
                return _Earlier()
            posting = _posting_on(draft, locked)
            row = posting.add(draft)
            entry_id = single_entry.write_sqlite(cursor, row, posting.changed_books())
            return entry_record(row, entry_id)

        result = self._idempotent_write(work, key, replay, driver=True)
        if isinstance(result, _Earlier):
            return self._replay_key(key, replay)
        return result

    def _replay_key(
        self, key: str | None, replay: Callable[[Connection, Sequence[Row[Any]]], T]
    ) -> T:
        if key is None:  # pragma: no cover - only keyed writes find an earlier entry
            raise RuntimeError("an earlier entry was reported for a write without a key")
        return run_read(self._binding, lambda c: replay(c, journal.by_idempotency_key(c, key)))

    def _idempotent_write(
        self,
        work: Callable[[Any], R],
        key: str | None,
        replay: Callable[[Connection, Sequence[Row[Any]]], T],
        *,
        driver: bool = False,
    ) -> R | T:
        """Run ``work``; if a concurrent call won the race for ``key``, answer as it did."""
        try:
            return run_write(self._binding, work, idempotent=key is not None, driver=driver)
        except IdempotencyKeyTaken:
            if key is None:  # only keyed writes can collide on a key
                raise
            return self._replay_key(key, replay)

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


class _Earlier:
    """The hot path found an entry already written under the idempotency key."""


def _posting_on(draft: Draft, locked: dict[str, tuple[Balances, datetime]]) -> Posting:
    """A posting over figures the hot path read; every party must exist."""
    for account_id in sorted(draft.accounts()):
        if account_id not in locked:
            raise AccountNotFound(account_id)
    return Posting(
        {account_id: figures for account_id, (figures, _) in locked.items()},
        now_after(*(moment for _, moment in locked.values())),
    )


def _refusal(draft: Draft, locked: dict[str, tuple[Balances, datetime]]) -> LedgerError:
    """Why the database refused a one-entry write, from the figures it locked."""
    try:
        _posting_on(draft, locked).add(draft)
    except LedgerError as exc:
        return exc
    return StorageError("the database refused the write but its figures allow it; retry")
