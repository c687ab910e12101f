"""Reading a whole table in bounded memory: keyset pages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, Select

__all__ = ["keyset_pages"]


def keyset_pages(
    connection: Connection,
    statement: Select[Any],
    key: ColumnElement[Any],
    *,
    label: str,
    chunk: int = 5000,
) -> Iterator[Row[Any]]:
    """Every row of ``statement`` in ``key`` order, read ``chunk`` rows at a time.

    Keyset pages (``WHERE key > last``) keep memory flat on any backend and
    any driver; ``label`` is the key's name in the result rows. The first
    page has no lower bound, so no key value is ever skipped.
    """
    last: Any = None
    while True:
        page = statement.order_by(key).limit(chunk)
        if last is not None:
            page = page.where(key > last)
        rows = connection.execute(page).all()
        yield from rows
        if len(rows) < chunk:
            return
        last = getattr(rows[-1], label)
