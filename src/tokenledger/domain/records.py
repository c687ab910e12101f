"""What the ledger returns: frozen values, never live ORM objects.

Amounts are ``Decimal`` with six decimal places; timestamps are timezone-aware
UTC. A record stays valid after the transaction that produced it has closed.
The ``*_from_row`` functions build records from stored rows (a mapping of
column name to value, as the storage layer reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from tokenledger.domain.amounts import AmountInput, from_units

__all__ = [
    "Account",
    "ChainEntry",
    "ChainReceipt",
    "Checkpoint",
    "Deployment",
    "Distribution",
    "Event",
    "Holder",
    "InclusionProof",
    "LedgerEntry",
    "Mismatch",
    "Problem",
    "Stake",
    "StakeStatus",
    "SupplyReport",
    "Transfer",
    "Velocity",
    "VerifyReport",
    "account_from_row",
    "entry_from_row",
    "event_from_row",
    "jsonable",
    "stake_from_row",
]

StakeStatus = Literal["open", "settled", "released", "expired"]


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

    Its fields are ``entries.ENTRY_COLUMNS``. ``balance_after_from`` /
    ``balance_after_to`` are the parties' available balances right after this
    entry; ``None`` on a reserved side (``system`` or the stake escrow).
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
class Event(LedgerEntry):
    """One event of the feed: a sealed entry's fields, beside its place in the chain.

    ``seq`` is the entry's position in the one sealed chain (1, 2, 3, ... with
    no gap), the order events are delivered in; ``chain_hash`` is the chain's
    hash at that position (``0x`` + 64 hex), the entry's transaction id in the
    on-chain mapping.
    """

    seq: int = 0
    chain_hash: str = ""


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """A sealed entry as the token contract applies it: addresses and an 18-decimal value.

    ``sender`` is the zero address for a mint, ``receiver`` for a burn;
    ``ledger_time`` is the entry's timestamp in Unix seconds.
    """

    seq: int
    chain_hash: str
    entry_id: int
    sender: str
    receiver: str
    value: int
    ledger_time: int


@dataclass(frozen=True, slots=True)
class ChainReceipt:
    """Where an entry landed on chain: its transaction and its ``Transfer`` log."""

    entry_id: int
    seq: int
    chain_id: int
    contract: str
    tx_hash: str
    block_number: int
    log_index: int
    status: int


@dataclass(frozen=True, slots=True)
class Deployment:
    """A token contract deployed for the ledger (``tokenledger chain deploy``)."""

    id: int
    chain_id: int
    address: str
    operator: str
    tx_hash: str
    block_number: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Transfer:
    """One transfer of a batch for ``Ledger.transfer_many`` (same fields as ``transfer``)."""

    from_id: str
    to_id: str
    amount: AmountInput
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
    status: StakeStatus
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
        """A JSON-ready form of the report (problems without their empty fields)."""
        return {
            "ok": self.ok,
            "counts": dict(self.counts),
            "problems": [
                {k: v for k, v in jsonable(p).items() if v is not None} for p in self.problems
            ],
        }


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A Merkle root over chain positions ``first_seq``..``last_seq``.

    ``chain_hash`` is the chain's hash at ``last_seq``. Kept outside the
    database, it is an anchor that ``verify(anchor=...)`` checks the books
    against.
    """

    id: int
    first_seq: int
    last_seq: int
    merkle_root: str
    chain_hash: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Everything ``tokenledger.chain.verify_inclusion`` needs, for one entry."""

    entry_id: int
    seq: int
    entry_hash: str
    checkpoint_id: int
    index: int
    size: int
    path: list[str]
    merkle_root: str


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One address whose on-chain balance differs from the ledger's."""

    address: str
    account_id: str | None
    ledger_value: int
    chain_value: int


@dataclass(frozen=True, slots=True)
class Velocity:
    """Token movement in a window: transfers between accounts over the supply."""

    window_start: datetime
    window_end: datetime
    transfer_volume: Decimal
    velocity: Decimal
    minted: Decimal
    burned: Decimal
    staked: Decimal
    entries: int


@dataclass(frozen=True, slots=True)
class Holder:
    """One account's holdings (balance plus staked) and its share of the supply."""

    account_id: str
    holdings: Decimal
    share: Decimal


@dataclass(frozen=True, slots=True)
class Distribution:
    """How holdings (balance + staked) spread over accounts."""

    gini: Decimal
    top_holders: list[Holder]
    percentiles: dict[str, Decimal]


@dataclass(frozen=True, slots=True)
class SupplyReport:
    """How many tokens exist, where they sit, and how fast they move."""

    total_supply: Decimal
    minted: Decimal
    burned: Decimal
    circulating: Decimal
    staked: Decimal
    holders: int
    accounts: int
    velocity: Velocity
    distribution: Distribution


def _units(value: int | None) -> Decimal | None:
    return None if value is None else from_units(value)


def entry_from_row(m: Mapping[Any, Any]) -> LedgerEntry:
    """A stored (or just computed) journal row as a ``LedgerEntry``."""
    return LedgerEntry(
        id=m["id"],
        timestamp=m["timestamp"],
        from_account=m["from_account"],
        to_account=m["to_account"],
        amount=from_units(m["amount"]),
        reason=m["reason"],
        reference_type=m["reference_type"],
        reference_id=m["reference_id"],
        memo=m["memo"],
        balance_after_from=_units(m["balance_after_from"]),
        balance_after_to=_units(m["balance_after_to"]),
        idempotency_key=m.get("idempotency_key"),
        stake_id=m.get("stake_id"),
        reverses_entry_id=m.get("reverses_entry_id"),
    )


def event_from_row(m: Mapping[Any, Any]) -> Event:
    """A chain link joined to its entry (``seq``, ``chain_hash``, the entry's columns)."""
    entry = entry_from_row(m)
    return Event(
        **{f.name: getattr(entry, f.name) for f in fields(LedgerEntry)},
        seq=m["seq"],
        chain_hash="0x" + m["chain_hash"],
    )


def account_from_row(m: Mapping[Any, Any]) -> Account:
    """A stored ``token_accounts`` row as an ``Account``."""
    return Account(
        account_id=m["account_id"],
        balance=from_units(m["balance"]),
        total_earned=from_units(m["total_earned"]),
        total_spent=from_units(m["total_spent"]),
        total_staked=from_units(m["total_staked"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def stake_from_row(m: Mapping[Any, Any]) -> Stake:
    """A stored ``token_stakes`` row as a ``Stake``."""
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


def jsonable(value: Any) -> Any:
    """A record, or a structure of records, as JSON-ready values.

    Amounts become strings holding the exact decimal (``"12.500000"``), times
    ISO-8601 strings; the one serialisation the CLI and reports share.
    """
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    return value
