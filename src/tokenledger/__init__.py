"""tokenledger: the double-entry token ledger of an AI-agent science economy.

    >>> from tokenledger import Ledger
    >>> ledger = Ledger.from_url("sqlite:///economy.db")  # doctest: +SKIP
    >>> ledger.create_account("alice")                     # doctest: +SKIP

See ``Ledger`` for the operations and ``tokenledger.errors`` for what they
raise. The package's layers, top to bottom: the interfaces (``api``, ``cli``,
``token_ledger``), ``service`` (the ``Ledger``), ``storage`` (transactions,
the posting adapters, the repository) and ``schema`` (migrations), all over
``domain`` (amounts, the books' arithmetic, records, errors, hashing).
"""

from tokenledger.domain.amounts import DECIMALS
from tokenledger.domain.constants import ESCROW_ACCOUNT, SYSTEM_ACCOUNT
from tokenledger.domain.errors import (
    AccountExists,
    AccountNotFound,
    ChainError,
    ChainReverted,
    ChainUnavailable,
    ConcurrencyConflict,
    ConsumerConflict,
    EntryNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InternalError,
    InvalidAmount,
    InvalidArgument,
    LedgerError,
    NotDeployed,
    NotSealed,
    OutcomeUnknown,
    ReplicationUnavailable,
    StakeClosed,
    StakeExpired,
    StakeNotFound,
    StorageError,
    WrongChain,
)
from tokenledger.domain.records import (
    Account,
    ChainReceipt,
    Checkpoint,
    Deployment,
    Distribution,
    Event,
    Holder,
    InclusionProof,
    LedgerEntry,
    Mismatch,
    Problem,
    Stake,
    SupplyReport,
    Transfer,
    Velocity,
    VerifyReport,
)
from tokenledger.service.ledger import Ledger

__all__ = [
    "DECIMALS",
    "ESCROW_ACCOUNT",
    "SYSTEM_ACCOUNT",
    "Account",
    "AccountExists",
    "AccountNotFound",
    "ChainError",
    "ChainReceipt",
    "ChainReverted",
    "ChainUnavailable",
    "Checkpoint",
    "ConcurrencyConflict",
    "ConsumerConflict",
    "Deployment",
    "Distribution",
    "EntryNotFound",
    "Event",
    "Holder",
    "IdempotencyConflict",
    "InclusionProof",
    "InsufficientFunds",
    "InternalError",
    "InvalidAmount",
    "InvalidArgument",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "Mismatch",
    "NotDeployed",
    "NotSealed",
    "OutcomeUnknown",
    "Problem",
    "ReplicationUnavailable",
    "Stake",
    "StakeClosed",
    "StakeExpired",
    "StakeNotFound",
    "StorageError",
    "SupplyReport",
    "Transfer",
    "Velocity",
    "VerifyReport",
    "WrongChain",
]
__version__ = "0.1.0"
