"""The chain bridge: the token contracts deployed, and where each entry landed on chain.

* ``token_chain_deployments``: one row per token contract deployed for the
  ledger (chain id, address, operator, deploying transaction); the newest
  is the one ``tokenledger chain push`` replays the journal onto.
* ``token_chain_receipts``: per deployment and chain position, the entry's
  transaction hash, block number, the log index of its ``Transfer`` log and
  the receipt status. A cache of the chain, re-derived from its logs.

Additive: two new tables, on SQLite and PostgreSQL alike.

Revision ID: 0008_chain_bridge
Revises: 0007_group_commit
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_chain_bridge"
down_revision = "0007_group_commit"
branch_labels = None
depends_on = None

# An autoincrementing 64-bit key; on SQLite only INTEGER aliases the rowid.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "token_chain_deployments",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("operator", sa.String(42), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_token_chain_deployments"),
        sa.UniqueConstraint(
            "chain_id", "address", name="uq_token_chain_deployments_chain_id_address"
        ),
    )
    op.create_table(
        "token_chain_receipts",
        sa.Column("deployment_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", "seq", name="pk_token_chain_receipts"),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["token_chain_deployments.id"],
            name="fk_token_chain_receipts_deployment_id_token_chain_deployments",
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["token_ledger.id"],
            name="fk_token_chain_receipts_entry_id_token_ledger",
        ),
    )
    op.create_index("ix_token_chain_receipts_entry_id", "token_chain_receipts", ["entry_id"])


def downgrade() -> None:
    op.drop_index("ix_token_chain_receipts_entry_id", table_name="token_chain_receipts")
    op.drop_table("token_chain_receipts")
    op.drop_table("token_chain_deployments")
