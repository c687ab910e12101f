"""Run tokenledger's Alembic migrations from code (see ``tokenledger.schema.migrations``).

from tokenledger import migrations
migrations.upgrade("postgresql+psycopg2://app@db/app")
"""

from tokenledger.schema.migrations import (
    DEFAULT_URL,
    LEDGER_TABLES,
    URL_ENV,
    VERSION_TABLE,
    alembic_config,
    current,
    downgrade,
    exclude_ledger_tables,
    head,
    history,
    include_object,
    resolve_url,
    upgrade,
)

__all__ = [
    "DEFAULT_URL",
    "LEDGER_TABLES",
    "URL_ENV",
    "VERSION_TABLE",
    "alembic_config",
    "current",
    "downgrade",
    "exclude_ledger_tables",
    "head",
    "history",
    "include_object",
    "resolve_url",
    "upgrade",
]
