"""A posting: the entries of one operation, computed against locked accounts.

The storage layer locks the accounts an operation touches and reads their
figures and the database's clock; a ``Posting`` over those figures adds each
entry in turn (``books.apply_entry``), refusing an overdraft or a figure past
the storable maximum. Nothing is written if any entry is refused. This is the
Python half of the posting rule; PostgreSQL's one-entry server function is
the other, and ``tests/test_posting_parity.py`` holds them to one answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tokenledger.domain.amounts import MAX_UNITS, format_amount, from_units
from tokenledger.domain.books import Balances, apply_entry
from tokenledger.domain.constants import ESCROW_ACCOUNT, is_reserved
from tokenledger.domain.errors import AccountNotFound, InsufficientFunds, InvalidAmount

__all__ = ["Draft", "Locked", "Posting", "not_before"]


@dataclass(frozen=True, slots=True)
class Draft:
    """An entry as the caller asked for it, validated, amount in base units.

    Its fields are ``entries.DRAFT_COLUMNS``.
    """

    from_account: str
    to_account: str
    amount: int
    reason: str
    reference_type: str | None = None
    reference_id: str | None = None
    memo: str | None = None
    idempotency_key: str | None = None
    stake_id: int | None = None
    reverses_entry_id: int | None = None

    def as_row(self) -> dict[str, Any]:
        """The draft's journal columns (``dataclasses.asdict`` is slow on the hot path)."""
        return {
            "from_account": self.from_account,
            "to_account": self.to_account,
            "amount": self.amount,
            "reason": self.reason,
            "reference_type": self.reference_type,
            "reference_id": self.reference_id,
            "memo": self.memo,
            "idempotency_key": self.idempotency_key,
            "stake_id": self.stake_id,
            "reverses_entry_id": self.reverses_entry_id,
        }

    def accounts(self, stake_owner: str | None = None) -> set[str]:
        """The account rows this entry changes (and so must lock)."""
        touched = {p for p in (self.from_account, self.to_account) if not is_reserved(p)}
        if stake_owner is not None and ESCROW_ACCOUNT in (self.from_account, self.to_account):
            touched.add(stake_owner)
        return touched


@dataclass(frozen=True, slots=True)
class Locked:
    """Accounts locked for one transaction: their figures and the database's clock.

    ``now`` is the clock when the locks were taken; ``timestamp`` is the time
    the transaction's entries carry: ``now``, but never before the last change
    of a locked account (see ``not_before``).
    """

    figures: dict[str, Balances]
    now: datetime
    timestamp: datetime

    def posting(self) -> Posting:
        """A posting over these figures (which it then owns)."""
        return Posting(self.figures, self.timestamp)

    def require(self, *account_ids: str) -> None:
        """Raise ``AccountNotFound`` for the first of ``account_ids`` with no locked row."""
        for account_id in sorted(account_ids):
            if account_id not in self.figures:
                raise AccountNotFound(account_id)


class Posting:
    """Entries computed in order against the figures of locked accounts.

    The posting takes ownership of ``locked`` and changes it in place: pass
    figures just read for this transaction, not figures shared elsewhere.
    ``timestamp`` is the time every entry of the posting carries.
    """

    def __init__(self, locked: dict[str, Balances], timestamp: datetime) -> None:
        self.books = locked
        self.timestamp = timestamp
        self.rows: list[dict[str, Any]] = []
        self.changed: set[str] = set()

    def add(self, draft: Draft, *, stake_owner: str | None = None) -> dict[str, Any]:
        """Compute one entry; refuse it if a party is unknown or a figure leaves its range.

        Raises:
            AccountNotFound: a party has no locked account (it does not exist).
            InsufficientFunds: an available balance would go below zero.
            InvalidAmount: a figure would pass the storable maximum.
        """
        touched = draft.accounts(stake_owner)
        for account_id in sorted(touched):
            if account_id not in self.books:
                raise AccountNotFound(account_id)
        # A refused entry leaves the posting unusable; the transaction rolls back.
        after_from, after_to = apply_entry(
            self.books, draft.from_account, draft.to_account, draft.amount, stake_owner
        )
        for account_id in sorted(touched):
            b = self.books[account_id]
            if b.balance < 0:
                raise InsufficientFunds(
                    account_id, from_units(b.balance + draft.amount), from_units(draft.amount)
                )
            if max(b.balance, b.total_earned, b.total_spent, b.total_staked) > MAX_UNITS:
                raise InvalidAmount(
                    f"the entry would take a figure of {account_id!r} past the storable "
                    f"maximum of {format_amount(MAX_UNITS)} tokens"
                )
        self.changed |= touched
        row = {
            **draft.as_row(),
            "timestamp": self.timestamp,
            "balance_after_from": after_from,
            "balance_after_to": after_to,
        }
        self.rows.append(row)
        return row

    def changed_books(self) -> dict[str, Balances]:
        """The new figures of every account an entry changed, in id order."""
        return {account_id: self.books[account_id] for account_id in sorted(self.changed)}


def not_before(now: datetime, *moments: datetime | None) -> datetime:
    """``now``, but never earlier than any of ``moments``.

    Entry timestamps must not go back within an account (statements and
    as-of balances order by them); a clock that steps back must not break
    that, so an entry is dated no earlier than the last change of any account
    it touches.
    """
    return max([now, *(m for m in moments if m is not None)])
