"""The repository layer: every SQL statement the ledger runs, by table.

Functions take an open SQLAlchemy ``Connection`` and never commit: the
service layer owns transactions. This is the only layer that knows how
PostgreSQL and SQLite differ.
"""
