"""SQL for ``token_consumers``: a named consumer's position in the sealed chain."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select, update

from tokenledger.storage.dialect import clock, insert_ignoring_conflicts
from tokenledger.storage.models import consumers_table

__all__ = ["advance", "position"]

consumers = consumers_table
_c = consumers.c

_position = select(_c.position).where(_c.name == bindparam("name"))


def position(connection: Connection, name: str) -> int:
    """The consumer's position; 0 for a consumer that never committed."""
    found = connection.execute(_position, {"name": name}).scalar_one_or_none()
    return 0 if found is None else int(found)


def advance(connection: Connection, name: str, seq: int) -> bool:
    """Move the consumer to ``seq``; ``False`` if it is already there or further.

    The row is created at position 0 the first time; the UPDATE then takes
    its lock, so two transactions advancing one consumer take turns and the
    second finds the first's position.
    """
    now = clock(connection)
    connection.execute(
        insert_ignoring_conflicts(connection, consumers).values(
            name=name, position=0, updated_at=now
        )
    )
    moved = connection.execute(
        update(consumers)
        .where(_c.name == name, _c.position < seq)
        .values(position=seq, updated_at=now)
    )
    return moved.rowcount == 1
