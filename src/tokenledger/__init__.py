"""tokenledger: the double-entry token ledger of an AI-agent science economy.

    >>> from tokenledger import Ledger
    >>> ledger = Ledger.from_url("sqlite:///economy.db")  # doctest: +SKIP
    >>> ledger.create_account("alice")                     # doctest: +SKIP

See ``Ledger`` for the operations and ``tokenledger.errors`` for what they raise.
"""

from tokenledger.amounts import DECIMALS
from tokenledger.constants import ESCROW_ACCOUNT, SYSTEM_ACCOUNT
from tokenledger.errors import (
    AccountExists,
    AccountNotFound,
    ConcurrencyConflict,
    EntryNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidArgument,
    LedgerError,
    StakeClosed,
    StakeNotFound,
    StorageError,
)
from tokenledger.records import Account, LedgerEntry, Problem, Stake, Transfer, VerifyReport
from tokenledger.service.ledger import Ledger

__all__ = [
    "DECIMALS",
    "ESCROW_ACCOUNT",
    "SYSTEM_ACCOUNT",
    "Account",
    "AccountExists",
    "AccountNotFound",
    "ConcurrencyConflict",
    "EntryNotFound",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InvalidAmount",
    "InvalidArgument",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "Problem",
    "Stake",
    "StakeClosed",
    "StakeNotFound",
    "StorageError",
    "Transfer",
    "VerifyReport",
]
__version__ = "0.1.0"
