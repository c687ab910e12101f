"""The HTTP interface's types: query parameters and response models.

Amounts and ratios are JSON strings holding exact decimals with six places
(``"12.500000"``), never floats; timestamps are ISO-8601 UTC. Response
models read the service's records directly (``from_attributes``), so the
records stay the one definition of each field.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from tokenledger.domain.constants import MAX_BIGINT
from tokenledger.domain.records import StakeStatus, SupplyReport

__all__ = [
    "DEFAULT_EVENTS",
    "DEFAULT_LIMIT",
    "DEFAULT_WINDOW_HOURS",
    "MAX_LIMIT",
    "MAX_MOMENT_LENGTH",
    "MAX_WINDOW_HOURS",
    "AccountOut",
    "Amount",
    "ChainPosition",
    "DistributionOut",
    "EntryCursor",
    "EntryOut",
    "ErrorOut",
    "EventOut",
    "EventsPageOut",
    "HolderOut",
    "LedgerPageOut",
    "Limit",
    "PercentilesOut",
    "StakeOut",
    "StakesOut",
    "SupplyOut",
    "VelocityOut",
    "WindowHours",
    "supply_out",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
DEFAULT_WINDOW_HOURS = 24
MAX_WINDOW_HOURS = 24 * 365
# ISO-8601 times are short; a longer "since" is refused before parsing.
MAX_MOMENT_LENGTH = 64
# An account id is any text but NUL (PostgreSQL cannot store it).
ACCOUNT_ID_PATTERN = r"^[^\x00]+$"

# -- parameter types --------------------------------------------------------

# Query integers are digits only: pydantic alone would also take "+5", " 5",
# "5.0" and "1_000", which a client almost certainly did not mean. Twenty
# digits are enough for any BIGINT id; longer strings are refused unparsed.
_PLAIN_INTEGER = re.compile(r"[0-9]{1,20}")


def _plain_integer(value: object) -> object:
    if isinstance(value, str) and not _PLAIN_INTEGER.fullmatch(value):
        raise ValueError("must be a whole number written with the digits 0-9 only")
    return value


# The bounds go before the validator: pydantic then keeps them in the core
# schema, and OpenAPI shows them as "minimum"/"maximum".
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT), BeforeValidator(_plain_integer)]
WindowHours = Annotated[int, Field(ge=1, le=MAX_WINDOW_HOURS), BeforeValidator(_plain_integer)]
EntryCursor = Annotated[int, Field(ge=1, le=MAX_BIGINT), BeforeValidator(_plain_integer)]
ChainPosition = Annotated[int, Field(ge=0, le=MAX_BIGINT), BeforeValidator(_plain_integer)]
DEFAULT_EVENTS = 100

_DECIMAL_PATTERN = r"^[0-9]+\.[0-9]{6}$"
_DECIMAL_PATTERN = r"^[0-9]+\.[0-9]{6}$"


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


Amount = Annotated[
    Decimal,
    PlainSerializer(_decimal_text, return_type=str),
    Field(
        description="An exact token amount with six decimal places, as a string.",
        examples=["12.500000"],
        json_schema_extra={"type": "string", "pattern": _DECIMAL_PATTERN},
    ),
]
Ratio = Annotated[
    Decimal,
    PlainSerializer(_decimal_text, return_type=str),
    Field(
        description="A ratio rounded half-even to six decimal places, as a string.",
        examples=["0.250000"],
        json_schema_extra={"type": "string", "pattern": _DECIMAL_PATTERN},
    ),
]


# -- response models ----------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", from_attributes=True)


class ErrorOut(_Out):
    """Every error this API answers with."""

    detail: str = Field(description="What went wrong, in words.")


class AccountOut(_Out):
    """One account: its available balance and running totals."""

    account_id: str
    balance: Amount = Field(description="Available balance (staked tokens excluded).")
    total_earned: Amount
    total_spent: Amount
    total_staked: Amount = Field(description="Tokens locked in open stakes.")
    created_at: datetime
    updated_at: datetime


class EntryOut(_Out):
    """One journal entry: one token movement."""

    id: int
    timestamp: datetime
    from_account: str = Field(description='Sender; "system" for a mint.')
    to_account: str = Field(description='Receiver; "system" for a burn.')
    amount: Amount
    reason: str
    reference_type: str | None
    reference_id: str | None
    memo: str | None
    balance_after_from: Amount | None = Field(
        description="The sender's available balance after the entry; null on the system side."
    )
    balance_after_to: Amount | None = Field(
        description="The receiver's available balance after the entry; null on the system side."
    )
    stake_id: int | None = Field(description="The stake this entry locks, pays or returns.")
    reverses_entry_id: int | None = Field(description="The entry this one compensates.")
    tx_hash: str | None = Field(
        default=None,
        pattern=r"^0x[0-9a-f]{64}$",
        description="The transaction that applied the entry on the token contract "
        "(`tokenledger chain push`); null until it is on chain.",
    )


class EventOut(EntryOut):
    """One event of the feed: a sealed entry, with its place in the chain."""

    seq: int = Field(description="The entry's position in the sealed chain: 1, 2, 3, ... no gap.")
    chain_hash: str = Field(
        pattern=r"^0x[0-9a-f]{64}$",
        description="The chain's hash at that position: the entry's transaction id on chain.",
    )


class EventsPageOut(_Out):
    """Events in chain order, and the position to ask for the next ones after."""

    events: list[EventOut]
    next_after: int = Field(
        ge=0,
        description="Pass as `after` to get the next events (the last `seq` here, or the "
        "`after` asked for when there is none yet).",
    )


class LedgerPageOut(_Out):
    """A page of entries, newest first, and the cursor of the next page."""

    entries: list[EntryOut]
    next_before: int | None = Field(
        description="Pass as `before` to get the next page; null when this page is the last."
    )


class StakeOut(_Out):
    """Tokens of one account locked in a position."""

    id: int
    account_id: str
    amount: Amount
    status: StakeStatus
    reason: str
    reference_type: str | None
    reference_id: str | None
    memo: str | None
    expires_at: datetime | None
    created_at: datetime
    closed_at: datetime | None


class StakesOut(_Out):
    """A page of one account's stakes, oldest first, and the cursor of the next page."""

    stakes: list[StakeOut]
    next_after: int | None = Field(
        description="Pass as `after` to get the next page; null when this page is the last."
    )


