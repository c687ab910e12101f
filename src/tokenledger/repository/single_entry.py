"""The hot path: one-entry writes (transfer, mint, burn) with the fewest round trips.

These functions work on a driver-level (DBAPI) cursor, below SQLAlchemy's
statement machinery, because at a few hundred microseconds per transfer
that machinery would be a large share of the cost. They run inside a
transaction (or an autocommit statement) that the service layer opened.

PostgreSQL: one statement does everything. Its CTEs lock the accounts in id
order (``SELECT ... FOR UPDATE``, deadlock-free), check funds, range and the
idempotency key, update both balances and append the entry, and return the
result; nothing is written when a check fails, and the statement reports the
locked figures so that the service can say exactly why. Run in autocommit,
it is the whole transaction in one round trip.

SQLite: the transaction already holds the write lock (``BEGIN IMMEDIATE``),
so the checks run in Python between a read and the writes.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tokenledger.amounts import MAX_UNITS
from tokenledger.books import Balances

__all__ = [
    "PostgresOutcome",
    "lock_sqlite",
    "post_postgresql",
    "sqlite_timestamp",
    "write_sqlite",
]

_POSTGRES_POST = """
WITH locked AS MATERIALIZED (
    SELECT account_id, balance, total_earned, total_spent, total_staked, updated_at
    FROM token_accounts
    WHERE account_id IN (%(first)s, %(second)s)
    ORDER BY account_id
    FOR UPDATE
),
prior AS MATERIALIZED (
    SELECT id FROM token_ledger WHERE idempotency_key = %(key)s
),
checked AS MATERIALIZED (
    SELECT
        (SELECT count(*) FROM locked) = %(parties)s
        AND NOT EXISTS (SELECT 1 FROM prior)
        AND NOT EXISTS (
            SELECT 1 FROM locked WHERE account_id = %(sender)s
            AND (balance < %(amount)s OR total_spent > %(max)s - %(amount)s)
        )
        AND NOT EXISTS (
            SELECT 1 FROM locked WHERE account_id = %(receiver)s
            AND (balance > %(max)s - %(amount)s OR total_earned > %(max)s - %(amount)s)
        ) AS ok,
        greatest(clock_timestamp(), (SELECT max(updated_at) FROM locked)) AS ts
),
moved AS (
    -- New figures come from the locked rows, never from the row version the
    -- UPDATE's own scan sees: that version may predate a concurrent commit,
    -- and PostgreSQL checks constraints on it before it re-reads the latest.
    UPDATE token_accounts AS a
    SET balance = l.balance
            + CASE WHEN l.account_id = %(receiver)s THEN %(amount)s ELSE -%(amount)s END,
        total_earned = l.total_earned
            + CASE WHEN l.account_id = %(receiver)s THEN %(amount)s ELSE 0 END,
        total_spent = l.total_spent
            + CASE WHEN l.account_id = %(sender)s THEN %(amount)s ELSE 0 END,
        updated_at = checked.ts
    FROM locked AS l, checked
    WHERE checked.ok AND a.account_id = l.account_id
        AND a.account_id IN (%(first)s, %(second)s)
    RETURNING a.account_id, a.balance
),
written AS (
    INSERT INTO token_ledger (
        timestamp, from_account, to_account, amount, reason, reference_type,
        reference_id, memo, balance_after_from, balance_after_to, idempotency_key,
        writer_txid
    )
    SELECT checked.ts, %(sender)s, %(receiver)s, %(amount)s, %(reason)s,
        %(reference_type)s, %(reference_id)s, %(memo)s,
        (SELECT balance FROM moved WHERE account_id = %(sender)s),
        (SELECT balance FROM moved WHERE account_id = %(receiver)s),
        %(key)s, txid_current()
    FROM checked
    WHERE checked.ok
    RETURNING id, timestamp, balance_after_from, balance_after_to
)
SELECT written.id, written.timestamp, written.balance_after_from, written.balance_after_to,
    (SELECT id FROM prior) AS prior_id,
    CASE WHEN written.id IS NULL THEN (
        SELECT json_agg(json_build_array(
            account_id, balance, total_earned, total_spent, total_staked, updated_at
        ))
        FROM locked
    ) END AS locked
FROM (SELECT 1) AS one LEFT JOIN written ON true
"""


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


# psycopg 2 sends each statement as text and PostgreSQL plans it every time;
# planning this statement costs about as much as running it. Each connection
# therefore prepares it once. (psycopg 3 prepares repeated statements itself.)
_PREPARED_NAME = "tokenledger_post_entry_v1"
_PARAMETERS = (
    ("first", "varchar"),
    ("second", "varchar"),
    ("parties", "bigint"),
    ("sender", "varchar"),
    ("receiver", "varchar"),
    ("amount", "bigint"),
    ("max", "bigint"),
    ("reason", "varchar"),
    ("reference_type", "varchar"),
    ("reference_id", "varchar"),
    ("memo", "text"),
    ("key", "varchar"),
)
_prepared_on: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _prepare_sql() -> str:
    sql = _POSTGRES_POST
    for number, (name, _) in enumerate(_PARAMETERS, start=1):
        sql = sql.replace(f"%({name})s", f"${number}")
    types = ", ".join(kind for _, kind in _PARAMETERS)
    return f"PREPARE {_PREPARED_NAME} ({types}) AS {sql}"


_PREPARE = _prepare_sql()
_EXECUTE = f"EXECUTE {_PREPARED_NAME} (" + ", ".join(f"%({name})s" for name, _ in _PARAMETERS) + ")"


def post_postgresql(
    cursor: Any,
    *,
    sender: str,
    receiver: str,
    accounts: Sequence[str],
    amount: int,
    reason: str,
    reference_type: str | None,
    reference_id: str | None,
    memo: str | None,
    key: str | None,
) -> PostgresOutcome:
    """Run the one-statement write; ``accounts`` are the parties that have rows (1 or 2)."""
    parameters = {
        "first": accounts[0],
        "second": accounts[-1],
        "parties": len(accounts),
        "sender": sender,
        "receiver": receiver,
        "amount": amount,
        "max": MAX_UNITS,
        "reason": reason,
        "reference_type": reference_type,
        "reference_id": reference_id,
        "memo": memo,
        "key": key,
    }
    connection = cursor.connection
    if type(connection).__module__.startswith("psycopg2"):
        if not _prepared_on.get(connection):
            cursor.execute(_PREPARE)  # PREPARE outlives a rolled-back transaction
            _prepared_on[connection] = True
        cursor.execute(_EXECUTE, parameters)
    else:
        cursor.execute(_POSTGRES_POST, parameters)
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
    "idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
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
    (entry_id,) = cursor.execute(
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
    ).fetchone()
    cursor.executemany(
        _SQLITE_SAVE,
        [
            (b.balance, b.total_earned, b.total_spent, b.total_staked, stamp, account_id)
            for account_id, b in changed.items()
        ],
    )
    return int(entry_id)
