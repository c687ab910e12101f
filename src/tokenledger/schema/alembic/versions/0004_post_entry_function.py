"""PostgreSQL: one server-side call for a one-entry write (transfer, mint, burn).

The function does what the service would otherwise do in several round
trips: lock the parties' rows in id order, check funds and range, write the
new figures and append the entry. Its text is
``tokenledger/storage/posting/sql/post_entry_v1.sql``, beside the adapter
that calls it (``storage/posting/postgres.py``). It runs the same checks as
``tokenledger.domain.postings.Posting``; when it refuses, it writes nothing
and returns the locked figures so that the adapter can explain why.

Versioned by name: a change means a new file and a new function in a new revision.
SQLite has no server-side functions; nothing changes there.

Revision ID: 0004_post_entry_function
Revises: 0003_audit_chain
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

from tokenledger.schema.ddl import install_function

revision = "0004_post_entry_function"
down_revision = "0003_audit_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install_function("post_entry_v1")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS tokenledger_post_entry_v1("
            "varchar, varchar, bigint, varchar, varchar, varchar, text, varchar)"
        )
