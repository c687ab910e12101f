"""Run tokenledger's Alembic migrations from code, e.g. in a deploy pipeline.

The revisions ship inside the package, so this works from an installed wheel
without a repository checkout::

    from tokenledger import migrations
    migrations.upgrade("postgresql+psycopg2://app@db/app")

A host application with its own Alembic environment can keep its
autogenerate away from the ledger's tables with :func:`exclude_ledger_tables`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from tokenledger.domain.errors import StorageError
from tokenledger.storage.engines import create_engine
from tokenledger.storage.models import Base

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_LOCK_TIMEOUT_MS",
    "DEFAULT_URL",
    "LEDGER_TABLES",
    "URL_ENV",
    "VERSION_TABLE",
    "alembic_config",
    "current",
    "downgrade",
    "ensure_embedded_schema",
    "exclude_ledger_tables",
    "head",
    "history",
    "include_object",
    "resolve_url",
    "upgrade",
]

VERSION_TABLE = "tokenledger_alembic_version"

# PostgreSQL: how long one revision waits for a table lock before it is
# rolled back and tried again (writers queued behind it wait no longer).
DEFAULT_LOCK_TIMEOUT_MS = 2_000
# How many times an upgrade that lost a lock wait or a deadlock is run again.
DEFAULT_ATTEMPTS = 8
# SQLSTATEs that roll a revision back without harm: lock_not_available, deadlock_detected.
_RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01"})
URL_ENV = "TOKENLEDGER_DATABASE_URL"
DEFAULT_URL = "sqlite:///tokenledger.db"

# Every table tokenledger owns in a database, its version table included.
LEDGER_TABLES = frozenset(Base.metadata.tables) | {VERSION_TABLE}


def resolve_url(url: str | None = None) -> str:
    """The database URL: the one given, else ``$TOKENLEDGER_DATABASE_URL``, else SQLite."""
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter: only the ledger's own tables (and what hangs off them)."""
    if type_ == "table":
        return name in Base.metadata.tables
    table = getattr(obj, "table", None)
    return table is None or table.name in Base.metadata.tables


