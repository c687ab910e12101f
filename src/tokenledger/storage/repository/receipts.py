"""SQL for the chain bridge: deployed token contracts and the receipts cache."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select

from tokenledger.storage.dialect import clock
from tokenledger.storage.models import deployments_table, receipts_table

__all__ = [
    "add_deployment",
    "add_receipts",
    "counts",
    "drop_after",
    "last_seq",
    "latest_deployment",
    "of_entry",
    "tx_hashes",
]

deployments = deployments_table
receipts = receipts_table
_r = receipts.c


def add_deployment(connection: Connection, **fields: Any) -> Row[Any]:
    """Record a deployed contract, dated by the ledger's clock; the stored row."""
    statement = insert(deployments).values(**fields, created_at=clock(connection))
    return connection.execute(statement.returning(deployments)).one()


def latest_deployment(connection: Connection) -> Row[Any] | None:
    return connection.execute(
        select(deployments).order_by(deployments.c.id.desc()).limit(1)
    ).first()


def of_entry(connection: Connection, deployment_id: int, entry_id: int) -> Row[Any] | None:
    return connection.execute(
        select(receipts).where(_r.deployment_id == deployment_id, _r.entry_id == entry_id)
    ).first()


def tx_hashes(
    connection: Connection, deployment_id: int, entry_ids: Iterable[int]
) -> dict[int, str]:
    ids = list(entry_ids)
    if not ids:
        return {}
    statement = select(_r.entry_id, _r.tx_hash).where(
        _r.deployment_id == deployment_id, _r.entry_id.in_(ids)
    )
    return {row.entry_id: row.tx_hash for row in connection.execute(statement)}


def last_seq(connection: Connection, deployment_id: int) -> int:
    """The highest chain position with a cached receipt (0: none)."""
    value = connection.execute(
        select(func.max(_r.seq)).where(_r.deployment_id == deployment_id)
    ).scalar_one()
    return int(value or 0)


def counts(connection: Connection, deployment_id: int, confirmed_block: int) -> tuple[int, int]:
    """(receipts cached, receipts in blocks at or below ``confirmed_block``)."""
    total = connection.execute(
        select(func.count()).select_from(receipts).where(_r.deployment_id == deployment_id)
    ).scalar_one()
    confirmed = connection.execute(
        select(func.count())
        .select_from(receipts)
        .where(_r.deployment_id == deployment_id, _r.block_number <= confirmed_block)
    ).scalar_one()
    return int(total), int(confirmed)


def add_receipts(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        connection.execute(insert(receipts), list(rows))


def drop_after(connection: Connection, deployment_id: int, seq: int) -> int:
    """Forget the cached receipts past chain position ``seq`` (the chain no longer has them)."""
    result = connection.execute(
        delete(receipts).where(_r.deployment_id == deployment_id, _r.seq > seq)
    )
    return int(result.rowcount or 0)
