"""SQLite: postings through driver statements under the write lock.

Every write transaction already holds the database's write lock (``BEGIN
IMMEDIATE``, see ``storage.transactions``), so the accounts read here cannot
change before the transaction ends: the checks run in Python
(``domain.postings``) between the read and the writes. The clock is the
embedding process's. Each entry's digest (``domain.hashing.entry_digest``)
is computed here and written by the same INSERT. The statements are plain SQL with ``?`` parameters,
sent through SQLAlchemy's ``Connection`` (so engine events see them) but
below its compiler, which would otherwise be a large share of a write that
costs a few hundred microseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from tokenledger.domain.books import Balances
from tokenledger.domain.entries import WRITTEN_COLUMNS
from tokenledger.domain.errors import LedgerError
from tokenledger.domain.hashing import entry_digest
from tokenledger.domain.postings import Draft, Locked, Posting, not_before
from tokenledger.domain.records import LedgerEntry, entry_from_row
from tokenledger.storage.dialect import clock_now
from tokenledger.storage.posting.port import IdempotencyKeyTaken, Outcome, Scope

__all__ = ["SqlitePoster", "sqlite_timestamp"]

_FIGURES = "account_id, balance, total_earned, total_spent, total_staked, updated_at"
_PRIOR = "SELECT id FROM token_ledger WHERE idempotency_key = ?"
_APPEND = (
    f"INSERT INTO token_ledger (id, {', '.join(WRITTEN_COLUMNS)}, digest) "
    f"VALUES (?, {', '.join('?' for _ in WRITTEN_COLUMNS)}, ?)"
)
_LAST_ID = "SELECT coalesce(max(id), 0) FROM token_ledger"
_SAVE = (
    "UPDATE token_accounts SET balance = ?, total_earned = ?, total_spent = ?, "
    "total_staked = ?, updated_at = ? WHERE account_id = ?"
)


def sqlite_timestamp(moment: datetime) -> str:
    """The text SQLAlchemy stores for a UTC datetime on SQLite (fixed width, sortable)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _lock_statement(n: int) -> str:
    return f"SELECT {_FIGURES} FROM token_accounts WHERE account_id IN ({', '.join('?' * n)})"


def _stored(row: dict[str, Any], column: str) -> Any:
    value = row[column]
    return sqlite_timestamp(value) if column == "timestamp" else value


class SqlitePoster:
    """The SQLite adapter of the posting port."""

    one_entry_scope: Scope = "transaction"

    def lock(self, connection: Connection, account_ids: Iterable[str]) -> Locked:
        ids = sorted(set(account_ids))
        figures: dict[str, Balances] = {}
        changed: list[datetime] = []
        if ids:
            rows = connection.exec_driver_sql(_lock_statement(len(ids)), tuple(ids))
            for account_id, balance, earned, spent, staked, updated_at in rows:
                figures[account_id] = Balances(balance, earned, spent, staked)
                changed.append(datetime.fromisoformat(updated_at).replace(tzinfo=UTC))
        now = clock_now()
        return Locked(figures, now, not_before(now, *changed))

    def write(self, connection: Connection, posting: Posting) -> list[int]:
        rows = posting.rows
        # The transaction holds the write lock: nobody else can take these ids.
        # They are known before the INSERT because the digest covers them.
        top = int(connection.exec_driver_sql(_LAST_ID).scalar_one())
        ids = list(range(top + 1, top + 1 + len(rows)))
        values = []
        for entry_id, row in zip(ids, rows, strict=True):
            stored = {**row, "id": entry_id, "writer_txid": 0}  # writers are serial here
            values.append(
                (
                    entry_id,
                    *(_stored(row, c) for c in WRITTEN_COLUMNS),
                    entry_digest(stored),
                )
            )
        connection.exec_driver_sql(_APPEND, values[0] if len(values) == 1 else values)
        changed = posting.changed_books()
        if changed:
            stamp = sqlite_timestamp(posting.timestamp)
            connection.exec_driver_sql(
                _SAVE,
                [
                    (b.balance, b.total_earned, b.total_spent, b.total_staked, stamp, account_id)
                    for account_id, b in changed.items()
                ],
            )
        return ids

    def post_one(self, connection: Connection, draft: Draft) -> LedgerEntry:
        key = draft.idempotency_key
        if key is not None and connection.exec_driver_sql(_PRIOR, (key,)).first() is not None:
            raise IdempotencyKeyTaken(key)
        posting = self.lock(connection, draft.accounts()).posting()
        row = posting.add(draft)
        (entry_id,) = self.write(connection, posting)
        return entry_from_row({**row, "id": entry_id})

    def post_many(self, connection: Connection, drafts: Sequence[Draft]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for draft in drafts:
            # A refusal is raised before its draft writes anything, so it
            # needs no savepoint to leave the others alone.
            try:
                outcomes.append(self.post_one(connection, draft))
            except (LedgerError, IdempotencyKeyTaken) as refused:
                outcomes.append(refused)
        return outcomes
