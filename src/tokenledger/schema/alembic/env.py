"""Alembic environment for tokenledger's own tables.

It keeps to its own version table (``tokenledger_alembic_version``) and its
own tables, so it can share a database with a host application's Alembic.
Run from the repository root (``alembic upgrade head``), or programmatically
through ``tokenledger.migrations``, which hands over a connection.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text

from tokenledger.schema.migrations import (
    DEFAULT_LOCK_TIMEOUT_MS,
    VERSION_TABLE,
    include_object,
    resolve_url,
)
from tokenledger.storage.engines import create_engine
from tokenledger.storage.models import Base

# Any fixed number: serialises concurrent deploys running migrations on PostgreSQL.
_MIGRATION_LOCK_KEY = 0x746F6B6C  # "tokl"


if context.config.config_file_name is not None and context.config.attributes.get(
    "configure_logger", True
):
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=True,  # SQLite can only change tables by copying them
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def _lock_timeout() -> str:
    return str(context.config.attributes.get("lock_timeout_ms", DEFAULT_LOCK_TIMEOUT_MS))


def _run(connection: Connection) -> None:
    if connection.in_transaction():
        _run_in_one_transaction(connection)
    elif connection.dialect.name == "postgresql":
        with connection.begin():
            _run_in_one_transaction(connection)
    else:
        _run_online_sqlite(connection)


def _run_in_one_transaction(connection: Connection) -> None:
    """Every pending revision (up to the one asked for) in the connection's transaction.

    PostgreSQL: a transaction-level advisory lock lets one deploy migrate at
    a time (a second waits, then finds the work done), and ``lock_timeout``
    bounds how long a statement waits for a table lock, and so how long the
    writers queued behind that wait are held up. Both end with the
    transaction, so PgBouncer's transaction pooling cannot strand them.
    ``tokenledger.migrations.upgrade`` asks for one revision at a time and
    runs a step that timed out again.
    """
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            connection.execute(text(f"SET LOCAL lock_timeout = {int(_lock_timeout())}"))
        context.run_migrations()


def _run_online_sqlite(connection: Connection) -> None:
    """SQLite: the whole upgrade under the write lock, taken at BEGIN.

    Writers wait for it up to their busy timeout and then see either the old
    schema or the new one, never a half-migrated file; a second upgrade
    waits, then finds the work done.
    """
    connection.exec_driver_sql("BEGIN IMMEDIATE")
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


def run_offline() -> None:
    _configure(
        url=resolve_url(context.config.get_main_option("sqlalchemy.url")), literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    engine = create_engine(resolve_url(context.config.get_main_option("sqlalchemy.url")))
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