def exclude_ledger_tables(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """For a host's ``env.py``: keep its autogenerate off tokenledger's tables."""
    if type_ == "table":
        return name not in LEDGER_TABLES
    table = getattr(obj, "table", None)
    return table is None or table.name not in LEDGER_TABLES


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at the revisions inside the package."""
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("tokenledger.schema") / "alembic")
    )
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(
    target: str | Engine | Connection | None = None,
    revision: str = "head",
    *,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    attempts: int = DEFAULT_ATTEMPTS,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> None:
    """Upgrade the ledger's schema to ``revision`` (default: the newest), while the host writes.

    PostgreSQL: one revision per transaction, each under the migration
    advisory lock (one deploy at a time) and with ``lock_timeout_ms`` on its
    lock waits. A revision that times out, or loses a deadlock to a writer,
    is rolled back whole and run again after a pause (at most ``attempts``
    runs per revision; ``on_retry(attempt, error)`` is told of each); the
    revisions already committed stay. SQLite: the whole upgrade in one
    transaction under the write lock (``BEGIN IMMEDIATE``).

    A caller's ``Connection`` inside a transaction runs every revision in
    that transaction and is never retried: only the caller can run it again.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: a revision failed, or every attempt
            timed out.
        alembic.util.CommandError: ``revision`` is unknown.
    """
    if isinstance(target, Connection) and target.in_transaction():
        with _configured(target) as config:  # the caller's transaction: never retried here
            config.attributes["lock_timeout_ms"] = lock_timeout_ms
            command.upgrade(config, revision)
        return
    owned = not isinstance(target, Engine | Connection)
    bind = target if isinstance(target, Engine | Connection) else create_engine(resolve_url(target))
    try:
        steps = [revision]
        if bind.dialect.name == "postgresql":
            # One revision per transaction: locks are held for one revision only.
            start = current(bind)
            if isinstance(bind, Connection):
                bind.rollback()  # reading the version began a transaction; end it
            steps = _steps_to(start, revision)
        for step in steps:
            _with_retries(bind, step, lock_timeout_ms, attempts, on_retry)
    finally:
        if owned and isinstance(bind, Engine):
            bind.dispose()


def _steps_to(start: str | None, revision: str) -> list[str]:
    """The revisions from after ``start`` up to ``revision``, oldest first (linear history)."""
    order = [name for name, _, _ in history()]
    goal = head() if revision == "head" else revision
    if goal not in order:
        return [revision]  # let Alembic report (or resolve) it
    first = order.index(start) + 1 if start in order else 0
    return order[first : order.index(goal) + 1] or [goal]


def _with_retries(
    bind: Engine | Connection,
    revision: str,
    lock_timeout_ms: int,
    attempts: int,
    on_retry: Callable[[int, BaseException], None] | None,
) -> None:
    for attempt in range(1, max(attempts, 1) + 1):
        try:
            with _configured(bind) as config:
                config.attributes["lock_timeout_ms"] = lock_timeout_ms
                # A revision another deploy already applied is a no-op here.
                command.upgrade(config, revision)
            return
        except DBAPIError as exc:
            if attempt >= attempts or not _retryable(exc):
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            # Jittered backoff: let the writers queued behind the lock drain.
            time.sleep(min(0.1 * 2**attempt, 3.0) * (0.5 + random.random()))  # noqa: S311


def _retryable(exc: DBAPIError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return True
    return "database is locked" in str(orig)  # SQLite's busy timeout ran out


def downgrade(target: str | Engine | Connection | None, revision: str) -> None:
    """Downgrade the ledger's schema to ``revision`` (``"base"`` drops it all)."""
    with _configured(target) as config:
        command.downgrade(config, revision)


def current(target: str | Engine | Connection | None = None) -> str | None:
    """The revision the database is at, or ``None`` for an unmigrated database."""
    if isinstance(target, Connection):
        return _current_of(target)
    engine = target if isinstance(target, Engine) else create_engine(resolve_url(target))
    try:
        with engine.connect() as connection:
            return _current_of(connection)
    finally:
        if not isinstance(target, Engine):
            engine.dispose()


def ensure_embedded_schema(engine: Engine) -> None:
    """Create and migrate an embedded SQLite database on first use, exactly once.

    Many processes may open a fresh file at once (web workers using the seed
    facade, parallel CLI calls): the check and the upgrade run under SQLite's
    write lock (``BEGIN IMMEDIATE``), and the revision is read again once the
    lock is held, so the first process migrates and the others find it done.
    A PostgreSQL database is left alone: its deploy runs the migrations.

    Raises:
        StorageError: the database cannot be opened or migrated.
    """
    if engine.dialect.name != "sqlite":
        return
    try:
        with engine.connect() as connection:
            if _current_of(connection) == head():
                return
            connection.rollback()
            with connection.begin():
                # One migration at a time; every revision runs inside this transaction.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                if _current_of(connection) != head():
                    upgrade(connection)
    except (SQLAlchemyError, CommandError) as exc:
        raise StorageError(f"cannot create or migrate the embedded database: {exc}") from exc


def head() -> str:
    """The newest revision shipped with this version of tokenledger."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("tokenledger ships no migrations")
    return revision


def history() -> list[tuple[str, str | None, str]]:
    """``(revision, down_revision, message)`` from the oldest to the newest."""
    script = ScriptDirectory.from_config(alembic_config())
    revisions = list(script.walk_revisions())
    revisions.reverse()
    return [
        (r.revision, r.down_revision if isinstance(r.down_revision, str) else None, r.doc)
        for r in revisions
    ]


def _current_of(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


@contextmanager
def _configured(target: str | Engine | Connection | None) -> Iterator[Config]:
    if target is None or isinstance(target, str):
        yield alembic_config(resolve_url(target))
        return
    config = alembic_config()
    if isinstance(target, Connection):
        config.attributes["connection"] = target
        yield config
        return
    # No transaction here: env.py decides (one per revision on PostgreSQL,
    # BEGIN IMMEDIATE on SQLite) and commits.
    with target.connect() as connection:
        config.attributes["connection"] = connection
        yield config
