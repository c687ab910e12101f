"""SQL for ``token_ledger``: append entries and read them back."""

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
    func,
    insert,
    select,
    text,
    tuple_,
    union_all,
)

from tokenledger.models import journal_table
from tokenledger.repository._dialect import (
    is_postgresql,
    keyset_pages,
    postgres_array,
    writer_txid,
)

__all__ = [
    "ENTRY_FIELDS",
    "append",
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

# The columns a caller writes; id, writer_txid come from the database.
ENTRY_FIELDS = (
    "timestamp",
    "from_account",
    "to_account",
    "amount",
    "reason",
    "reference_type",
    "reference_id",
    "memo",
    "balance_after_from",
    "balance_after_to",
    "idempotency_key",
    "stake_id",
    "reverses_entry_id",
)

EntryRecord = Row[tuple[Any, ...]]


def append(connection: Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Append entries in order and return their ids, in the same order.

    A single entry takes its id from ``RETURNING``. Several entries get
    their ids reserved first, in increasing order, so that the ids follow
    the order in which their balances were computed; PostgreSQL then takes
    them all in one statement (one array per column).
    """
    if len(rows) == 1:
        statement = insert(journal).values(writer_txid=writer_txid(connection)).returning(_c.id)
        return [connection.execute(statement, dict(rows[0])).scalar_one()]
    ids = _reserve_ids(connection, len(rows))
    if is_postgresql(connection):
        columns = {"id": postgres_array(ids)} | {
            name: postgres_array(row[name] for row in rows) for name in ENTRY_FIELDS
        }
        connection.execute(_APPEND_ARRAYS, columns)
    else:
        connection.execute(
            insert(journal),
            [{**row, "id": entry_id} for row, entry_id in zip(rows, ids, strict=True)],
        )
    return ids


_APPEND_ARRAYS = text(
    "INSERT INTO token_ledger (id, writer_txid, "
    + ", ".join(ENTRY_FIELDS)
    + ") SELECT v.id, txid_current(), "
    + ", ".join(f"v.{name}" for name in ENTRY_FIELDS)
    + " FROM unnest(CAST(:id AS bigint[]), CAST(:timestamp AS timestamptz[]), "
    "CAST(:from_account AS varchar[]), CAST(:to_account AS varchar[]), "
    "CAST(:amount AS bigint[]), CAST(:reason AS varchar[]), "
    "CAST(:reference_type AS varchar[]), CAST(:reference_id AS varchar[]), "
    "CAST(:memo AS text[]), CAST(:balance_after_from AS bigint[]), "
    "CAST(:balance_after_to AS bigint[]), CAST(:idempotency_key AS varchar[]), "
    "CAST(:stake_id AS bigint[]), CAST(:reverses_entry_id AS bigint[])) AS v(id, "
    + ", ".join(ENTRY_FIELDS)
    + ")"
)


def _reserve_ids(connection: Connection, n: int) -> list[int]:
    if is_postgresql(connection):
        result = connection.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence('token_ledger', 'id')) "
                "FROM generate_series(1, :n)"
            ),
            {"n": n},
        )
        return sorted(result.scalars())
    # SQLite: the transaction holds the write lock, so nobody else can take these.
    top = connection.execute(select(func.coalesce(func.max(_c.id), 0))).scalar_one()
    return list(range(top + 1, top + 1 + n))


def by_idempotency_keys(connection: Connection, keys: Sequence[str]) -> dict[str, EntryRecord]:
    """The entries written under any of ``keys``, by key."""
    statement = select(journal).where(_c.idempotency_key.in_(list(keys)))
    return {row.idempotency_key: row for row in connection.execute(statement)}


_get = select(journal).where(_c.id == bindparam("entry_id", type_=BigInteger()))


def get(connection: Connection, entry_id: int) -> EntryRecord | None:
    return connection.execute(_get, {"entry_id": entry_id}).first()


def reversal_of(connection: Connection, entry_id: int) -> int | None:
    """The id of the entry that reverses ``entry_id``, if any."""
    return connection.execute(
        select(_c.id).where(_c.reverses_entry_id == entry_id)
    ).scalar_one_or_none()


def by_idempotency_key(connection: Connection, key: str) -> Sequence[EntryRecord]:
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
) -> Sequence[EntryRecord]:
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
) -> Sequence[EntryRecord]:
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


def stream(connection: Connection) -> Iterator[EntryRecord]:
    """Every entry in id order, in keyset pages so memory stays flat."""
    return keyset_pages(connection, select(journal), _c.id, label="id")
