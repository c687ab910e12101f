"""The storage layer: everything that knows a database, a dialect or a driver.

* ``engines``: engines the ledger creates (SQLite pragmas, busy timeout,
  psycopg 3 behind PgBouncer);
* ``transactions``: the one owner of connections: who owns a transaction,
  at which isolation it runs, retries, and the one boundary where driver
  errors become ``LedgerError``;
* ``posting``: the posting port, one adapter per dialect: lock accounts,
  write a posting, post one entry;
* ``repository``: every other SQL statement, by table;
* ``models``: the declarative schema the repository's statements are built on;
* ``dialect``: the small differences between PostgreSQL and SQLite.
"""

from tokenledger.storage.engines import DEFAULT_BUSY_TIMEOUT, create_engine, is_sqlite_memory

__all__ = ["DEFAULT_BUSY_TIMEOUT", "create_engine", "is_sqlite_memory"]
