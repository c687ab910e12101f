"""Audit: reversals, the sealed hash chain and Merkle checkpoints.

Adds token_ledger.reverses_entry_id and token_ledger.writer_txid (0 for the
rows already there, the writing transaction's id for new rows on
PostgreSQL), and the tables token_chain, token_chain_head, token_checkpoints.
Existing rows are not modified.

Revision ID: 0003_audit_chain
Revises: 0002_stakes
Create Date: 2026-11-23
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from tokenledger.schema.ddl import create_append_only_guard, drop_append_only_guard

revision = "0003_audit_chain"
down_revision = "0002_stakes"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GENESIS_HASH = "0" * 64
HAS_REVERSAL = sa.text("reverses_entry_id IS NOT NULL")
HAS_TXID = sa.text("writer_txid > 0")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.add_column(
            "token_ledger", sa.Column("reverses_entry_id", sa.BigInteger(), nullable=True)
        )
        op.create_foreign_key(
            "fk_token_ledger_reverses_entry_id_token_ledger",
            "token_ledger",
            "token_ledger",
            ["reverses_entry_id"],
            ["id"],
        )
        # A constant default fills existing rows without rewriting them;
        # new rows then record their transaction.
        op.add_column(
            "token_ledger",
            sa.Column("writer_txid", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        )
        op.alter_column("token_ledger", "writer_txid", server_default=sa.text("txid_current()"))
    else:
        op.execute(
            "ALTER TABLE token_ledger ADD COLUMN reverses_entry_id BIGINT "
            "CONSTRAINT fk_token_ledger_reverses_entry_id_token_ledger "
            "REFERENCES token_ledger (id)"
        )
        op.execute("ALTER TABLE token_ledger ADD COLUMN writer_txid BIGINT DEFAULT 0 NOT NULL")
    op.create_index(
        "uq_token_ledger_reverses_entry_id",
        "token_ledger",
        ["reverses_entry_id"],
        unique=True,
        postgresql_where=HAS_REVERSAL,
        sqlite_where=HAS_REVERSAL,
    )
    op.create_index(
        "ix_token_ledger_writer_txid",
        "token_ledger",
        ["writer_txid", "id"],
        postgresql_where=HAS_TXID,
        sqlite_where=HAS_TXID,
    )

    op.create_table(
        "token_chain",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_token_chain"),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["token_ledger.id"], name="fk_token_chain_entry_id_token_ledger"
        ),
        sa.UniqueConstraint("entry_id", name="uq_token_chain_entry_id"),
    )
    head = op.create_table(
        "token_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("last_txid", sa.BigInteger(), nullable=False),
        sa.Column("last_entry_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_token_chain_head"),
        sa.CheckConstraint("id = 1", name=op.f("ck_token_chain_head_single_row")),
    )
    op.bulk_insert(
        head,
        [
            {
                "id": 1,
                "seq": 0,
                "hash": GENESIS_HASH,
                "last_txid": 0,
                "last_entry_id": 0,
                "updated_at": datetime.now(UTC),
            }
        ],
    )
    op.create_table(
        "token_checkpoints",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("merkle_root", sa.String(64), nullable=False),
        sa.Column("chain_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_token_checkpoints"),
        sa.UniqueConstraint("last_seq", name="uq_token_checkpoints_last_seq"),
        sa.CheckConstraint(
            "first_seq <= last_seq", name=op.f("ck_token_checkpoints_range_ordered")
        ),
    )
    create_append_only_guard("token_chain")
    create_append_only_guard("token_checkpoints")


def downgrade() -> None:
    drop_append_only_guard("token_checkpoints")
    drop_append_only_guard("token_chain")
    op.drop_table("token_checkpoints")
    op.drop_table("token_chain_head")
    op.drop_table("token_chain")
    op.drop_index("ix_token_ledger_writer_txid", table_name="token_ledger")
    op.drop_index("uq_token_ledger_reverses_entry_id", table_name="token_ledger")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(
            "fk_token_ledger_reverses_entry_id_token_ledger", "token_ledger", type_="foreignkey"
        )
        op.drop_column("token_ledger", "reverses_entry_id")
        op.drop_column("token_ledger", "writer_txid")
        return
    drop_append_only_guard("token_ledger")
    with op.batch_alter_table("token_ledger", recreate="always") as batch:
        batch.drop_column("reverses_entry_id")
        batch.drop_column("writer_txid")
    create_append_only_guard("token_ledger")
