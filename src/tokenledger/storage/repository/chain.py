"""SQL for the sealed hash chain and its checkpoints."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, text, tuple_, update

from tokenledger.storage.dialect import clock, is_postgresql
from tokenledger.storage.models import (
    chain_head_table,
    chain_table,
    checkpoints_table,
    journal_table,
)
from tokenledger.storage.repository.paging import keyset_pages

__all__ = [
    "add_checkpoint",
    "all_checkpoints",
    "append",
    "checkpoint_covering",
    "checkpoint_ending",
    "commit_horizon",
    "hashes",
    "last_checkpoint",
    "link_of_entry",
    "links_after",
    "lock_head",
    "move_head",
    "read_head",
    "sealing_key",
    "transaction_ordered_top",
    "unsealed",
    "unsealed_everywhere",
    "walk",
]

chain = chain_table
head = chain_head_table
checkpoints = checkpoints_table
journal = journal_table
_j = journal.c


def lock_head(connection: Connection) -> Row[Any]:
    """Lock the chain head: one sealer at a time extends the chain."""
    return connection.execute(select(head).where(head.c.id == 1).with_for_update()).one()


def read_head(connection: Connection) -> Row[Any]:
    """The chain head, unlocked."""
    return connection.execute(select(head).where(head.c.id == 1)).one()


def commit_horizon(connection: Connection) -> int | None:
    """A txid below which every writer of this database's entries is visible to this transaction.

    PostgreSQL; ``None`` on SQLite, which has one writer at a time: the
    sealer holds the write lock, so everything it sees is final.

    Entries of writers below the horizon are committed and visible to the
    statements that follow, or will never exist, so they can be sealed in
    order without a later commit landing behind them. The snapshot taken
    here is the oldest any later statement of this transaction can have (at
    READ COMMITTED each statement takes a newer one; at REPEATABLE READ they
    all share this one), so the horizon must be valid for it:

    * a txid below the snapshot's ``xmin``, or below ``xmax`` and not in its
      running list, has ended: visible if it committed;
    * a txid in the running list is invisible to this snapshot, so the
      horizon stops at it, unless it is seen right now running in another
      database (or prepared there): it can never write this database's
      journal. One that has ended since the snapshot may have been ours, so
      it stops the horizon too (the next seal moves on);
    * a transaction that begins later gets a txid at or above ``xmax``.

    Only the transactions connected elsewhere are skipped, not all the
    server's: an idle transaction in another database must not hold sealing
    back, and a live view (``pg_locks``) must never move the horizon past a
    commit the snapshot cannot see. The view is read just before the
    snapshot and just after: a txid's database never changes, so one seen
    elsewhere in either is elsewhere, and a short transaction of another
    database that ends while the snapshot is taken (frequent on a busy
    server) does not stop the horizon.
    """
    if not is_postgresql(connection):
        return None
    before = _running_elsewhere(connection)
    snapshot = connection.execute(text("SELECT txid_current_snapshot()::text")).scalar_one()
    _, xmax, running = _parse_snapshot(snapshot)
    if not running:
        return xmax
    elsewhere = before | _running_elsewhere(connection)
    # The lock table shows 32-bit xids; the snapshot's are 64-bit (epoch-extended).
    return min((txid for txid in running if txid % 2**32 not in elsewhere), default=xmax)


_RUNNING_ELSEWHERE = text(
    "SELECT l.transactionid::text::bigint FROM pg_locks AS l "
    "JOIN pg_stat_activity AS a ON a.pid = l.pid "
    "WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' "
    "AND a.datname <> current_database() "
    "UNION SELECT transaction::text::bigint FROM pg_prepared_xacts "
    "WHERE database <> current_database()"
)


def _running_elsewhere(connection: Connection) -> set[int]:
    """The 32-bit xids of transactions running (or prepared) in other databases right now."""
    return set(connection.execute(_RUNNING_ELSEWHERE).scalars())


def _parse_snapshot(snapshot: str) -> tuple[int, int, list[int]]:
    """``xmin:xmax:xip1,xip2,...`` (txid_snapshot's text form) as numbers."""
    xmin, xmax, running = snapshot.split(":")
    return int(xmin), int(xmax), [int(t) for t in running.split(",") if t]


def unsealed(
    connection: Connection,
    *,
    last_txid: int,
    last_entry_id: int,
    horizon: int | None,
    limit: int,
) -> Sequence[Row[Any]]:
    """The next entries to seal, in sealing order (writer_txid, id).

    Entries written before revision 0003, and every entry on SQLite, have
    writer_txid 0: they come first, in id order. On SQLite (no horizon) a
    ledger copied from PostgreSQL goes on in :func:`sealing_key`'s order.
    """
    if horizon is None:
        return _unsealed_serial(
            connection, last_txid=last_txid, last_entry_id=last_entry_id, limit=limit
        )
    rows: list[Row[Any]] = []
    if last_txid == 0:
        legacy = (
            select(journal)
            .where(_j.writer_txid == 0, _j.id > last_entry_id)
            .order_by(_j.id)
            .limit(limit)
        )
        rows.extend(connection.execute(legacy))
        last_entry_id = 0
    if horizon is None or len(rows) >= limit:
        return rows
    statement = (
        select(journal)
        .where(
            _j.writer_txid > 0,
            _j.writer_txid < horizon,
            tuple_(_j.writer_txid, _j.id) > tuple_(last_txid, last_entry_id),
        )
        .order_by(_j.writer_txid, _j.id)
        .limit(limit - len(rows))
    )
    rows.extend(connection.execute(statement))
    return rows


def transaction_ordered_top(connection: Connection) -> int | None:
    """The largest id of an entry written with a PostgreSQL txid (``None``: there is none).

    Only a ledger written on PostgreSQL, or copied from one, has such entries.
    """
    statement = select(func.max(_j.id)).where(_j.writer_txid > 0)
    top = connection.execute(statement).scalar_one()
    return None if top is None else int(top)


def sealing_key(writer_txid: int, entry_id: int, top: int | None) -> tuple[int, int, int]:
    """An entry's place in the sealing order, wherever the ledger has been written.

    ``top``: :func:`transaction_ordered_top`. Three runs, one after the other:

    0. entries with writer_txid 0 below ``top`` (written before revision
       0003, or on SQLite before a copy to PostgreSQL), in id order;
    1. entries written on PostgreSQL, in (writer_txid, id) order;
    2. entries with writer_txid 0 above ``top``: written on SQLite after the
       ledger was copied there from PostgreSQL, in id order.

    On a ledger only one backend wrote, this is the plain (writer_txid, id) order.
    """
    if writer_txid > 0:
        return (1, writer_txid, entry_id)
    if top is not None and entry_id > top:
        return (2, 0, entry_id)
    return (0, 0, entry_id)


def _unsealed_serial(
    connection: Connection, *, last_txid: int, last_entry_id: int, limit: int
) -> list[Row[Any]]:
    """SQLite: every committed entry is visible to the one writer; seal in sealing_key order."""
    top = transaction_ordered_top(connection)
    run = sealing_key(last_txid, last_entry_id, top)[0]
    rows: list[Row[Any]] = []
    if run == 0:
        legacy = select(journal).where(_j.writer_txid == 0, _j.id > last_entry_id)
        if top is not None:
            legacy = legacy.where(_j.id < top)
        rows.extend(connection.execute(legacy.order_by(_j.id).limit(limit)))
        if top is None:
            return rows
        last_txid, last_entry_id = 0, 0
    if run <= 1 and top is not None and len(rows) < limit:
        ordered = (
            select(journal)
            .where(
                _j.writer_txid > 0,
                tuple_(_j.writer_txid, _j.id) > tuple_(last_txid, last_entry_id),
            )
            .order_by(_j.writer_txid, _j.id)
            .limit(limit - len(rows))
        )
        rows.extend(connection.execute(ordered))
    if top is not None and len(rows) < limit:
        after = last_entry_id if run == 2 else top
        later = (
            select(journal)
            .where(_j.writer_txid == 0, _j.id > after)
            .order_by(_j.id)
            .limit(limit - len(rows))
        )
        rows.extend(connection.execute(later))
    return rows


def unsealed_everywhere(connection: Connection) -> Iterator[Any]:
    """Every entry not in the chain, wherever it sits (an anti-join, streamed)."""
    statement = (
        select(_j.id, _j.writer_txid)
        .select_from(journal.outerjoin(chain, chain.c.entry_id == _j.id))
        .where(chain.c.entry_id.is_(None))
        .order_by(_j.id)
        .execution_options(yield_per=5000)
    )
    yield from connection.execute(statement)


def append(connection: Connection, links: Sequence[dict[str, Any]]) -> None:
    if links:
        connection.execute(insert(chain), list(links))


def move_head(
    connection: Connection,
    *,
    seq: int,
    hash_: str,
    last_txid: int,
    last_entry_id: int,
) -> None:
    """Move the (locked) head to the last sealed entry."""
    connection.execute(
        update(head)
        .where(head.c.id == 1)
        .values(
            seq=seq,
            hash=hash_,
            last_txid=last_txid,
            last_entry_id=last_entry_id,
            updated_at=clock(connection),
        )
    )


def walk(connection: Connection) -> Iterator[Row[Any]]:
    """Chain links joined to their entries, in seq order (entry columns NULL if it is gone)."""
    statement = select(
        chain.c.seq, chain.c.hash.label("chain_hash"), chain.c.encoding, chain.c.entry_id, journal
    ).select_from(chain.outerjoin(journal, journal.c.id == chain.c.entry_id))
    return keyset_pages(connection, statement, chain.c.seq, label="seq")


def links_after(connection: Connection, after: int, limit: int) -> Sequence[Row[Any]]:
    """The sealed entries at chain positions after ``after``, in chain order, at most ``limit``."""
    statement = (
        select(chain.c.seq, chain.c.hash.label("chain_hash"), journal)
        .select_from(chain.join(journal, journal.c.id == chain.c.entry_id))
        .where(chain.c.seq > after)
        .order_by(chain.c.seq)
        .limit(limit)
    )
    return connection.execute(statement).all()


def hashes(connection: Connection, first_seq: int, last_seq: int) -> list[str]:
    statement = (
        select(chain.c.hash)
        .where(chain.c.seq >= first_seq, chain.c.seq <= last_seq)
        .order_by(chain.c.seq)
    )
    return list(connection.execute(statement).scalars())


def link_of_entry(connection: Connection, entry_id: int) -> Row[Any] | None:
    return connection.execute(select(chain).where(chain.c.entry_id == entry_id)).first()


def last_checkpoint(connection: Connection) -> Row[Any] | None:
    return connection.execute(
        select(checkpoints).order_by(checkpoints.c.last_seq.desc()).limit(1)
    ).first()


def add_checkpoint(connection: Connection, **fields: Any) -> Row[Any]:
    """Store a checkpoint, dated by the ledger's clock; the stored row."""
    statement = insert(checkpoints).values(**fields, created_at=clock(connection))
    return connection.execute(statement.returning(checkpoints)).one()


def all_checkpoints(connection: Connection) -> Sequence[Row[Any]]:
    return connection.execute(select(checkpoints).order_by(checkpoints.c.first_seq)).all()


def checkpoint_ending(connection: Connection, seq: int) -> Row[Any] | None:
    """The checkpoint whose range ends at chain position ``seq``, if any."""
    return connection.execute(select(checkpoints).where(checkpoints.c.last_seq == seq)).first()


def checkpoint_covering(connection: Connection, seq: int) -> Row[Any] | None:
    """The checkpoint whose range holds chain position ``seq``, if any."""
    return connection.execute(
        select(checkpoints).where(checkpoints.c.first_seq <= seq, checkpoints.c.last_seq >= seq)
    ).first()