class VelocityOut(_Out):
    """Token movement over the window [window_start, window_end]."""

    window_start: datetime
    window_end: datetime
    window_hours: int
    transfer_volume: Amount = Field(description="Tokens moved between accounts in the window.")
    velocity: Ratio = Field(description="transfer_volume / total_supply.")
    minted: Amount
    burned: Amount
    staked: Amount
    entries: int = Field(description="Journal entries in the window, of every kind.")


class HolderOut(_Out):
    account_id: str
    holdings: Amount = Field(description="Balance plus staked tokens.")
    share: Ratio = Field(description="holdings / total_supply.")


class PercentilesOut(_Out):
    """Nearest-rank percentiles of holdings over every account."""

    p50: Amount
    p90: Amount
    p99: Amount


class DistributionOut(_Out):
    gini: Ratio = Field(description="Gini coefficient of holdings over every account.")
    top_holders: list[HolderOut]
    percentiles: PercentilesOut


class SupplyOut(_Out):
    """How many tokens exist, where they sit, and how fast they move."""

    total_supply: Amount = Field(description="minted - burned = circulating + staked.")
    minted: Amount
    burned: Amount
    circulating: Amount = Field(description="The sum of available balances.")
    staked: Amount
    holders: int = Field(description="Accounts holding more than zero.")
    accounts: int
    velocity: VelocityOut
    distribution: DistributionOut


def supply_out(report: SupplyReport, window_hours: int) -> SupplyOut:
    """The supply report as its response (the window's length added to the velocity)."""
    velocity = VelocityOut.model_validate(
        {
            name: getattr(report.velocity, name)
            for name in VelocityOut.model_fields
            if name != "window_hours"
        }
        | {"window_hours": window_hours}
    )
    return SupplyOut.model_validate(
        {name: getattr(report, name) for name in SupplyOut.model_fields} | {"velocity": velocity}
    )
