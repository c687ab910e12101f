"""SQL for ``token_stakes``: open, lock, close, read."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, Row, bindparam, func, insert, select, update

from tokenledger.domain.hashing import stake_digest
from tokenledger.storage.dialect import clock, is_postgresql
from tokenledger.storage.models import stakes_table
from tokenledger.storage.repository.paging import keyset_pages

__all__ = [
    "StakeRecord",
    "close",
    "for_account",
    "get",
    "lock",
    "lock_expired",
    "open_stake",
    "open_totals",
    "owners",
    "stream",
]

stakes = stakes_table
_c = stakes.c

StakeRecord = Row[Any]


def open_stake(connection: Connection, **fields: Any) -> int:
    """Insert an open stake, with its digest; its id.

    PostgreSQL writes the digest with a trigger (revision 0005); SQLite
    cannot compute SHA-256 in SQL, so it is written here, once the id is known.
    """
    statement = insert(stakes).values(status="open", **fields).returning(_c.id)
    stake_id = int(connection.execute(statement).scalar_one())
    if not is_postgresql(connection):
        row = {**fields, "id": stake_id, "status": "open", "closed_at": None}
        _write_digest(connection, stake_id, row)
    return stake_id


def lock(connection: Connection, stake_ids: Iterable[int]) -> dict[int, StakeRecord]:
    """Lock stakes in id order (stakes before accounts: the ledger's one lock order)."""
    ids = sorted(set(stake_ids))
    statement = select(stakes).where(_c.id.in_(ids)).order_by(_c.id).with_for_update()
    return {row.id: row for row in connection.execute(statement)}


def lock_expired(
    connection: Connection, limit: int, *, before: datetime | None = None
) -> Sequence[StakeRecord]:
    """Open stakes past their expiry that no other transaction holds right now.

    Past their expiry by the ledger's clock, or by ``before`` if that is
    earlier: no caller can expire a stake early. ``SKIP LOCKED`` lets several
    expiry runs share the work on PostgreSQL instead of queueing behind each
    other; SQLite runs one writer at a time.
    """
    now = clock(connection)
    due = _c.expires_at <= now
    if before is not None:
        due = due & (_c.expires_at <= before)
    statement = (
        select(stakes)
        .where(_c.status == "open", _c.expires_at.is_not(None), due)
        .order_by(_c.id)
        .limit(limit)
    )
    if is_postgresql(connection):
        statement = statement.with_for_update(skip_locked=True)
    return connection.execute(statement).all()


def close(connection: Connection, stake: StakeRecord, status: str, closed_at: datetime) -> None:
    """Mark a locked open stake settled, released or expired, and rewrite its digest."""
    connection.execute(
        update(stakes)
        .where(_c.id == stake.id, _c.status == "open")
        .values(status=status, closed_at=closed_at)
    )
    if not is_postgresql(connection):  # PostgreSQL's trigger rewrites it
        row = {**stake._mapping, "status": status, "closed_at": closed_at}
        _write_digest(connection, stake.id, row)


def _write_digest(connection: Connection, stake_id: int, row: dict[str, Any]) -> None:
    connection.execute(update(stakes).where(_c.id == stake_id).values(digest=stake_digest(row)))


_get = select(stakes).where(_c.id == bindparam("stake_id", type_=BigInteger()))


def get(connection: Connection, stake_id: int) -> StakeRecord | None:
    """The stake with this id, if any."""
    return connection.execute(_get, {"stake_id": stake_id}).first()


def for_account(
    connection: Connection,
    account_id: str,
    *,
    open_only: bool,
    after_id: int | None = None,
    limit: int | None = None,
) -> Sequence[StakeRecord]:
    """The account's stakes in id order, from just after ``after_id``."""
    statement = select(stakes).where(_c.account_id == account_id).order_by(_c.id).limit(limit)
    if open_only:
        statement = statement.where(_c.status == "open")
    if after_id is not None:
        statement = statement.where(_c.id > after_id)
    return connection.execute(statement).all()


def stream(connection: Connection) -> Iterator[StakeRecord]:
    """Every stake in id order, in keyset pages."""
    return keyset_pages(connection, select(stakes), _c.id, label="id")


def owners(connection: Connection) -> dict[int, str]:
    """Stake id to owner, for replaying escrow entries."""
    return {row.id: row.account_id for row in connection.execute(select(_c.id, _c.account_id))}


def open_totals(connection: Connection) -> dict[str, int]:
    """Per account, the sum of its open stakes."""
    statement = (
        select(_c.account_id, func.sum(_c.amount))
        .where(_c.status == "open")
        .group_by(_c.account_id)
    )
    return {row[0]: int(row[1]) for row in connection.execute(statement)}
