"""SQL for ``token_accounts``: create, lock, update, read, sum."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy import Connection, Row, bindparam, func, select, text, update

from tokenledger.amounts import UNITS_PER_TOKEN
from tokenledger.books import Balances
from tokenledger.models import accounts_table
from tokenledger.repository._dialect import (
    insert_ignoring_conflicts,
    is_postgresql,
    keyset_pages,
    postgres_array,
)

accounts = accounts_table
_c = accounts.c


def insert(connection: Connection, account_id: str, now: datetime) -> bool:
    """Create an empty account; ``False`` if the id is taken (decided by the database)."""
    statement = (
        insert_ignoring_conflicts(connection, accounts)
        .values(account_id=account_id, created_at=now, updated_at=now)
        .returning(_c.account_id)
    )
    return connection.execute(statement).first() is not None


def lock(connection: Connection, account_ids: Iterable[str]) -> dict[str, Row[tuple[object, ...]]]:
    """Lock the accounts for the rest of the transaction and read them.

    PostgreSQL: one ``SELECT ... FOR UPDATE`` ordered by id, so every writer
    takes its locks in the same order and two writers cannot deadlock.
    SQLite: the transaction already holds the database's write lock
    (``BEGIN IMMEDIATE``); SQLAlchemy drops ``FOR UPDATE`` there.
    """
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    statement = (
        select(accounts).where(_c.account_id.in_(ids)).order_by(_c.account_id).with_for_update()
    )
    return {row.account_id: row for row in connection.execute(statement)}


_read = select(accounts).where(_c.account_id == bindparam("account_id"))


def read(connection: Connection, account_id: str) -> Row[tuple[object, ...]] | None:
    return connection.execute(_read, {"account_id": account_id}).first()


_save = (
    update(accounts)
    .where(_c.account_id == bindparam("b_account_id"))
    .values(
        balance=bindparam("b_balance"),
        total_earned=bindparam("b_total_earned"),
        total_spent=bindparam("b_total_spent"),
        total_staked=bindparam("b_total_staked"),
        updated_at=bindparam("b_updated_at"),
    )
)
_SAVE_ARRAYS = text(
    "UPDATE token_accounts AS a SET balance = v.balance, total_earned = v.total_earned, "
    "total_spent = v.total_spent, total_staked = v.total_staked, updated_at = :now "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:balance AS bigint[]), "
    "CAST(:earned AS bigint[]), CAST(:spent AS bigint[]), CAST(:staked AS bigint[])) "
    "AS v(account_id, balance, total_earned, total_spent, total_staked) "
    "WHERE a.account_id = v.account_id"
)


def save(connection: Connection, changed: dict[str, Balances], now: datetime) -> None:
    """Write new figures for locked accounts (absolute values, not increments).

    Absolute values computed from the locked rows: an increment would be
    evaluated by PostgreSQL against the row version the UPDATE's snapshot
    sees first, which may predate the lock. One statement on PostgreSQL.
    """
    if not changed:
        return
    if is_postgresql(connection):
        figures = list(changed.values())
        connection.execute(
            _SAVE_ARRAYS,
            {
                "ids": postgres_array(changed),
                "balance": postgres_array(b.balance for b in figures),
                "earned": postgres_array(b.total_earned for b in figures),
                "spent": postgres_array(b.total_spent for b in figures),
                "staked": postgres_array(b.total_staked for b in figures),
                "now": now,
            },
        )
        return
    connection.execute(
        _save,
        [
            {
                "b_account_id": account_id,
                "b_balance": b.balance,
                "b_total_earned": b.total_earned,
                "b_total_spent": b.total_spent,
                "b_total_staked": b.total_staked,
                "b_updated_at": now,
            }
            for account_id, b in changed.items()
        ],
    )


def balances_of(row: Row[tuple[object, ...]]) -> Balances:
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


def stream(connection: Connection) -> Iterator[Row[tuple[object, ...]]]:
    """Every account in id order, in keyset pages so memory stays flat."""
    return keyset_pages(connection, select(accounts), _c.account_id, label="account_id")
