"""PostgreSQL: postings through arrays, one entry through one server-side call.

One entry (transfer, mint, burn): ``tokenledger_post_entry_v3``
(``sql/post_entry_v3.sql``, installed by revision 0007) locks the parties'
rows in id order, checks the idempotency key, funds and range, writes both
balances and appends the entry with its digest, with the server's clock.
Run in autocommit,
the whole transaction is one round trip. When a check fails it writes
nothing and returns the locked figures, and this adapter runs the Python
rule (``domain.postings``) over them to say exactly why; if the Python rule
would have accepted, the two rules disagree, which is a bug and raised as
``InternalError``.

A posting (batches, stakes, reversals, account creation): the accounts are
locked with one ``SELECT ... FOR UPDATE`` ordered by id (no two writers can
deadlock), which also reads the server's clock; the entries go in with one
``INSERT ... SELECT FROM unnest(...)``, each with the digest the same
statement computes (``tokenledger_entry_digest_v2_flat``, encoding 2 as one
expression the planner inlines: ``sql/digests_v2_flat.sql``), and the
figures with one ``UPDATE ... FROM unnest(...)``, each column sent as one
array literal.

Several one-entry writes at once (group commit): ``tokenledger_post_entries_v1``
(``sql/post_entries_v1.sql``) takes one array per argument, locks every
account of the group in id order, and posts each entry through the one-entry
function, one result row per entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from sqlalchemy import Connection, func, select, text

from tokenledger.domain.books import Balances
from tokenledger.domain.entries import WRITTEN_COLUMNS
from tokenledger.domain.errors import InternalError, LedgerError
from tokenledger.domain.hashing import ENTRY_DIGEST_COLUMNS
from tokenledger.domain.postings import Draft, Locked, Posting, not_before
from tokenledger.domain.records import LedgerEntry, entry_from_row
from tokenledger.storage.dialect import postgres_array
from tokenledger.storage.models import accounts_table
from tokenledger.storage.posting.port import IdempotencyKeyTaken, Outcome, Scope

__all__ = ["POST_ENTRY_FUNCTION", "POST_ENTRY_SQL", "PostgresPoster", "function_sql"]

# The one-entry function this adapter calls, and the file of its text (sql/*.sql).
POST_ENTRY_SQL = "post_entry_v3"
POST_ENTRY_FUNCTION = f"tokenledger_{POST_ENTRY_SQL}"

_POST_MANY = (
    "SELECT entry_id, entry_time, after_from, after_to, prior_id, locked "
    "FROM tokenledger_post_entries_v1(CAST(%(senders)s AS varchar[]), "
    "CAST(%(receivers)s AS varchar[]), CAST(%(amounts)s AS bigint[]), "
    "CAST(%(reasons)s AS varchar[]), CAST(%(reference_types)s AS varchar[]), "
    "CAST(%(reference_ids)s AS varchar[]), CAST(%(memos)s AS text[]), "
    "CAST(%(keys)s AS varchar[]))"
)
_POST_ONE = (
    "SELECT entry_id, entry_time, after_from, after_to, prior_id, locked "
    f"FROM {POST_ENTRY_FUNCTION}(%(sender)s, %(receiver)s, %(amount)s, %(reason)s, "
    "%(reference_type)s, %(reference_id)s, %(memo)s, %(key)s)"
)

_a = accounts_table.c
_LOCK = (
    select(
        _a.account_id,
        _a.balance,
        _a.total_earned,
        _a.total_spent,
        _a.total_staked,
        _a.updated_at,
        func.clock_timestamp().label("now"),
    )
    .order_by(_a.account_id)
    .with_for_update()
)

# The SQL type of each written column, for its array parameter.
_ARRAY_TYPES = {
    "timestamp": "timestamptz",
    "from_account": "varchar",
    "to_account": "varchar",
    "amount": "bigint",
    "reason": "varchar",
    "reference_type": "varchar",
    "reference_id": "varchar",
    "memo": "text",
    "balance_after_from": "bigint",
    "balance_after_to": "bigint",
    "idempotency_key": "varchar",
    "stake_id": "bigint",
    "reverses_entry_id": "bigint",
}


def _append_sql() -> str:
    """Entries from one array per column, each with the digest computed by this statement.

    An entry whose id is NULL takes the next from the sequence; the digest
    covers the id and the writer's transaction id, so both are settled in the
    inner query before it is computed.
    """
    columns = ", ".join(WRITTEN_COLUMNS)
    arrays = ", ".join(f"CAST(:{c} AS {_ARRAY_TYPES[c]}[])" for c in WRITTEN_COLUMNS)
    digest_of = ", ".join(f"w.{c}" for c in ENTRY_DIGEST_COLUMNS)
    return (
        f"INSERT INTO token_ledger (id, {columns}, writer_txid, digest) "
        f"SELECT w.id, {', '.join(f'w.{c}' for c in WRITTEN_COLUMNS)}, w.writer_txid, "
        f"tokenledger_entry_digest_v2_flat({digest_of}) "
        f"FROM (SELECT coalesce(v.id, nextval('token_ledger_id_seq'::regclass)) AS id, "
        f"{', '.join(f'v.{c}' for c in WRITTEN_COLUMNS)}, txid_current() AS writer_txid "
        f"FROM unnest(CAST(:id AS bigint[]), {arrays}) AS v(id, {columns})) AS w "
        "RETURNING id"
    )


# One entry takes its id from the sequence in the statement; several have
# theirs reserved first, in increasing order, so that ids follow the order in
# which their balances were computed (the order ``verify`` replays them in).
_APPEND = text(_append_sql())
_RESERVE_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('token_ledger', 'id')) FROM generate_series(1, :n)"
)
_SAVE = text(
    "UPDATE token_accounts AS a SET balance = v.balance, total_earned = v.total_earned, "
    "total_spent = v.total_spent, total_staked = v.total_staked, updated_at = :now "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:balance AS bigint[]), "
    "CAST(:earned AS bigint[]), CAST(:spent AS bigint[]), CAST(:staked AS bigint[])) "
    "AS v(account_id, balance, total_earned, total_spent, total_staked) "
    "WHERE a.account_id = v.account_id"
)


def function_sql(name: str) -> str:
    """The text of a server function shipped with the package (``sql/<name>.sql``)."""
    return (resources.files(__package__) / "sql" / f"{name}.sql").read_text(encoding="utf-8")


class PostgresPoster:
    """The PostgreSQL adapter of the posting port."""

    one_entry_scope: Scope = "statement"

    def lock(self, connection: Connection, account_ids: Iterable[str]) -> Locked:
        ids = sorted(set(account_ids))
        rows = connection.execute(_LOCK.where(_a.account_id.in_(ids))).all() if ids else []
        figures = {
            row.account_id: Balances(
                row.balance, row.total_earned, row.total_spent, row.total_staked
            )
            for row in rows
        }
        # Every row carries the clock; without a row there is nothing to post.
        now = max((row.now for row in rows), default=None)
        if now is None:
            now = connection.execute(select(func.clock_timestamp())).scalar_one()
        return Locked(figures, now, not_before(now, *(row.updated_at for row in rows)))

    def write(self, connection: Connection, posting: Posting) -> list[int]:
        rows = posting.rows
        columns = {c: postgres_array(row[c] for row in rows) for c in WRITTEN_COLUMNS}
        if len(rows) == 1:
            ids = [connection.execute(_APPEND, {"id": "{NULL}", **columns}).scalar_one()]
        else:
            ids = sorted(connection.execute(_RESERVE_IDS, {"n": len(rows)}).scalars())
            connection.execute(_APPEND, {"id": postgres_array(ids), **columns})
        changed = posting.changed_books()
        if changed:
            figures = list(changed.values())
            connection.execute(
                _SAVE,
                {
                    "ids": postgres_array(changed),
                    "balance": postgres_array(b.balance for b in figures),
                    "earned": postgres_array(b.total_earned for b in figures),
                    "spent": postgres_array(b.total_spent for b in figures),
                    "staked": postgres_array(b.total_staked for b in figures),
                    "now": posting.timestamp,
                },
            )
        return ids

    def post_one(self, connection: Connection, draft: Draft) -> LedgerEntry:
        outcome = _outcome(
            draft,
            connection.exec_driver_sql(
                _POST_ONE,
                {
                    "sender": draft.from_account,
                    "receiver": draft.to_account,
                    "amount": draft.amount,
                    "reason": draft.reason,
                    "reference_type": draft.reference_type,
                    "reference_id": draft.reference_id,
                    "memo": draft.memo,
                    "key": draft.idempotency_key,
                },
            ).one(),
        )
        if isinstance(outcome, LedgerEntry):
            return outcome
        raise outcome

    def post_many(self, connection: Connection, drafts: Sequence[Draft]) -> list[Outcome]:
        rows = connection.exec_driver_sql(
            _POST_MANY,
            {
                "senders": postgres_array(d.from_account for d in drafts),
                "receivers": postgres_array(d.to_account for d in drafts),
                "amounts": postgres_array(d.amount for d in drafts),
                "reasons": postgres_array(d.reason for d in drafts),
                "reference_types": postgres_array(d.reference_type for d in drafts),
                "reference_ids": postgres_array(d.reference_id for d in drafts),
                "memos": postgres_array(d.memo for d in drafts),
                "keys": postgres_array(d.idempotency_key for d in drafts),
            },
        ).all()
        return [_outcome(draft, row) for draft, row in zip(drafts, rows, strict=True)]


def _outcome(draft: Draft, row: Any) -> Outcome:
    """What the server function's row says about one draft."""
    entry_id, timestamp, after_from, after_to, prior_id, locked = row
    if prior_id is not None:
        return IdempotencyKeyTaken(draft.idempotency_key)
    if entry_id is None:
        return _refusal(draft, locked)
    return entry_from_row(
        {
            **draft.as_row(),
            "id": entry_id,
            "timestamp": timestamp,
            "balance_after_from": after_from,
            "balance_after_to": after_to,
        }
    )


def _refusal(draft: Draft, locked: list[list[Any]] | None) -> LedgerError:
    """Why the server function refused, from the figures it locked."""
    figures = {
        account_id: Balances(int(balance), int(earned), int(spent), int(staked))
        for account_id, balance, earned, spent, staked, _ in locked or ()
    }
    moments = [datetime.fromisoformat(updated_at) for *_, updated_at in locked or ()]
    posting = Posting(figures, max(moments, default=datetime.min.replace(tzinfo=UTC)))
    try:
        posting.add(draft)
    except LedgerError as exc:
        return exc
    return InternalError(
        f"{POST_ENTRY_FUNCTION} refused an entry that the Python posting rule accepts "
        f"(from {draft.from_account!r} to {draft.to_account!r}, {draft.amount} units, "
        f"locked figures {locked!r}): the two rules disagree; nothing was written"
    )
