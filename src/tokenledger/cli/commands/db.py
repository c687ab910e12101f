"""``tokenledger db``: schema migrations (Alembic revisions shipped in the package)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tokenledger.cli._open import (
    database_error_reason,
    migration_engine,
    shown,
    sqlite_file_missing,
)
from tokenledger.cli.exits import EXIT_DATABASE, EXIT_OK, EXIT_PROBLEMS, CommandFailed
from tokenledger.cli.options import url_option
from tokenledger.schema import migrations
from tokenledger.schema.check import check_schema
from tokenledger.service.ledger import Ledger
from tokenledger.storage.copying import DEFAULT_PAGE_SIZE, check_copy, copy_ledger

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
            migrations.upgrade(engine, revision, on_retry=_tell_retry)
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
    _register_copy(db)


def _tell_retry(attempt: int, error: BaseException) -> None:
    reason = database_error_reason(error)
    click.echo(f"upgrade: {reason}; rolled back, retrying (attempt {attempt + 1})", err=True)


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


def _register_copy(db: click.Group) -> None:
    @db.command("copy")
    @click.option("--from", "source", required=True, help="The ledger's database URL.")
    @click.option("--to", "target", required=True, help="An empty database (may be unmigrated).")
    @click.option("--resume", is_flag=True, help="Finish an interrupted copy into --to.")
    @click.option(
        "--page-size",
        type=click.IntRange(min=1),
        default=DEFAULT_PAGE_SIZE,
        show_default=True,
        help="Rows read and committed at a time (bounds the memory used).",
    )
    def copy(source: str, target: str, resume: bool, page_size: int) -> int:
        """Copy a whole ledger into an empty database, ids, chain and checkpoints included.

        The target is migrated to the source's revision, filled page by page
        in one snapshot of the source, then verified: the same rows per table,
        the same chain head, and a whole ledger (``verify``). Exit 1 when the
        target holds ledger rows (it is not touched), 3 when verification fails.
        """
        with migration_engine(source) as (source_engine, source_url):
            if sqlite_file_missing(source_url):
                raise CommandFailed(f"{shown(source_url)}: no such database file", EXIT_DATABASE)
            with migration_engine(target) as (target_engine, target_url):
                with _progress_bar() as progress:
                    plan = copy_ledger(
                        source_engine,
                        target_engine,
                        resume=resume,
                        page_size=page_size,
                        progress=progress,
                    )
                problems = check_copy(target_engine, plan)
                at_head = plan.revision == migrations.head()
                if at_head:  # this version's verify reads the head schema
                    report = Ledger(target_engine).verify()
                    problems += [f"verify: {problem}" for problem in report.problems]
        copied = sum(t.source_rows for t in plan.tables)
        if problems:
            for problem in problems:
                click.echo(f"problem: {problem}")
            click.echo(f"{shown(target_url)}: the copy does not match the source")
            return EXIT_PROBLEMS
        seq = plan.source_head[0] if plan.source_head else 0
        how = "resumed and finished" if plan.resumed else "copied"
        verified = (
            "the target verifies"
            if at_head
            else "not verified: upgrade both to head, then run 'tokenledger verify'"
        )
        click.echo(
            f"{shown(source_url)} -> {shown(target_url)}: {how} {copied} rows at revision "
            f"{plan.revision}; chain heads agree at seq {seq}; {verified}"
        )
        return EXIT_OK


@contextmanager
def _progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on stderr (stdout keeps the one-line result)."""
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=not console.is_terminal,
    ) as bar:
        task = bar.add_task("copying", total=None)

        def update(table: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=table or "copying")

        yield update
