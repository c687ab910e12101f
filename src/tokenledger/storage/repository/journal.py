"""SQL for ``token_ledger``: reading entries back (postings append them)."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Row,
    Select,
    String,
    bindparam,
    select,
    tuple_,
    union_all,
)

from tokenledger.storage.models import journal_table
from tokenledger.storage.repository.paging import keyset_pages

__all__ = [
    "EntryRow",
    "balance_as_of",
    "by_idempotency_key",
    "by_idempotency_keys",
    "for_account",
    "get",
    "latest",
    "reversal_of",
    "stream",
]

journal = journal_table
_c = journal.c

EntryRow = Row[Any]


def by_idempotency_keys(connection: Connection, keys: Sequence[str]) -> dict[str, EntryRow]:
    """The entries written under any of ``keys``, by key."""
    statement = select(journal).where(_c.idempotency_key.in_(list(keys)))
    return {row.idempotency_key: row for row in connection.execute(statement)}


_get = select(journal).where(_c.id == bindparam("entry_id", type_=BigInteger()))


def get(connection: Connection, entry_id: int) -> EntryRow | None:
    """The entry with this id, if any."""
    return connection.execute(_get, {"entry_id": entry_id}).first()


def reversal_of(connection: Connection, entry_id: int) -> int | None:
    """The id of the entry that reverses ``entry_id``, if any."""
    return connection.execute(
        select(_c.id).where(_c.reverses_entry_id == entry_id)
    ).scalar_one_or_none()


def by_idempotency_key(connection: Connection, key: str) -> Sequence[EntryRow]:
    """The entries written under ``key`` (one, or the legs of one operation)."""
    statement = select(journal).where(_c.idempotency_key == key).order_by(_c.id)
    return connection.execute(statement).all()


def for_account(
    connection: Connection,
    account_id: str,
    *,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int | None = None,
) -> Sequence[EntryRow]:
    """Entries where the account is a party, newest first.

    "Newest" is by (timestamp, id). Both orders agree within one account:
    its entries are written under its row lock, with timestamps that never
    go back (see ``Ledger``). Each side is read from its own index and the
    two are merged, instead of an ``OR`` that would sort every match.
    """
    statement = _account_statement(since is not None, before_id is not None, limit is not None)
    parameters: dict[str, Any] = {"account": account_id}
    if since is not None:
        parameters["since"] = since
    if before_id is not None:
        parameters["before"] = before_id
    if limit is not None:
        parameters["limit"] = limit
    return connection.execute(statement, parameters).all()


@functools.cache
def _account_statement(since: bool, before: bool, limit: bool) -> Select[Any]:
    """The statement for one shape of query, built once: building it costs a millisecond."""
    account = bindparam("account", type_=String())

    def side(party: Any) -> Select[Any]:
        q = select(journal).where(party == account)
        if since:
            q = q.where(_c.timestamp >= bindparam("since", type_=journal.c.timestamp.type))
        if before:
            cursor_id = bindparam("before", type_=BigInteger())
            cursor = select(_c.timestamp).where(_c.id == cursor_id).scalar_subquery()
            q = q.where(tuple_(_c.timestamp, _c.id) < tuple_(cursor, cursor_id))
        q = q.order_by(_c.timestamp.desc(), _c.id.desc())
        return q.limit(bindparam("limit", type_=Integer())) if limit else q

    both = union_all(
        select(side(_c.from_account).subquery()), select(side(_c.to_account).subquery())
    ).subquery()
    statement = select(both).order_by(both.c.timestamp.desc(), both.c.id.desc())
    return statement.limit(bindparam("limit", type_=Integer())) if limit else statement


def latest(
    connection: Connection,
    *,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int | None = None,
) -> Sequence[EntryRow]:
    """The whole journal, newest (highest id) first."""
    statement = select(journal).order_by(_c.id.desc())
    if since is not None:
        statement = statement.where(_c.timestamp >= since)
    if before_id is not None:
        statement = statement.where(_c.id < before_id)
    if limit is not None:
        statement = statement.limit(limit)
    return connection.execute(statement).all()


def balance_as_of(connection: Connection, account_id: str, moment: datetime) -> int | None:
    """The account's balance after its last entry at or before ``moment``.

    Two index probes (one per side), never a sum over history. ``None``
    when the account had no entry by then.
    """
    best: tuple[datetime, int, int] | None = None
    parameters = {"account": account_id, "moment": moment}
    for statement in _AS_OF:
        row = connection.execute(statement, parameters).first()
        if row is not None and (best is None or (row[0], row[1]) > best[:2]):
            best = (row[0], row[1], row[2])
    return None if best is None else best[2]


_AS_OF = [
    select(_c.timestamp, _c.id, after)
    .where(
        party == bindparam("account", type_=String()),
        _c.timestamp <= bindparam("moment", type_=journal.c.timestamp.type),
    )
    .order_by(_c.timestamp.desc(), _c.id.desc())
    .limit(1)
    for party, after in (
        (_c.from_account, _c.balance_after_from),
        (_c.to_account, _c.balance_after_to),
    )
]


def stream(connection: Connection) -> Iterator[EntryRow]:
    """Every entry in id order, in keyset pages so memory stays flat."""
    return keyset_pages(connection, select(journal), _c.id, label="id")
