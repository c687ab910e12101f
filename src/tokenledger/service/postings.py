"""A posting: the entries of one operation, computed against locked accounts.

The service locks the accounts an operation touches, builds a ``Posting``
from their current figures, adds each entry (which checks funds and range),
and hands the result to the repository to write. Nothing is written if any
entry is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from tokenledger.amounts import MAX_UNITS, format_amount, from_units
from tokenledger.books import Balances, apply_entry
from tokenledger.constants import ESCROW_ACCOUNT, is_reserved
from tokenledger.errors import InsufficientFunds, InvalidAmount
from tokenledger.records import Account, LedgerEntry, Stake

__all__ = ["Draft", "Posting", "account_record", "entry_record", "now_after", "stake_record"]


@dataclass(frozen=True, slots=True)
class Draft:
    """An entry as the caller asked for it, validated, amount in base units."""

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


class Posting:
    """Entries computed in order against the balances of locked accounts.

    The posting takes ownership of ``locked`` and changes it in place: pass
    figures just read for this transaction, not figures shared elsewhere.
    """

    def __init__(self, locked: dict[str, Balances], timestamp: datetime) -> None:
        self.books = locked
        self.timestamp = timestamp
        self.rows: list[dict[str, Any]] = []
        self.changed: set[str] = set()

    def add(self, draft: Draft, *, stake_owner: str | None = None) -> dict[str, Any]:
        """Compute one entry; refuse it if a balance would go negative or overflow."""
        touched = draft.accounts(stake_owner)
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
        return {account_id: self.books[account_id] for account_id in sorted(self.changed)}


def now_after(*moments: datetime | None) -> datetime:
    """The current UTC time, but never earlier than any of ``moments``.

    Entry timestamps must not go back within an account (statements and
    as-of balances order by them); a clock that steps back, or another
    host's clock, must not break that.
    """
    now = datetime.now(UTC)
    latest = max((m for m in moments if m is not None), default=now)
    return max(now, latest)


def entry_record(row: Row[Any] | dict[str, Any], entry_id: int | None = None) -> LedgerEntry:
    """A journal row (from the database, or just written) as a ``LedgerEntry``."""
    m = row._mapping if isinstance(row, Row) else row
    after_from = m["balance_after_from"]
    after_to = m["balance_after_to"]
    return LedgerEntry(
        id=entry_id if entry_id is not None else m["id"],
        timestamp=m["timestamp"],
        from_account=m["from_account"],
        to_account=m["to_account"],
        amount=from_units(m["amount"]),
        reason=m["reason"],
        reference_type=m["reference_type"],
        reference_id=m["reference_id"],
        memo=m["memo"],
        balance_after_from=None if after_from is None else from_units(after_from),
        balance_after_to=None if after_to is None else from_units(after_to),
        idempotency_key=m.get("idempotency_key"),
        stake_id=m.get("stake_id"),
        reverses_entry_id=m.get("reverses_entry_id"),
    )


def account_record(row: Row[Any]) -> Account:
    m = row._mapping
    return Account(
        account_id=m["account_id"],
        balance=from_units(m["balance"]),
        total_earned=from_units(m["total_earned"]),
        total_spent=from_units(m["total_spent"]),
        total_staked=from_units(m["total_staked"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def stake_record(row: Row[Any]) -> Stake:
    m = row._mapping
    return Stake(
        id=m["id"],
        account_id=m["account_id"],
        amount=from_units(m["amount"]),
        status=m["status"],
        reason=m["reason"],
        reference_type=m["reference_type"],
        reference_id=m["reference_id"],
        memo=m["memo"],
        expires_at=m["expires_at"],
        created_at=m["created_at"],
        closed_at=m["closed_at"],
    )
