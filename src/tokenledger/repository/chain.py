"""SQL for the sealed hash chain and its checkpoints."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, text, tuple_, update

from tokenledger.models import (
    chain_head_table,
    chain_table,
    checkpoints_table,
    journal_table,
)
from tokenledger.repository._dialect import is_postgresql, keyset_pages

chain = chain_table
head = chain_head_table
checkpoints = checkpoints_table
journal = journal_table
_j = journal.c


def lock_head(connection: Connection) -> Row[Any]:
    """Lock the chain head: one sealer at a time extends the chain."""
    return connection.execute(select(head).where(head.c.id == 1).with_for_update()).one()


def read_head(connection: Connection) -> Row[Any]:
    return connection.execute(select(head).where(head.c.id == 1)).one()


def commit_horizon(connection: Connection) -> int | None:
    """The oldest transaction still running (PostgreSQL); ``None`` on SQLite.

    Every writer transaction with a smaller id has ended, so its entries are
    committed and visible, or will never exist: they can be sealed in order
    without a later commit landing behind them. SQLite has one writer at a
    time and the sealer holds the write lock, so all it sees is final.
    """
    if not is_postgresql(connection):
        return None
    return int(
        connection.execute(text("SELECT txid_snapshot_xmin(txid_current_snapshot())")).scalar_one()
    )


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
    writer_txid 0: they come first, in id order.
    """
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
    now: datetime,
) -> None:
    connection.execute(
        update(head)
        .where(head.c.id == 1)
        .values(
            seq=seq, hash=hash_, last_txid=last_txid, last_entry_id=last_entry_id, updated_at=now
        )
    )


def walk(connection: Connection) -> Iterator[Row[Any]]:
    """Chain links joined to their entries, in seq order (entry columns NULL if it is gone)."""
    statement = select(
        chain.c.seq, chain.c.hash.label("chain_hash"), chain.c.entry_id, journal
    ).select_from(chain.outerjoin(journal, journal.c.id == chain.c.entry_id))
    return keyset_pages(connection, statement, chain.c.seq, label="seq")


def hashes(connection: Connection, first_seq: int, last_seq: int) -> list[str]:
    statement = (
        select(chain.c.hash)
        .where(chain.c.seq >= first_seq, chain.c.seq <= last_seq)
        .order_by(chain.c.seq)
    )
    return list(connection.execute(statement).scalars())


def link_of_entry(connection: Connection, entry_id: int) -> Row[Any] | None:
    return connection.execute(select(chain).where(chain.c.entry_id == entry_id)).first()


def count_sealed(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(chain)).scalar_one())


def last_checkpoint(connection: Connection) -> Row[Any] | None:
    return connection.execute(
        select(checkpoints).order_by(checkpoints.c.last_seq.desc()).limit(1)
    ).first()


def add_checkpoint(connection: Connection, **fields: Any) -> int:
    return int(
        connection.execute(
            insert(checkpoints).values(**fields).returning(checkpoints.c.id)
        ).scalar_one()
    )


def all_checkpoints(connection: Connection) -> Sequence[Row[Any]]:
    return connection.execute(select(checkpoints).order_by(checkpoints.c.first_seq)).all()


def checkpoint_covering(connection: Connection, seq: int) -> Row[Any] | None:
    return connection.execute(
        select(checkpoints).where(checkpoints.c.first_seq <= seq, checkpoints.c.last_seq >= seq)
    ).first()
