"""The errors a ledger call can raise.

Every error derives from :class:`LedgerError`, and a call that raises one has
changed nothing in the database::

    LedgerError
    ├── AccountNotFound          (also LookupError)
    ├── AccountExists
    ├── InsufficientFunds
    ├── InvalidArgument          (also ValueError)
    │   ├── InvalidAmount
    │   └── NotSealed            the entry is not in the chain, or under a checkpoint, yet
    ├── IdempotencyConflict
    ├── StakeNotFound            (also LookupError)
    ├── StakeClosed
    │   └── StakeExpired         past its expiry: it can only be released or expired
    ├── EntryNotFound            (also LookupError)
    ├── ConsumerConflict         the event consumer is already at or past that position
    ├── ChainError               the chain bridge failed (extra ``chain``)
    │   ├── ChainUnavailable     the node could not be reached, or refused a request
    │   ├── WrongChain           the node's chain id is not the deployment's
    │   ├── NotDeployed          no token contract recorded, or none at its address
    │   └── ChainReverted        a transaction was mined with status 0
    ├── InternalError            the ledger contradicted itself (a bug); nothing was written
    └── StorageError             the database failed or could not be reached
        ├── ConcurrencyConflict  a lock conflict that bounded retries did not resolve
        ├── OutcomeUnknown       a write that may or may not have committed
        └── ReplicationUnavailable  synchronous replication is required and missing

``StorageError`` is the one case where the outcome may be unknown to the
caller: if the connection is lost while a COMMIT is in flight, the database may
or may not have committed; the ledger then raises ``OutcomeUnknown``.
Retrying with the same ``idempotency_key`` is always safe.
"""

from __future__ import annotations

__all__ = [
    "AccountExists",
    "AccountNotFound",
    "ChainError",
    "ChainReverted",
    "ChainUnavailable",
    "ConcurrencyConflict",
    "ConsumerConflict",
    "EntryNotFound",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InternalError",
    "InvalidAmount",
    "InvalidArgument",
    "LedgerError",
    "NotDeployed",
    "NotSealed",
    "OutcomeUnknown",
    "ReplicationUnavailable",
    "StakeClosed",
    "StakeExpired",
    "StakeNotFound",
    "StorageError",
    "WrongChain",
]


class LedgerError(Exception):
    """Root of every error the ledger raises."""


class AccountNotFound(LedgerError, LookupError):
    """The account id names no account."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account not found: {account_id!r}")
        self.account_id = account_id


class AccountExists(LedgerError):
    """``create_account`` was asked for an id that is already taken."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account already exists: {account_id!r}")
        self.account_id = account_id


class InsufficientFunds(LedgerError):
    """The available balance (staked tokens excluded) does not cover the debit."""

    def __init__(self, account_id: str, available: object, requested: object) -> None:
        super().__init__(
            f"insufficient funds in {account_id!r}: available {available}, requested {requested}"
        )
        self.account_id = account_id
        self.available = available
        self.requested = requested


class InvalidArgument(LedgerError, ValueError):
    """A malformed or forbidden argument: bad ids, reserved ids, empty reason..."""


class InvalidAmount(InvalidArgument):
    """An amount that is not a positive number of at most six decimal places in range."""


class NotSealed(InvalidArgument):
    """The entry is not sealed into the chain, or not under a checkpoint, yet."""

    def __init__(self, entry_id: int, what: str) -> None:
        super().__init__(f"entry {entry_id} is not {what} yet")
        self.entry_id = entry_id


class IdempotencyConflict(LedgerError):
    """An idempotency key was reused with different arguments."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"idempotency key {key!r} was used with different arguments: {detail}")
        self.key = key


class StakeNotFound(LedgerError, LookupError):
    """The stake id names no stake."""

    def __init__(self, stake_id: object) -> None:
        super().__init__(f"stake not found: {stake_id!r}")
        self.stake_id = stake_id


class StakeClosed(LedgerError):
    """The stake was already settled, released or expired."""

    def __init__(self, stake_id: int, status: str, message: str | None = None) -> None:
        super().__init__(message or f"stake {stake_id} is already {status}")
        self.stake_id = stake_id
        self.status = status


class StakeExpired(StakeClosed):
    """The stake is past its expiry: it can no longer be settled, only released or expired."""

    def __init__(self, stake_id: int, expires_at: object) -> None:
        super().__init__(
            stake_id,
            "open",
            f"stake {stake_id} expired at {expires_at}: it can only be released now",
        )
        self.expires_at = expires_at


class EntryNotFound(LedgerError, LookupError):
    """The entry id names no ledger entry."""

    def __init__(self, entry_id: object) -> None:
        super().__init__(f"ledger entry not found: {entry_id!r}")
        self.entry_id = entry_id


class ConsumerConflict(LedgerError):
    """A consumer's position was already at or past the one committed.

    Another instance of the consumer (or an earlier try of this one) handled
    these events first: roll back the transaction that handled them again.
    """

    def __init__(self, name: str, seq: int, position: int) -> None:
        super().__init__(
            f"consumer {name!r} is already at position {position}: cannot commit {seq}"
        )
        self.name = name
        self.seq = seq
        self.position = position


class ChainError(LedgerError):
    """The chain bridge failed; what is on chain is still the truth (push resumes from it)."""


class ChainUnavailable(ChainError):
    """The node could not be reached, or answered a request with an error."""


class WrongChain(ChainError):
    """The node serves another chain than the one the token contract was deployed on."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(
            f"the node serves chain id {actual}, but the token contract is on chain {expected}"
        )
        self.expected = expected
        self.actual = actual


class NotDeployed(ChainError):
    """No token contract is recorded in the ledger, or the node has no code at its address."""


class ChainReverted(ChainError):
    """A transaction was mined with status 0: it changed nothing on chain.

    The entries it carried are not applied; pushing again retries them, so
    the cause (a rogue transfer that emptied a holder, too little gas) must
    be found first: ``tokenledger chain reconcile`` names divergences.
    """

    def __init__(self, tx_hash: str, first_seq: int, last_seq: int, detail: str = "") -> None:
        span = f"entry {first_seq}" if first_seq == last_seq else f"entries {first_seq}-{last_seq}"
        super().__init__(
            f"transaction {tx_hash} ({span}) was reverted on chain"
            + (f": {detail}" if detail else "")
        )
        self.tx_hash = tx_hash
        self.first_seq = first_seq
        self.last_seq = last_seq


class InternalError(LedgerError):
    """The ledger found a contradiction in itself: a bug to report. Nothing was written.

    Raised, for one, when the database's posting rule and the Python one disagree
    about the same figures.
    """


class StorageError(LedgerError):
    """The database failed, timed out or could not be reached."""


class OutcomeUnknown(StorageError):
    """The write may or may not have committed: the connection died during its commit.

    The ledger never reports such a write as a success. Retrying it with the
    same idempotency key returns the original entry or writes it once;
    without a key, only reading the journal can tell.
    """


class ConcurrencyConflict(StorageError):
    """A deadlock, serialization failure or lock timeout outlasted the retries.

    Nothing was written; the call may be retried as it is.
    """


class ReplicationUnavailable(StorageError):
    """The ledger requires synchronous replication and the primary has none to offer.

    Raised before a write, with nothing written, by a ledger built with
    ``require_synchronous=True`` when no synchronous standby is attached (or
    the session's ``synchronous_commit`` does not wait for one). Retry once
    the standby is back.
    """
