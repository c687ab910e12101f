"""Reserved account ids and field limits, shared by every layer."""

from __future__ import annotations

__all__ = [
    "ESCROW_ACCOUNT",
    "MAX_BIGINT",
    "MAX_ID_LENGTH",
    "MAX_MEMO_LENGTH",
    "RESERVED_PREFIX",
    "SYSTEM_ACCOUNT",
    "is_reserved",
]

# The mint/burn counterparty: the zero address on chain. It has no account row.
SYSTEM_ACCOUNT = "system"
# Every id that starts with this prefix is reserved for the ledger itself.
RESERVED_PREFIX = "system:"
# Where staked tokens sit between stake and resolution, like a staking
# contract's address. It has no account row either: each stake row says
# whose tokens it holds.
ESCROW_ACCOUNT = "system:escrow"

# The largest value of a signed 64-bit integer (BIGINT): ids, amounts, balances.
MAX_BIGINT = 2**63 - 1

MAX_ID_LENGTH = 255  # account ids, reasons, references, idempotency keys
MAX_MEMO_LENGTH = 4096


def is_reserved(account_id: str) -> bool:
    """True for ``system`` and every ``system:``-prefixed id."""
    return account_id == SYSTEM_ACCOUNT or account_id.startswith(RESERVED_PREFIX)
