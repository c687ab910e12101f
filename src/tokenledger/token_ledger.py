"""The seed's module-level functions, by their seed names, on a default ``Ledger``.

    from tokenledger import token_ledger
    token_ledger.configure("postgresql+psycopg2://app@db/app")  # optional
    token_ledger.create_account("alice")
    token_ledger.transfer("alice", "bob", "12.5", "debate_reward")

Unconfigured, the default ledger is opened on first use from
``$TOKENLEDGER_DATABASE_URL``, else a SQLite file ``tokenledger.db`` in the
working directory (created and migrated then). Nothing is opened at import.
The functions take and return what ``Ledger``'s methods of the same names do.
"""

from __future__ import annotations

import threading
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Engine

from tokenledger.config import open_ledger
from tokenledger.domain.amounts import AmountInput
from tokenledger.domain.records import Account, LedgerEntry
from tokenledger.service.ledger import Ledger

__all__ = [
    "burn",
    "configure",
    "create_account",
    "get_balance",
    "get_ledger",
    "get_statement",
    "get_total_supply",
    "mint",
    "reset",
    "transfer",
]

_lock = threading.Lock()
_default: list[Ledger] = []  # at most one: the configured or lazily opened ledger


def configure(url_or_engine: str | Engine) -> Ledger:
    """Point the module's functions at a database (a URL or an existing engine).

    An engine passed in stays the caller's: a later ``configure`` or
    ``reset`` forgets it but never disposes it.
    """
    ledger = (
        Ledger(url_or_engine) if isinstance(url_or_engine, Engine) else open_ledger(url_or_engine)
    )
    with _lock:
        _replace(ledger)
    return ledger


def get_ledger() -> Ledger:
    """The default ledger, opening it from the environment on first use."""
    with _lock:
        if not _default:
            _default.append(open_ledger())
        return _default[0]


def reset() -> None:
    """Forget the default ledger (closing the engine it opened itself, never a caller's)."""
    with _lock:
        _replace(None)


def _replace(ledger: Ledger | None) -> None:
    for old in _default:
        old.dispose()
    _default.clear()
    if ledger is not None:
        _default.append(ledger)


def create_account(agent_id: str, initial_balance: AmountInput = 1000) -> Account:
    return get_ledger().create_account(agent_id, initial_balance)


def transfer(
    from_id: str,
    to_id: str,
    amount: AmountInput,
    reason: str,
    reference_type: str | None = None,
    reference_id: str | None = None,
    memo: str | None = None,
    *,
    idempotency_key: str | None = None,
) -> LedgerEntry:
    return get_ledger().transfer(
        from_id,
        to_id,
        amount,
        reason,
        reference_type,
        reference_id,
        memo,
        idempotency_key=idempotency_key,
    )


def mint(
    to_id: str,
    amount: AmountInput,
    reason: str,
    reference_type: str | None = None,
    reference_id: str | None = None,
    memo: str | None = None,
    *,
    idempotency_key: str | None = None,
) -> LedgerEntry:
    return get_ledger().mint(
        to_id, amount, reason, reference_type, reference_id, memo, idempotency_key=idempotency_key
    )


def burn(
    from_id: str,
    amount: AmountInput,
    reason: str,
    reference_type: str | None = None,
    reference_id: str | None = None,
    memo: str | None = None,
    *,
    idempotency_key: str | None = None,
) -> LedgerEntry:
    return get_ledger().burn(
        from_id,
        amount,
        reason,
        reference_type,
        reference_id,
        memo,
        idempotency_key=idempotency_key,
    )


def get_balance(agent_id: str, as_of: datetime | str | None = None) -> Decimal:
    return get_ledger().get_balance(agent_id, as_of)


def get_statement(
    agent_id: str, since: datetime | str | None = None, limit: int | None = None
) -> list[LedgerEntry]:
    return get_ledger().get_statement(agent_id, since, limit)


def get_total_supply() -> Decimal:
    return get_ledger().get_total_supply()
