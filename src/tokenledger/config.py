"""Opening the ledger an operator or the seed facade means, from a URL or the environment.

The database is ``url`` if given, else ``$TOKENLEDGER_DATABASE_URL``, else
the SQLite file ``tokenledger.db`` in the working directory. An embedded
SQLite database is created and migrated on first use (once, however many
processes open it at once); a PostgreSQL database is never migrated
implicitly (the deploy pipeline runs ``tokenledger db upgrade``), so a
host's schema changes only when it says so.
"""

from __future__ import annotations

from sqlalchemy import Engine

from tokenledger.schema import migrations
from tokenledger.service.ledger import Ledger
from tokenledger.storage.engines import create_engine

__all__ = ["open_engine", "open_ledger"]


def open_engine(url: str | None = None) -> Engine:
    """An engine for the resolved URL; SQLite is migrated to head on first use.

    Raises:
        StorageError: the embedded database cannot be created or migrated.
    """
    engine = create_engine(migrations.resolve_url(url))
    try:
        migrations.ensure_embedded_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def open_ledger(url: str | None = None) -> Ledger:
    """A ``Ledger`` on the resolved URL, owning its engine (see the module docstring)."""
    return Ledger.from_url(migrations.resolve_url(url))
