"""DDL the migrations share: the append-only guards, and the server functions' text.

Revisions import these helpers, so their output must never change for an
existing revision; write a new helper rather than alter one.
"""

from __future__ import annotations

from alembic import op

from tokenledger.storage.posting.postgres import function_sql

__all__ = ["create_append_only_guard", "drop_append_only_guard", "install_function"]

_REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION tokenledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tokenledger: % on % is refused: the table is append-only',
        TG_OP, TG_TABLE_NAME;
END
$$
"""


def create_append_only_guard(table: str) -> None:
    """Make the database itself refuse UPDATE and DELETE (and TRUNCATE) of ``table``."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_REFUSE_FUNCTION)
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION tokenledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tokenledger_refuse_change()"
        )
        return
    for event in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'tokenledger: {event} on {table} is refused: "
            "the table is append-only'); END"
        )


def drop_append_only_guard(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        return
    op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
    op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")


def install_function(name: str) -> None:
    """Install a server function shipped as ``storage/posting/sql/<name>.sql`` (PostgreSQL).

    A released file never changes (a test pins each file's hash): a changed
    function is a new file, with a new name, installed by a new revision.
    """
    if op.get_bind().dialect.name == "postgresql":
        op.execute(function_sql(name))
