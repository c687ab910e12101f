"""Opening the database a command works on: the URL, the schema check, the failures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from tokenledger.cli.exits import EXIT_DATABASE, CommandFailed
from tokenledger.config import open_engine
from tokenledger.domain.errors import StorageError
from tokenledger.schema import migrations
from tokenledger.service.ledger import Ledger
from tokenledger.storage.engines import create_engine

__all__ = [
    "database_error_reason",
    "migration_engine",
    "open_ledger",
    "resolve",
    "shown",
    "sqlite_file_missing",
]


def resolve(url: str | None) -> str:
    """The URL the command uses (``--url``, the environment, or the SQLite default)."""
    if url is not None and not url.strip():
        # Most likely ``--url "$UNSET_VARIABLE"``: never fall back to the default then.
        raise click.BadParameter("must not be empty", param_hint="'--url'")
    resolved = migrations.resolve_url(url)
    try:
        make_url(resolved)
    except ArgumentError as exc:
        # Not echoed: a mistyped URL may still hold a password.
        raise CommandFailed(
            "bad database URL: expected e.g. sqlite:///path/to/ledger.db or "
            "postgresql+psycopg2://user@host/dbname",
            EXIT_DATABASE,
        ) from exc
    return resolved


def shown(url: str) -> str:
    """The URL as it may be printed: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def database_error_reason(exc: BaseException) -> str:
    """The useful first line of a database or migration error."""
    source: object = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(source).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _open_failure(url: str, exc: BaseException) -> CommandFailed:
    if isinstance(exc, ImportError):
        detail = f"its driver is not installed ({exc})"
    elif isinstance(exc, CommandError):
        detail = f"migrating it failed: {database_error_reason(exc)}"
    else:
        detail = database_error_reason(exc)
    return CommandFailed(f"cannot use the database {shown(url)}: {detail}", EXIT_DATABASE)


@contextmanager
def open_ledger(url: str | None) -> Iterator[Ledger]:
    """The ledger a command works on, its schema checked; disposed afterwards."""
    resolved = resolve(url)
    try:
        engine = open_engine(resolved)
    except (SQLAlchemyError, CommandError, ImportError, StorageError) as exc:
        raise _open_failure(resolved, exc) from exc
    try:
        _require_head(engine, resolved)
        yield Ledger(engine)
    finally:
        engine.dispose()


def _require_head(engine: Engine, url: str) -> None:
    try:
        current = migrations.current(engine)
    except (SQLAlchemyError, CommandError) as exc:
        raise _open_failure(url, exc) from exc
    head = migrations.head()
    if current == head:
        return
    known = {revision for revision, _, _ in migrations.history()}
    if current is None:
        state = "has no tokenledger schema"
    elif current in known:
        state = f"is at revision {current}, not {head}"
    else:
        raise CommandFailed(
            f"the database {shown(url)} is at revision {current}, which this version of "
            f"tokenledger (head {head}) does not know: upgrade tokenledger",
            EXIT_DATABASE,
        )
    raise CommandFailed(
        f"the database {shown(url)} {state}: run 'tokenledger db upgrade --url ...'",
        EXIT_DATABASE,
    )


@contextmanager
def migration_engine(url: str | None) -> Iterator[tuple[Engine, str]]:
    """An engine for the ``db`` commands: never migrated or checked on opening."""
    resolved = resolve(url)
    try:
        engine = create_engine(resolved)
    except (SQLAlchemyError, ImportError) as exc:
        raise _open_failure(resolved, exc) from exc
    try:
        yield engine, resolved
    except (SQLAlchemyError, CommandError) as exc:
        raise _open_failure(resolved, exc) from exc
    finally:
        engine.dispose()


def sqlite_file_missing(url: str) -> bool:
    """True for a SQLite file URL whose file does not exist (reading must not create it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    if database in {"", ":memory:"} or database.startswith("file:"):
        return False
    return not Path(database).exists()
