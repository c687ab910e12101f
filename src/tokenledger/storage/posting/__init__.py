"""The posting port and its adapters: ``postgres`` and ``sqlite`` (see ``port``)."""

from __future__ import annotations

from tokenledger.domain.errors import InvalidArgument
from tokenledger.storage.posting.port import IdempotencyKeyTaken, Outcome, Poster, Scope
from tokenledger.storage.posting.postgres import PostgresPoster
from tokenledger.storage.posting.sqlite import SqlitePoster

__all__ = [
    "IdempotencyKeyTaken",
    "Outcome",
    "Poster",
    "PostgresPoster",
    "Scope",
    "SqlitePoster",
    "poster_for",
]

_POSTERS: dict[str, Poster] = {"postgresql": PostgresPoster(), "sqlite": SqlitePoster()}


def poster_for(dialect_name: str) -> Poster:
    """The adapter for a SQLAlchemy dialect name.

    Raises:
        InvalidArgument: a database the ledger does not support.
    """
    try:
        return _POSTERS[dialect_name]
    except KeyError:
        raise InvalidArgument(
            f"tokenledger supports PostgreSQL and SQLite, not {dialect_name!r}"
        ) from None
