"""PostgreSQL: group commit, and the digest as one expression the planner inlines.

* ``tokenledger_post_entries_v1`` (``storage/posting/sql/post_entries_v1.sql``):
  several one-entry writes in one statement and one commit. It locks every
  account of the group in id order, then posts each entry on its own,
  accepted or refused as if alone.
* ``tokenledger_entry_digest_v2_flat`` (``digests_v2_flat.sql``): the
  digest of ``tokenledger_entry_digest_v2``, the same bytes, written as one
  expression. The helper calls of ``_v2`` are not inlined and cost more than
  the hashing (measured: about 5 times the flat function's time over 1,000
  entries).
* ``tokenledger_post_entry_v3``: ``_v2`` with the flat digest.

SQLite has no server functions; nothing changes there. Additive: the
release before this one keeps calling ``_v2``, which stays.

Revision ID: 0007_group_commit
Revises: 0006_event_consumers
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from tokenledger.schema.ddl import install_function

revision = "0007_group_commit"
down_revision = "0006_event_consumers"
branch_labels = None
depends_on = None

_ENTRY_ARGUMENTS = "varchar, varchar, bigint, varchar, varchar, varchar, text, varchar"


def upgrade() -> None:
    install_function("digests_v2_flat")
    install_function("post_entry_v3")
    install_function("post_entries_v1")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "DROP FUNCTION IF EXISTS tokenledger_post_entries_v1("
        "varchar[], varchar[], bigint[], varchar[], varchar[], varchar[], text[], varchar[])"
    )
    op.execute(f"DROP FUNCTION IF EXISTS tokenledger_post_entry_v3({_ENTRY_ARGUMENTS})")
    op.execute(
        "DROP FUNCTION IF EXISTS tokenledger_entry_digest_v2_flat("
        "bigint, timestamptz, varchar, varchar, bigint, varchar, varchar, varchar, text, "
        "bigint, bigint, varchar, bigint, bigint, bigint)"
    )
