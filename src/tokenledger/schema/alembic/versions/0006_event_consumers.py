"""The event feed's durable consumers: a named position in the sealed chain.

A consumer's position is the chain ``seq`` of the last event it has
committed; it only moves forward, and it can be moved inside the host's own
transaction (``ledger.using(connection).consumer(name).commit(seq)``).
Additive: a new table.

Revision ID: 0006_event_consumers
Revises: 0005_tamper_evidence
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_event_consumers"
down_revision = "0005_tamper_evidence"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token_consumers",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("position", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_token_consumers"),
        sa.CheckConstraint("position >= 0", name=op.f("ck_token_consumers_position_nonnegative")),
        sa.CheckConstraint("name <> ''", name=op.f("ck_token_consumers_name_not_empty")),
    )


def downgrade() -> None:
    op.drop_table("token_consumers")
