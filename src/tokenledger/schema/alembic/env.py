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

from tokenledger.schema.migrations import VERSION_TABLE, include_object, resolve_url
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


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        context.run_migrations()


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
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
