"""The schema: Alembic revisions, the DDL they share, and running them from code."""
