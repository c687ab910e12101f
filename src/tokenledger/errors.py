"""The errors a ledger call can raise (see ``tokenledger.domain.errors`` for the tree)."""

from tokenledger.domain.errors import (
    AccountExists,
    AccountNotFound,
    ConcurrencyConflict,
    ConsumerConflict,
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
    "ConsumerConflict",
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
