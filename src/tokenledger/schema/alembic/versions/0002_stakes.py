"""Stakes: token_stakes, and token_ledger.stake_id linking entries to their stake.

Existing rows are untouched: the new column is NULL for them.

Revision ID: 0002_stakes
Revises: 0001_core_ledger
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenledger.schema.ddl import create_append_only_guard, drop_append_only_guard

revision = "0002_stakes"
down_revision = "0001_core_ledger"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN = sa.text("status = 'open'")
HAS_STAKE = sa.text("stake_id IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "token_stakes",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("reference_type", sa.String(255), nullable=True),
        sa.Column("reference_id", sa.String(255), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_token_stakes"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["token_accounts.account_id"],
            name="fk_token_stakes_account_id_token_accounts",
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_token_stakes_amount_positive")),
        sa.CheckConstraint(
            "status IN ('open', 'settled', 'released', 'expired')",
            name=op.f("ck_token_stakes_status_known"),
        ),
        sa.CheckConstraint(
            "(status = 'open') = (closed_at IS NULL)",
            name=op.f("ck_token_stakes_closed_iff_not_open"),
        ),
    )
    op.create_index("ix_token_stakes_account_id_status", "token_stakes", ["account_id", "status"])
    op.create_index(
        "ix_token_stakes_open_expiry",
        "token_stakes",
        ["expires_at"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.add_column("token_ledger", sa.Column("stake_id", sa.BigInteger(), nullable=True))
        op.create_foreign_key(
            "fk_token_ledger_stake_id_token_stakes",
            "token_ledger",
            "token_stakes",
            ["stake_id"],
            ["id"],
        )
    else:
        # SQLite adds a column with its foreign key in place; a batch copy of
        # the journal is not needed (and would drop its triggers).
        op.execute(
            "ALTER TABLE token_ledger ADD COLUMN stake_id BIGINT "
            "CONSTRAINT fk_token_ledger_stake_id_token_stakes REFERENCES token_stakes (id)"
        )
    op.create_index(
        "ix_token_ledger_stake_id",
        "token_ledger",
        ["stake_id"],
        postgresql_where=HAS_STAKE,
        sqlite_where=HAS_STAKE,
    )


def downgrade() -> None:
    op.drop_index("ix_token_ledger_stake_id", table_name="token_ledger")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(
            "fk_token_ledger_stake_id_token_stakes", "token_ledger", type_="foreignkey"
        )
        op.drop_column("token_ledger", "stake_id")
    else:
        drop_sqlite_journal_column("stake_id")
    op.drop_index("ix_token_stakes_open_expiry", table_name="token_stakes")
    op.drop_index("ix_token_stakes_account_id_status", table_name="token_stakes")
    op.drop_table("token_stakes")


def drop_sqlite_journal_column(column: str) -> None:
    """SQLite cannot drop a column that has a foreign key: copy the table without it.

    The copy loses the journal's triggers, so they are put back afterwards.
    """
    drop_append_only_guard("token_ledger")
    with op.batch_alter_table("token_ledger", recreate="always") as batch:
        batch.drop_column(column)
    create_append_only_guard("token_ledger")
