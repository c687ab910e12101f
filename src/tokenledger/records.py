"""What the service returns: frozen values, never live ORM objects.

Amounts are ``Decimal`` with six decimal places; timestamps are timezone-aware
UTC. A record stays valid after the transaction that produced it has closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

__all__ = ["Account", "LedgerEntry", "Problem", "Stake", "Transfer", "VerifyReport"]


@dataclass(frozen=True, slots=True)
class Account:
    """One agent's account. ``balance`` is available; staked tokens are apart."""

    account_id: str
    balance: Decimal
    total_earned: Decimal
    total_spent: Decimal
    total_staked: Decimal
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One row of the journal: one token movement, one on-chain transaction.

    ``balance_after_from``/``balance_after_to`` are the parties' available
    balances right after this entry; ``None`` on a reserved side (``system``
    or the stake escrow).
    """

    id: int
    timestamp: datetime
    from_account: str
    to_account: str
    amount: Decimal
    reason: str
    reference_type: str | None
    reference_id: str | None
    memo: str | None
    balance_after_from: Decimal | None
    balance_after_to: Decimal | None
    idempotency_key: str | None = None
    stake_id: int | None = None
    reverses_entry_id: int | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    """One transfer of a batch for ``Ledger.transfer_many`` (same fields as ``transfer``)."""

    from_id: str
    to_id: str
    amount: Any
    reason: str
    reference_type: str | None = None
    reference_id: str | None = None
    memo: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Stake:
    """Tokens of ``account_id`` locked in a position until resolved."""

    id: int
    account_id: str
    amount: Decimal
    status: str
    reason: str
    reference_type: str | None
    reference_id: str | None
    memo: str | None
    expires_at: datetime | None
    created_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing ``verify`` found wrong, and what it concerns."""

    kind: str
    message: str
    entry_id: int | None = None
    account_id: str | None = None
    stake_id: int | None = None
    checkpoint_id: int | None = None


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of ``Ledger.verify()``: ``ok`` only when no problem was found."""

    ok: bool
    problems: list[Problem]
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the report."""
        return {
            "ok": self.ok,
            "counts": dict(self.counts),
            "problems": [
                {k: v for k, v in vars_of(p).items() if v is not None} for p in self.problems
            ],
        }


def vars_of(record: Any) -> dict[str, Any]:
    """Field name to value for a slotted dataclass instance."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__}
