"""Tamper evidence from the moment of commit: entry and stake digests, digested chain links.

* ``token_ledger.digest``: SHA-256 of every stored column of the entry
  (encoding version 2, ``domain/hashing.py``), written by the statement that
  writes the entry. Entries already there keep a NULL digest; the chain
  (encoding version 1) covers them once sealed, and
  ``token_chain_head.legacy_entries_to`` records the last of them.
* ``token_stakes.digest``: the same over a stake row, rewritten when it closes.
  Existing stakes get theirs here.
* ``token_chain.encoding``: 1 for the links sealed so far, 2 for links over an
  entry's digest.
* PostgreSQL: ``tokenledger_post_entry_v2`` (the one-entry write, now with the
  digest), the digest functions, and two triggers: one fills an entry's digest
  when its writer did not (an older release during a rolling deploy; the
  trigger's condition costs the writers that do nothing), one writes a stake's
  digest on every insert and update. Version 1 of the function stays, for the
  release before this one.

Every change is additive (nullable columns, constant defaults, new functions
and triggers): the release before this one keeps working during a deploy.

Revision ID: 0005_tamper_evidence
Revises: 0004_post_entry_function
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from tokenledger.domain.hashing import stake_digest
from tokenledger.schema.ddl import install_function

revision = "0005_tamper_evidence"
down_revision = "0004_post_entry_function"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    # SQLite adds a column in place; a batch copy would drop the journal's triggers.
    op.execute("ALTER TABLE token_ledger ADD COLUMN digest VARCHAR(64)")
    op.execute("ALTER TABLE token_stakes ADD COLUMN digest VARCHAR(64)")
    op.execute("ALTER TABLE token_chain ADD COLUMN encoding SMALLINT DEFAULT 1 NOT NULL")
    op.execute(
        "ALTER TABLE token_chain_head ADD COLUMN legacy_entries_to BIGINT DEFAULT 0 NOT NULL"
    )
    op.execute(
        "UPDATE token_chain_head SET legacy_entries_to = "
        "(SELECT coalesce(max(id), 0) FROM token_ledger)"
    )
    if postgresql:
        install_function("digests_v2")
        install_function("post_entry_v2")
        op.execute(
            "CREATE TRIGGER token_ledger_digest BEFORE INSERT ON token_ledger FOR EACH ROW "
            "WHEN (NEW.digest IS NULL) EXECUTE FUNCTION tokenledger_fill_entry_digest()"
        )
        op.execute(
            "CREATE TRIGGER token_stakes_digest BEFORE INSERT OR UPDATE ON token_stakes "
            "FOR EACH ROW EXECUTE FUNCTION tokenledger_fill_stake_digest()"
        )
        op.execute("UPDATE token_stakes SET digest = NULL")  # the trigger writes each one
        return
    stakes = sa.table(
        "token_stakes",
        *(
            sa.column(name)
            for name in (
                "id",
                "account_id",
                "amount",
                "status",
                "reason",
                "reference_type",
                "reference_id",
                "memo",
                "expires_at",
                "created_at",
                "closed_at",
                "digest",
            )
        ),
    )
    rows = bind.execute(sa.text("SELECT * FROM token_stakes")).mappings().all()
    for row in rows:
        bind.execute(
            stakes.update()
            .where(stakes.c.id == row["id"])
            .values(digest=stake_digest(_stake_times(row)))
        )


def _stake_times(row: sa.RowMapping) -> dict[str, object]:
    """A stake row as the digest reads it (SQLite keeps times as UTC text)."""
    values = dict(row)
    for name in ("expires_at", "created_at", "closed_at"):
        text = values[name]
        if isinstance(text, str):
            values[name] = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return values


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS token_stakes_digest ON token_stakes")
        op.execute("DROP TRIGGER IF EXISTS token_ledger_digest ON token_ledger")
        op.execute(
            "DROP FUNCTION IF EXISTS tokenledger_post_entry_v2("
            "varchar, varchar, bigint, varchar, varchar, varchar, text, varchar)"
        )
        for function in (
            "tokenledger_fill_stake_digest()",
            "tokenledger_fill_entry_digest()",
            "tokenledger_stake_digest_v1(bigint, varchar, bigint, varchar, varchar, varchar, "
            "varchar, text, timestamptz, timestamptz, timestamptz)",
            "tokenledger_entry_digest_v2(bigint, timestamptz, varchar, varchar, bigint, varchar, "
            "varchar, varchar, text, bigint, bigint, varchar, bigint, bigint, bigint)",
            "tokenledger_digest_time(timestamptz)",
            "tokenledger_digest_field(text)",
        ):
            op.execute(f"DROP FUNCTION IF EXISTS {function}")
    # SQLite (3.35+) drops a column without a foreign key or index in place.
    op.execute("ALTER TABLE token_chain_head DROP COLUMN legacy_entries_to")
    op.execute("ALTER TABLE token_chain DROP COLUMN encoding")
    op.execute("ALTER TABLE token_stakes DROP COLUMN digest")
    op.execute("ALTER TABLE token_ledger DROP COLUMN digest")
