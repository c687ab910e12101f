"""The hot path: one-entry writes (transfer, mint, burn) with the fewest round trips.

These functions work on a driver-level (DBAPI) cursor, below SQLAlchemy's
statement machinery, because at a few hundred microseconds per transfer
that machinery would be a large share of the cost. They run inside a
transaction (or an autocommit statement) that the service layer opened.

PostgreSQL: one call of a server-side function (installed by revision 0004)
does everything: it locks the accounts in id order (``SELECT ... FOR
UPDATE``, deadlock-free), checks the idempotency key, funds and range,
writes both balances and appends the entry. When a check fails it writes
nothing and returns the locked figures, so that the service can say exactly
why. Run in autocommit, the whole transaction is one round trip, and the
function's statements keep their plans for the life of the connection.

SQLite: the transaction already holds the write lock (``BEGIN IMMEDIATE``),
so the checks run in Python between a read and the writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tokenledger.books import Balances

__all__ = [
    "PostgresOutcome",
    "lock_sqlite",
    "post_postgresql",
    "sqlite_timestamp",
    "write_sqlite",
]

# One call of the function that revision 0004 installs (see its docstring).
_POSTGRES_POST = (
    "SELECT entry_id, entry_time, after_from, after_to, prior_id, locked "
    "FROM tokenledger_post_entry_v1(%(sender)s, %(receiver)s, %(amount)s, %(reason)s, "
    "%(reference_type)s, %(reference_id)s, %(memo)s, %(key)s)"
)


@dataclass(frozen=True, slots=True)
class PostgresOutcome:
    """What the one-statement write did.

    Exactly one of: ``entry_id`` set (written); ``prior_id`` set (the
    idempotency key was used before, nothing written); or neither, with
    ``locked`` holding the figures of the accounts that exist, so that the
    refusal can be explained.
    """

    entry_id: int | None
    timestamp: datetime | None
    balance_after_from: int | None
    balance_after_to: int | None
    prior_id: int | None
    locked: dict[str, tuple[Balances, datetime]]


def post_postgresql(
    cursor: Any,
    *,
    sender: str,
    receiver: str,
    amount: int,
    reason: str,
    reference_type: str | None,
    reference_id: str | None,
    memo: str | None,
    key: str | None,
) -> PostgresOutcome:
    """Call the server-side write (the function locks whichever parties have rows)."""
    cursor.execute(
        _POSTGRES_POST,
        {
            "sender": sender,
            "receiver": receiver,
            "amount": amount,
            "reason": reason,
            "reference_type": reference_type,
            "reference_id": reference_id,
            "memo": memo,
            "key": key,
        },
    )
    entry_id, timestamp, after_from, after_to, prior_id, locked = cursor.fetchone()
    figures: dict[str, tuple[Balances, datetime]] = {}
    for account_id, balance, earned, spent, staked, updated_at in locked or ():
        figures[account_id] = (
            Balances(int(balance), int(earned), int(spent), int(staked)),
            datetime.fromisoformat(updated_at),
        )
    return PostgresOutcome(entry_id, timestamp, after_from, after_to, prior_id, figures)


# -- SQLite ---------------------------------------------------------------------

_SQLITE_LOCK = {
    1: "SELECT account_id, balance, total_earned, total_spent, total_staked, updated_at "
    "FROM token_accounts WHERE account_id = ?",
    2: "SELECT account_id, balance, total_earned, total_spent, total_staked, updated_at "
    "FROM token_accounts WHERE account_id IN (?, ?)",
}
_SQLITE_PRIOR = "SELECT id FROM token_ledger WHERE idempotency_key = ?"
_SQLITE_INSERT = (
    "INSERT INTO token_ledger (timestamp, from_account, to_account, amount, reason, "
    "reference_type, reference_id, memo, balance_after_from, balance_after_to, "
    "idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_SAVE = (
    "UPDATE token_accounts SET balance = ?, total_earned = ?, total_spent = ?, "
    "total_staked = ?, updated_at = ? WHERE account_id = ?"
)


def sqlite_timestamp(moment: datetime) -> str:
    """The text SQLAlchemy stores for a UTC datetime on SQLite (fixed width, sortable)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def lock_sqlite(
    cursor: Any, accounts: Sequence[str], key: str | None
) -> tuple[int | None, dict[str, tuple[Balances, datetime]]]:
    """Read the accounts (the write lock is already held) and any entry under ``key``."""
    if key is not None:
        prior = cursor.execute(_SQLITE_PRIOR, (key,)).fetchone()
        if prior is not None:
            return int(prior[0]), {}
    figures: dict[str, tuple[Balances, datetime]] = {}
    for account_id, balance, earned, spent, staked, updated_at in cursor.execute(
        _SQLITE_LOCK[len(accounts)], tuple(accounts)
    ):
        figures[account_id] = (
            Balances(balance, earned, spent, staked),
            datetime.fromisoformat(updated_at).replace(tzinfo=UTC),
        )
    return None, figures


def write_sqlite(cursor: Any, row: dict[str, Any], changed: dict[str, Balances]) -> int:
    """Append the entry and save the changed accounts; the new entry's id."""
    stamp = sqlite_timestamp(row["timestamp"])
    cursor.execute(
        _SQLITE_INSERT,
        (
            stamp,
            row["from_account"],
            row["to_account"],
            row["amount"],
            row["reason"],
            row["reference_type"],
            row["reference_id"],
            row["memo"],
            row["balance_after_from"],
            row["balance_after_to"],
            row["idempotency_key"],
        ),
    )
    entry_id = cursor.lastrowid  # the rowid: token_ledger.id is INTEGER PRIMARY KEY
    cursor.executemany(
        _SQLITE_SAVE,
        [
            (b.balance, b.total_earned, b.total_spent, b.total_staked, stamp, account_id)
            for account_id, b in changed.items()
        ],
    )
    return int(entry_id)
