"""The errors a ledger call can raise (see ``tokenledger.domain.errors`` for the tree)."""

from tokenledger.domain.errors import (
    AccountExists,
    AccountNotFound,
    ConcurrencyConflict,
    EntryNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InternalError,
    InvalidAmount,
    InvalidArgument,
    LedgerError,
    NotSealed,
    StakeClosed,
    StakeExpired,
    StakeNotFound,
    StorageError,
)

__all__ = [
    "AccountExists",
    "AccountNotFound",
    "ConcurrencyConflict",
    "EntryNotFound",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InternalError",
    "InvalidAmount",
    "InvalidArgument",
    "LedgerError",
    "NotSealed",
    "StakeClosed",
    "StakeExpired",
    "StakeNotFound",
    "StorageError",
]
