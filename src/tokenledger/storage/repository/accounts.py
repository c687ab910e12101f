"""SQL for ``token_accounts``: create, read, sum, stream."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, select

from tokenledger.domain.amounts import UNITS_PER_TOKEN
from tokenledger.domain.books import Balances
from tokenledger.storage.dialect import clock, insert_ignoring_conflicts
from tokenledger.storage.models import accounts_table
from tokenledger.storage.repository.paging import keyset_pages

__all__ = ["balances_of", "insert", "page", "read", "stream", "total_supply"]

accounts = accounts_table
_c = accounts.c
AccountRow = Row[Any]


def insert(connection: Connection, account_id: str) -> datetime | None:
    """Create an empty account, dated by the ledger's clock.

    Returns its creation time, or ``None`` if the id is taken (which the
    database decides, not a prior read).
    """
    now = clock(connection)
    statement = (
        insert_ignoring_conflicts(connection, accounts)
        .values(account_id=account_id, created_at=now, updated_at=now)
        .returning(_c.created_at)
    )
    return connection.execute(statement).scalar_one_or_none()


_read = select(accounts).where(_c.account_id == bindparam("account_id"))


def read(connection: Connection, account_id: str) -> AccountRow | None:
    return connection.execute(_read, {"account_id": account_id}).first()


def balances_of(row: AccountRow) -> Balances:
    """The running figures of a stored account row."""
    m = row._mapping
    return Balances(
        int(m["balance"]), int(m["total_earned"]), int(m["total_spent"]), int(m["total_staked"])
    )


def total_supply(connection: Connection) -> int:
    """Σ (balance + staked) over all accounts, exact on every backend.

    Summing whole tokens and remainders apart keeps each SUM far from the
    64-bit limit at which SQLite's integer SUM would overflow.
    """
    whole = (_c.balance // UNITS_PER_TOKEN) + (_c.total_staked // UNITS_PER_TOKEN)
    rest = (_c.balance % UNITS_PER_TOKEN) + (_c.total_staked % UNITS_PER_TOKEN)
    row = connection.execute(
        select(func.coalesce(func.sum(whole), 0), func.coalesce(func.sum(rest), 0))
    ).one()
    return int(row[0]) * UNITS_PER_TOKEN + int(row[1])


def stream(connection: Connection) -> Iterator[AccountRow]:
    """Every account in id order, in keyset pages so memory stays flat."""
    return keyset_pages(connection, select(accounts), _c.account_id, label="account_id")


def page(connection: Connection, *, after: str | None, limit: int | None) -> list[AccountRow]:
    """Accounts in id order, from just after ``after``."""
    statement = select(accounts).order_by(_c.account_id).limit(limit)
    if after is not None:
        statement = statement.where(_c.account_id > after)
    return list(connection.execute(statement))
