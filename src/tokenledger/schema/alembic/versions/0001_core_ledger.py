"""Core ledger: token_accounts, token_ledger, append-only journal.

Revision ID: 0001_core_ledger
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenledger.schema.ddl import create_append_only_guard, drop_append_only_guard

revision = "0001_core_ledger"
down_revision = None
branch_labels = None
depends_on = None

RESERVED = "({col} = 'system' OR substr({col}, 1, 7) = 'system:')"
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN_SET = "{col} IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "token_accounts",
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_earned", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_spent", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_staked", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_token_accounts"),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_token_accounts_balance_nonnegative")),
        sa.CheckConstraint(
            "total_earned >= 0", name=op.f("ck_token_accounts_total_earned_nonnegative")
        ),
        sa.CheckConstraint(
            "total_spent >= 0", name=op.f("ck_token_accounts_total_spent_nonnegative")
        ),
        sa.CheckConstraint(
            "total_staked >= 0", name=op.f("ck_token_accounts_total_staked_nonnegative")
        ),
        sa.CheckConstraint(
            f"NOT {RESERVED.format(col='account_id')}", name=op.f("ck_token_accounts_not_reserved")
        ),
        sa.CheckConstraint("account_id <> ''", name=op.f("ck_token_accounts_id_not_empty")),
    )
    op.create_table(
        "token_ledger",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_account", sa.String(255), nullable=False),
        sa.Column("to_account", sa.String(255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("reference_type", sa.String(255), nullable=True),
        sa.Column("reference_id", sa.String(255), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("balance_after_from", sa.BigInteger(), nullable=True),
        sa.Column("balance_after_to", sa.BigInteger(), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_token_ledger"),
        sa.CheckConstraint("amount > 0", name=op.f("ck_token_ledger_amount_positive")),
        sa.CheckConstraint(
            "from_account <> to_account", name=op.f("ck_token_ledger_distinct_parties")
        ),
        sa.CheckConstraint(
            "balance_after_from >= 0", name=op.f("ck_token_ledger_balance_after_from_nonnegative")
        ),
        sa.CheckConstraint(
            "balance_after_to >= 0", name=op.f("ck_token_ledger_balance_after_to_nonnegative")
        ),
        sa.CheckConstraint(
            f"(balance_after_from IS NULL) = {RESERVED.format(col='from_account')}",
            name=op.f("ck_token_ledger_from_balance_iff_account"),
        ),
        sa.CheckConstraint(
            f"(balance_after_to IS NULL) = {RESERVED.format(col='to_account')}",
            name=op.f("ck_token_ledger_to_balance_iff_account"),
        ),
    )
    op.create_index("idx_ledger_from", "token_ledger", ["from_account", "timestamp", "id"])
    op.create_index("idx_ledger_to", "token_ledger", ["to_account", "timestamp", "id"])
    op.create_index("idx_ledger_time", "token_ledger", ["timestamp"])
    op.create_index("idx_ledger_reason", "token_ledger", ["reason"])
    where = sa.text(WHEN_SET.format(col="idempotency_key"))
    op.create_index(
        "uq_token_ledger_idempotency_key",
        "token_ledger",
        ["idempotency_key"],
        unique=True,
        postgresql_where=where,
        sqlite_where=where,
    )
    create_append_only_guard("token_ledger")


def downgrade() -> None:
    drop_append_only_guard("token_ledger")
    op.drop_table("token_ledger")
    op.drop_table("token_accounts")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS tokenledger_refuse_change()")
