"""``tokenledger db``: schema migrations (Alembic revisions shipped in the package)."""

from __future__ import annotations

import click

from tokenledger.cli._open import migration_engine, shown, sqlite_file_missing
from tokenledger.cli.exits import EXIT_OK, EXIT_PROBLEMS
from tokenledger.cli.options import url_option
from tokenledger.schema import migrations
from tokenledger.schema.check import check_schema

__all__ = ["register"]


def register(cli: click.Group) -> None:
    @cli.group("db")
    def db() -> None:
        """Schema migrations (Alembic revisions shipped in the package)."""

    @db.command("upgrade")
    @click.argument("revision", default="head")
    @url_option
    def upgrade(revision: str, url: str | None) -> int:
        """Upgrade the schema to REVISION (default: head). What a deploy runs."""
        with migration_engine(url) as (engine, resolved):
            before = migrations.current(engine)
            migrations.upgrade(engine, revision)
            after = migrations.current(engine)
        if before == after:
            click.echo(f"{shown(resolved)}: already at {after or 'base'}")
        else:
            click.echo(f"{shown(resolved)}: upgraded from {before or 'base'} to {after}")
        return EXIT_OK

    @db.command("downgrade")
    @click.argument("revision")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @url_option
    def downgrade(revision: str, yes: bool, url: str | None) -> int:
        """Downgrade the schema to REVISION ('base' drops every ledger table and its rows)."""
        with migration_engine(url) as (engine, resolved):
            before = migrations.current(engine)
            if not yes:
                click.confirm(
                    f"Downgrade {shown(resolved)} from {before or 'base'} to {revision}? "
                    "Tables dropped on the way lose their rows",
                    abort=True,
                )
            migrations.downgrade(engine, revision)
            after = migrations.current(engine)
        click.echo(f"{shown(resolved)}: downgraded from {before or 'base'} to {after or 'base'}")
        return EXIT_OK

    @db.command("current")
    @click.option("--check", is_flag=True, help="Exit with 3 unless the schema is at head.")
    @url_option
    def current(check: bool, url: str | None) -> int:
        """Print the revision the database is at."""
        with migration_engine(url) as (engine, resolved):
            revision = None if sqlite_file_missing(resolved) else migrations.current(engine)
        head = migrations.head()
        if revision == head:
            click.echo(f"{revision} (head)")
            return EXIT_OK
        if revision is None:
            click.echo(f"none (no tokenledger schema; head is {head})")
        else:
            click.echo(f"{revision} (head is {head}: run 'tokenledger db upgrade')")
        return EXIT_PROBLEMS if check else EXIT_OK

    @db.command("history")
    @url_option
    def history(url: str | None) -> int:
        """List the revisions, oldest first, marking the database's current one."""
        with migration_engine(url) as (engine, resolved):
            revision = None if sqlite_file_missing(resolved) else migrations.current(engine)
        head = migrations.head()
        for name, parent, message in migrations.history():
            marks = [m for m, on in (("head", name == head), ("current", name == revision)) if on]
            suffix = f" ({', '.join(marks)})" if marks else ""
            click.echo(f"{parent or '<base>'} -> {name}{suffix}: {message}")
        return EXIT_OK

    _register_check(db)


def _register_check(db: click.Group) -> None:
    @db.command("check")
    @url_option
    def check(url: str | None) -> int:
        """Compare the live schema with the models and the revisions; exit 3 on any drift.

        Tables, columns and their server defaults, keys, CHECK and unique
        constraints, indexes, triggers and the server functions' bodies.
        """
        with migration_engine(url) as (engine, resolved):
            if sqlite_file_missing(resolved):
                click.echo(f"{shown(resolved)}: no such database file")
                return EXIT_PROBLEMS
            drifts = check_schema(engine)
            revision = migrations.current(engine)
        if not drifts:
            click.echo(f"{shown(resolved)}: schema matches revision {revision} and the models")
            return EXIT_OK
        for drift in drifts:
            click.echo(f"drift: {drift}")
        click.echo(f"{shown(resolved)}: {len(drifts)} difference(s) from the revisions or models")
        return EXIT_PROBLEMS
