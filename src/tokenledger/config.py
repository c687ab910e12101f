"""Opening the ledger an operator or the seed facade means, from a URL or the environment.

The database is ``url`` if given, else ``$TOKENLEDGER_DATABASE_URL``, else
the SQLite file ``tokenledger.db`` in the working directory. An embedded
SQLite database is created and migrated on first use; a PostgreSQL database
is never migrated implicitly (the deploy pipeline runs ``tokenledger db
upgrade``), so a host's schema changes only when it says so.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from tokenledger import migrations
from tokenledger.service.ledger import Ledger
from tokenledger.storage import create_engine

__all__ = ["open_engine", "open_ledger"]


def open_engine(url: str | None = None) -> Engine:
    """An engine for the resolved URL; SQLite is migrated to head on first use."""
    resolved = migrations.resolve_url(url)
    engine = create_engine(resolved)
    if make_url(resolved).get_backend_name() == "sqlite" and migrations.current(engine) != (
        migrations.head()
    ):
        migrations.upgrade(engine)
    return engine


def open_ledger(url: str | None = None) -> Ledger:
    """A ``Ledger`` on the resolved URL (see the module docstring)."""
    return Ledger(open_engine(url))
