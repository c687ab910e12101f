"""The ``tokenledger`` command: operate a ledger from a shell or a deploy pipeline.

Every command takes ``--url``; without it the database is
``$TOKENLEDGER_DATABASE_URL``, else the SQLite file ``./tokenledger.db``,
created and migrated on first use (see ``tokenledger.config``). A PostgreSQL
database is never migrated implicitly: the deploy pipeline runs
``tokenledger db upgrade``, and other commands refuse a schema that is not at
the newest revision rather than fail half-way.

Errors are one line on stderr, never a traceback, with these exit codes:

===  ======================================================================
0    success
1    the ledger refused the request (insufficient funds, unknown account,
     invalid amount or argument, idempotency conflict, closed stake...)
2    usage error: unknown command or option, bad or missing option value
3    a check found problems (``verify``, ``chain reconcile``, ``demo``,
     ``db current --check``)
4    the database could not be opened or used (bad or unreachable URL,
     missing driver, schema not at head, failed migration)
5    an optional extra is missing (``cli``, or ``api`` for ``serve``)
70   an unexpected internal error (``TOKENLEDGER_DEBUG=1`` shows the traceback)
130  interrupted (Ctrl-C)
===  ======================================================================

The commands need the ``cli`` extra (click, rich, uvicorn); without it,
``main`` says which extra to install and exits with 5.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields, is_dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from tokenledger import migrations
from tokenledger.chain import verify_inclusion
from tokenledger.config import open_engine
from tokenledger.demo import (
    DEFAULT_AGENTS,
    DEFAULT_ROUNDS,
    DEFAULT_SEED,
    MAX_AGENTS,
    MAX_ROUNDS,
    MIN_AGENTS,
    DemoConfig,
    DemoResult,
    DemoStats,
    run_demo,
)
from tokenledger.demo import foreign_accounts as demo_foreign_accounts
from tokenledger.errors import InvalidArgument, LedgerError, StorageError
from tokenledger.records import LedgerEntry
from tokenledger.service.analytics import SupplyReport
from tokenledger.service.ledger import Ledger
from tokenledger.storage import create_engine

try:
    import click
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from rich.text import Text
except ImportError as _missing:  # the 'cli' extra is not installed; main() says so
    _MISSING_EXTRA: str | None = _missing.name or "click"
else:
    _MISSING_EXTRA = None

__all__ = [
    "EXIT_DATABASE",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_MISSING_EXTRA",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_REJECTED",
    "EXIT_USAGE",
    "CommandFailed",
    "create_cli",
    "main",
]

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_PROBLEMS = 3
EXIT_DATABASE = 4
EXIT_MISSING_EXTRA = 5
EXIT_INTERNAL = 70  # EX_SOFTWARE in sysexits.h
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

DEBUG_ENV = "TOKENLEDGER_DEBUG"
# libpq (psycopg2 and psycopg 3) waits forever for an unreachable host by
# default; an operator's command should fail within seconds instead.
CONNECT_TIMEOUT_ENV = "PGCONNECT_TIMEOUT"
CONNECT_TIMEOUT_SECONDS = "10"
# Rich draws tables 80 columns wide when stdout is not a terminal, which
# wraps a statement's rows; logs and pipes read better a little wider.
PIPE_WIDTH = 120

F = TypeVar("F", bound=Callable[..., Any])

# click >= 8.2 raises this for a group called without a command; 8.1 prints help itself.
_NO_ARGS_IS_HELP: tuple[type[click.UsageError], ...] = tuple(
    getattr(click.exceptions, name)
    for name in ("NoArgsIsHelpError",)
    if _MISSING_EXTRA is None and hasattr(click.exceptions, name)
)


class CommandFailed(Exception):
    """A command's own failure: a one-line message and the exit code to end with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# -- entry point --------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tokenledger`` command line; returns the exit code.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    if _MISSING_EXTRA is not None:
        print(
            f"Error: the tokenledger command needs the 'cli' extra ({_MISSING_EXTRA} is not "
            "installed): pip install 'tokenledger[cli]'",
            file=sys.stderr,
        )
        return EXIT_MISSING_EXTRA
    os.environ.setdefault(CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_SECONDS)
    try:
        result = create_cli().main(
            args=list(argv) if argv is not None else None,
            prog_name="tokenledger",
            standalone_mode=False,
        )
    except Exception as exc:
        exit_code, message = _failure(exc)
        if os.environ.get(DEBUG_ENV) == "1":
            traceback.print_exc()
        _error(message)
        return exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    # A command returns its exit code; --help and the like return None.
    return result if isinstance(result, int) else EXIT_OK


def _failure(exc: Exception) -> tuple[int, str]:
    """The exit code and the one-line message for an exception."""
    if isinstance(exc, CommandFailed):
        return exc.exit_code, exc.message
    if isinstance(exc, _NO_ARGS_IS_HELP):
        # A bare group (``tokenledger``, ``tokenledger db``): its help is the message.
        click.echo(exc.format_message(), err=True)
        return EXIT_USAGE, "a command is required"
    if isinstance(exc, click.UsageError):
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return EXIT_USAGE, exc.format_message() + hint
    if isinstance(exc, click.Abort):
        if isinstance(exc.__context__, KeyboardInterrupt):
            return EXIT_INTERRUPTED, "interrupted"
        return EXIT_REJECTED, "aborted"
    if isinstance(exc, click.ClickException):
        return exc.exit_code, exc.format_message()
    if isinstance(exc, StorageError):
        return EXIT_DATABASE, str(exc)
    if isinstance(exc, LedgerError):
        return EXIT_REJECTED, str(exc)
    if isinstance(exc, SQLAlchemyError | CommandError):
        return EXIT_DATABASE, f"database error: {_reason(exc)}"
    return (
        EXIT_INTERNAL,
        f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)",
    )


def _error(message: str) -> None:
    # One line, whatever the message holds: scripts and log scrapers read it.
    print("Error: " + " ".join(message.split()), file=sys.stderr)


def _reason(exc: BaseException) -> str:
    """The useful first line of a database or migration error."""
    source: object = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(source).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# -- opening the database -----------------------------------------------------


def _resolve(url: str | None) -> str:
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


def _shown(url: str) -> str:
    """The URL as it may be printed: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def _open_failure(url: str, exc: BaseException) -> CommandFailed:
    if isinstance(exc, ImportError):
        detail = f"its driver is not installed ({exc})"
    elif isinstance(exc, CommandError):
        detail = f"migrating it failed: {_reason(exc)}"
    else:
        detail = _reason(exc)
    return CommandFailed(f"cannot use the database {_shown(url)}: {detail}", EXIT_DATABASE)


@contextmanager
def _ledger(url: str | None) -> Iterator[Ledger]:
    """The ledger a command works on, its schema checked; disposed afterwards."""
    resolved = _resolve(url)
    try:
        engine = open_engine(resolved)
    except (SQLAlchemyError, CommandError, ImportError) as exc:
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
            f"the database {_shown(url)} is at revision {current}, which this version of "
            f"tokenledger (head {head}) does not know: upgrade tokenledger",
            EXIT_DATABASE,
        )
    raise CommandFailed(
        f"the database {_shown(url)} {state}: run 'tokenledger db upgrade --url ...'",
        EXIT_DATABASE,
    )


@contextmanager
def _migration_engine(url: str | None) -> Iterator[tuple[Engine, str]]:
    """An engine for the ``db`` commands: never migrated or checked on opening."""
    resolved = _resolve(url)
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


def _sqlite_file_missing(url: str) -> bool:
    """True for a SQLite file URL whose file does not exist (reading must not create it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    if database in {"", ":memory:"} or database.startswith("file:"):
        return False
    return not Path(database).exists()


# -- output helpers -----------------------------------------------------------


def _console() -> Console:
    interactive = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(highlight=False, width=None if interactive else PIPE_WIDTH)


def _cells(*values: object) -> list[Text]:
    # Text, not str: rich would read "[...]" in an account id or a reason as markup.
    return [Text("" if value is None else str(value)) for value in values]


def _amount(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def _count(number: int, nouns: str) -> str:
    """``number`` and the singular or plural of ``"singular/plural"``."""
    singular, plural = nouns.split("/")
    return f"{number} {singular if number == 1 else plural}"


def _time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _jsonable(value: Any) -> Any:
    """A record, or a structure of records, as JSON-ready values.

    Amounts become strings holding the exact decimal, times ISO-8601 strings.
    """
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return value


def _print_json(value: Any) -> None:
    click.echo(json.dumps(_jsonable(value), indent=2, ensure_ascii=False))


def _url_option(command: F) -> F:
    return click.option(
        "--url",
        metavar="URL",
        default=None,
        help="Database URL (default: $TOKENLEDGER_DATABASE_URL, else sqlite:///tokenledger.db).",
    )(command)


def _json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(
        command
    )


def _entry_options(command: F) -> F:
    """The options every single-entry write (mint, burn, transfer) shares."""
    options = [
        click.option("--reason", required=True, help="Why the tokens move (required)."),
        click.option("--reference-type", default=None, help="What the entry refers to."),
        click.option("--reference-id", default=None, help="The id of what it refers to."),
        click.option("--memo", default=None, help="Free text stored with the entry."),
        click.option(
            "--idempotency-key",
            default=None,
            help="Repeating the command with this key writes nothing more.",
        ),
        _json_option,
        _url_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


# -- the command tree ---------------------------------------------------------


def create_cli() -> click.Group:
    """The ``tokenledger`` click group, with every command attached."""

    @click.group(
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    @click.version_option(package_name="tokenledger", prog_name="tokenledger")
    def cli() -> None:
        """Operate a tokenledger: accounts, transfers, audits, the chain export.

        The database is --url, else $TOKENLEDGER_DATABASE_URL, else the SQLite
        file ./tokenledger.db (created and migrated on first use). Exit codes:
        0 ok, 1 refused by the ledger, 2 usage error, 3 a check found problems,
        4 database unusable, 5 missing extra.
        """

    _add_db_commands(cli)
    _add_account_commands(cli)
    _add_write_commands(cli)
    _add_stake_commands(cli)
    _add_audit_commands(cli)
    _add_chain_commands(cli)
    _add_serve_and_demo(cli)
    return cli


def _add_db_commands(cli: click.Group) -> None:
    @cli.group("db")
    def db() -> None:
        """Schema migrations (Alembic revisions shipped in the package)."""

    @db.command("upgrade")
    @click.argument("revision", default="head")
    @_url_option
    def upgrade(revision: str, url: str | None) -> int:
        """Upgrade the schema to REVISION (default: head). What a deploy runs."""
        with _migration_engine(url) as (engine, resolved):
            before = migrations.current(engine)
            migrations.upgrade(engine, revision)
            after = migrations.current(engine)
        if before == after:
            click.echo(f"{_shown(resolved)}: already at {after or 'base'}")
        else:
            click.echo(f"{_shown(resolved)}: upgraded from {before or 'base'} to {after}")
        return EXIT_OK

    @db.command("downgrade")
    @click.argument("revision")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @_url_option
    def downgrade(revision: str, yes: bool, url: str | None) -> int:
        """Downgrade the schema to REVISION ('base' drops every ledger table and its rows)."""
        with _migration_engine(url) as (engine, resolved):
            before = migrations.current(engine)
            if not yes:
                click.confirm(
                    f"Downgrade {_shown(resolved)} from {before or 'base'} to {revision}? "
                    "Tables dropped on the way lose their rows",
                    abort=True,
                )
            migrations.downgrade(engine, revision)
            after = migrations.current(engine)
        click.echo(f"{_shown(resolved)}: downgraded from {before or 'base'} to {after or 'base'}")
        return EXIT_OK

    @db.command("current")
    @click.option("--check", is_flag=True, help="Exit with 3 unless the schema is at head.")
    @_url_option
    def current(check: bool, url: str | None) -> int:
        """Print the revision the database is at."""
        with _migration_engine(url) as (engine, resolved):
            revision = None if _sqlite_file_missing(resolved) else migrations.current(engine)
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
    @_url_option
    def history(url: str | None) -> int:
        """List the revisions, oldest first, marking the database's current one."""
        with _migration_engine(url) as (engine, resolved):
            revision = None if _sqlite_file_missing(resolved) else migrations.current(engine)
        head = migrations.head()
        for name, parent, message in migrations.history():
            marks = [m for m, on in (("head", name == head), ("current", name == revision)) if on]
            suffix = f" ({', '.join(marks)})" if marks else ""
            click.echo(f"{parent or '<base>'} -> {name}{suffix}: {message}")
        return EXIT_OK


def _add_account_commands(cli: click.Group) -> None:
    @cli.group("account")
    def account() -> None:
        """Accounts."""

    @account.command("create")
    @click.argument("account_id", metavar="ID")
    @click.option(
        "--initial",
        default="1000",
        show_default=True,
        metavar="AMOUNT",
        help="Initial balance, minted from system (0 for none).",
    )
    @_json_option
    @_url_option
    def create(account_id: str, initial: str, as_json: bool, url: str | None) -> int:
        """Open the account ID."""
        with _ledger(url) as ledger:
            created = ledger.create_account(account_id, initial)
        if as_json:
            _print_json(created)
        else:
            click.echo(f"created account {created.account_id} with {_amount(created.balance)}")
        return EXIT_OK

    @cli.command("balance")
    @click.argument("account_id", metavar="ID")
    @click.option("--as-of", default=None, metavar="ISO", help="The balance at this moment.")
    @_json_option
    @_url_option
    def balance(account_id: str, as_of: str | None, as_json: bool, url: str | None) -> int:
        """Print account ID's available balance (staked tokens excluded)."""
        with _ledger(url) as ledger:
            amount = ledger.get_balance(account_id, as_of=as_of)
            record = None if as_of is not None else ledger.get_account(account_id)
        if not as_json:
            click.echo(_amount(amount))
        elif record is not None:
            _print_json(record)
        else:
            _print_json({"account_id": account_id, "balance": amount, "as_of": as_of})
        return EXIT_OK

    @cli.command("statement")
    @click.argument("account_id", metavar="ID")
    @click.option("--since", default=None, metavar="ISO", help="Only entries at or after this.")
    @click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N entries.")
    @_json_option
    @_url_option
    def statement(
        account_id: str, since: str | None, limit: int | None, as_json: bool, url: str | None
    ) -> int:
        """Account ID's entries, newest first."""
        with _ledger(url) as ledger:
            entries = ledger.get_statement(account_id, since=since, limit=limit)
        if as_json:
            _print_json(entries)
            return EXIT_OK
        if not entries:
            click.echo(f"no entries for {account_id}")
            return EXIT_OK
        table = Table(title=f"Statement of {account_id}", title_justify="left")
        for header in ("id", "time (UTC)", "from", "to", "amount", "balance after", "reason"):
            numeric = header in {"id", "amount", "balance after"}
            table.add_column(header, justify="right" if numeric else "left")
        for entry in entries:
            incoming = entry.to_account == account_id
            after = entry.balance_after_to if incoming else entry.balance_after_from
            sign = "+" if incoming else "-"
            table.add_row(
                *_cells(
                    entry.id,
                    _time(entry.timestamp),
                    entry.from_account,
                    entry.to_account,
                    sign + _amount(entry.amount),
                    _amount(after),
                    entry.reason,
                )
            )
        _console().print(table)
        return EXIT_OK

    @cli.command("supply")
    @click.option(
        "--window-hours",
        type=click.FloatRange(min=0, min_open=True, max=24 * 366 * 100),
        default=24.0,
        show_default=True,
        help="The window over which velocity is measured.",
    )
    @_json_option
    @_url_option
    def supply(window_hours: float, as_json: bool, url: str | None) -> int:
        """Total supply, velocity and how holdings are distributed."""
        with _ledger(url) as ledger:
            report = ledger.supply_report(timedelta(hours=window_hours))
        if as_json:
            _print_json(report)
        else:
            _print_supply(report, window_hours)
        return EXIT_OK


def _add_write_commands(cli: click.Group) -> None:
    @cli.command("mint")
    @click.argument("account_id", metavar="ID")
    @click.argument("amount")
    @_entry_options
    def mint(account_id: str, amount: str, **options: Any) -> int:
        """Create AMOUNT new tokens in account ID."""
        url, as_json = options.pop("url"), options.pop("as_json")
        with _ledger(url) as ledger:
            entry = ledger.mint(account_id, amount, **options)
        _report_entry(entry, as_json, f"minted {_amount(entry.amount)} to {entry.to_account}")
        return EXIT_OK

    @cli.command("burn")
    @click.argument("account_id", metavar="ID")
    @click.argument("amount")
    @_entry_options
    def burn(account_id: str, amount: str, **options: Any) -> int:
        """Destroy AMOUNT tokens of account ID's available balance."""
        url, as_json = options.pop("url"), options.pop("as_json")
        with _ledger(url) as ledger:
            entry = ledger.burn(account_id, amount, **options)
        _report_entry(entry, as_json, f"burned {_amount(entry.amount)} from {entry.from_account}")
        return EXIT_OK

    @cli.command("transfer")
    @click.argument("from_id", metavar="FROM")
    @click.argument("to_id", metavar="TO")
    @click.argument("amount")
    @_entry_options
    def transfer(from_id: str, to_id: str, amount: str, **options: Any) -> int:
        """Move AMOUNT tokens from account FROM to account TO."""
        url, as_json = options.pop("url"), options.pop("as_json")
        with _ledger(url) as ledger:
            entry = ledger.transfer(from_id, to_id, amount, **options)
        summary = (
            f"transferred {_amount(entry.amount)} from {entry.from_account} to {entry.to_account}"
        )
        _report_entry(entry, as_json, summary)
        return EXIT_OK


def _report_entry(entry: LedgerEntry, as_json: bool, summary: str) -> None:
    if as_json:
        _print_json(entry)
        return
    balances = [
        f"{party} now has {_amount(after)}"
        for party, after in (
            (entry.from_account, entry.balance_after_from),
            (entry.to_account, entry.balance_after_to),
        )
        if after is not None
    ]
    click.echo(f"{summary} (entry {entry.id}); {', '.join(balances)}")


def _print_supply(report: SupplyReport, window_hours: float) -> None:
    console = _console()
    velocity = report.velocity
    figures = Table.grid(padding=(0, 2))
    figures.add_column()
    figures.add_column(justify="right")
    hours = f"{window_hours:g}h"
    for label, value in (
        ("total supply", _amount(report.total_supply)),
        ("minted", _amount(report.minted)),
        ("burned", _amount(report.burned)),
        ("circulating", _amount(report.circulating)),
        ("staked", _amount(report.staked)),
        ("accounts", str(report.accounts)),
        ("holders", str(report.holders)),
        (f"transfer volume ({hours})", _amount(velocity.transfer_volume)),
        (f"velocity ({hours})", _amount(velocity.velocity)),
        (f"entries ({hours})", str(velocity.entries)),
        ("gini", _amount(report.distribution.gini)),
        *(
            (f"holdings {name}", _amount(value))
            for name, value in report.distribution.percentiles.items()
        ),
    ):
        figures.add_row(*_cells(label, value))
    console.print(figures)
    if report.distribution.top_holders:
        console.print(_holders_table(report))


def _holders_table(report: SupplyReport) -> Table:
    table = Table(title="Top holders", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("account")
    table.add_column("holdings", justify="right")
    table.add_column("share", justify="right")
    for rank, holder in enumerate(report.distribution.top_holders, start=1):
        share = f"{holder.share * 100:.2f}%"
        table.add_row(*_cells(rank, holder.account_id, _amount(holder.holdings), share))
    return table


def _add_stake_commands(cli: click.Group) -> None:
    @cli.group("stakes")
    def stakes() -> None:
        """Tokens locked in positions."""

    @stakes.command("list")
    @click.argument("account_id", metavar="ACCOUNT")
    @click.option("--all", "show_all", is_flag=True, help="Closed stakes too, not only open.")
    @_json_option
    @_url_option
    def list_stakes(account_id: str, show_all: bool, as_json: bool, url: str | None) -> int:
        """ACCOUNT's stakes, oldest first."""
        with _ledger(url) as ledger:
            found = ledger.get_stakes(account_id, open_only=not show_all)
        if as_json:
            _print_json(found)
            return EXIT_OK
        if not found:
            click.echo(f"no {'' if show_all else 'open '}stakes for {account_id}")
            return EXIT_OK
        table = Table(title=f"Stakes of {account_id}", title_justify="left")
        for header in ("id", "amount", "status", "reason", "reference", "created", "expires"):
            table.add_column(header, justify="right" if header in {"id", "amount"} else "left")
        table.add_column("closed")
        for stake in found:
            reference = "/".join(p for p in (stake.reference_type, stake.reference_id) if p)
            table.add_row(
                *_cells(
                    stake.id,
                    _amount(stake.amount),
                    stake.status,
                    stake.reason,
                    reference,
                    _time(stake.created_at),
                    _time(stake.expires_at),
                    _time(stake.closed_at),
                )
            )
        _console().print(table)
        return EXIT_OK

    @stakes.command("expire")
    @click.option("--now", default=None, metavar="ISO", help="Expire as of this moment.")
    @_url_option
    def expire(now: str | None, url: str | None) -> int:
        """Return every open stake past its expiry to its owner."""
        with _ledger(url) as ledger:
            count = ledger.expire_stakes(now=now)
        click.echo(f"expired {_count(count, 'stake/stakes')}")
        return EXIT_OK


def _add_audit_commands(cli: click.Group) -> None:
    @cli.command("verify")
    @_json_option
    @_url_option
    def verify(as_json: bool, url: str | None) -> int:
        """Check the whole books: exit 0 when they are whole, 3 when not."""
        with _ledger(url) as ledger:
            report = ledger.verify()
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        else:
            counts = report.counts
            scope = ", ".join(
                (
                    _count(counts.get("entries", 0), "entry/entries"),
                    _count(counts.get("accounts", 0), "account/accounts"),
                    _count(counts.get("stakes", 0), "stake/stakes"),
                    f"{counts.get('sealed', 0)} sealed",
                    _count(counts.get("checkpoints", 0), "checkpoint/checkpoints"),
                )
            )
            if report.ok:
                click.echo(f"OK: the books are whole ({scope})")
            else:
                found = _count(len(report.problems), "problem/problems")
                click.echo(f"FAILED: {found} found ({scope})")
                for problem in report.problems:
                    click.echo(f"  {problem.kind}: {problem.message}")
                if counts.get("problems_not_listed"):
                    click.echo(f"  ... and {counts['problems_not_listed']} more")
        return EXIT_OK if report.ok else EXIT_PROBLEMS

    @cli.command("seal")
    @_url_option
    def seal(url: str | None) -> int:
        """Link every committed, unsealed entry into the hash chain."""
        with _ledger(url) as ledger:
            count = ledger.seal()
        click.echo(f"sealed {_count(count, 'entry/entries')}")
        return EXIT_OK

    @cli.command("checkpoint")
    @_url_option
    def checkpoint(url: str | None) -> int:
        """Seal, then store a Merkle root over the new chain positions."""
        with _ledger(url) as ledger:
            made = ledger.checkpoint()
        if made is None:
            click.echo("nothing new since the last checkpoint")
            return EXIT_OK
        size = made.last_seq - made.first_seq + 1
        click.echo(
            f"checkpoint {made.id}: chain positions {made.first_seq}..{made.last_seq} "
            f"({size} entries)"
        )
        click.echo(f"merkle root: {made.merkle_root}")
        click.echo(f"chain hash:  {made.chain_hash}")
        return EXIT_OK


def _add_chain_commands(cli: click.Group) -> None:
    @cli.group("chain")
    def chain() -> None:
        """The on-chain view: export, reconciliation, inclusion proofs."""

    @chain.command("export")
    @click.option("--since", default=None, metavar="ISO", help="Only entries at or after this.")
    @_url_option
    def export(since: str | None, url: str | None) -> int:
        """Every entry as an ERC-20 Transfer, as JSON Lines (seals first)."""
        with _ledger(url) as ledger:
            out = sys.stdout
            for record in ledger.export_chain(since=since):
                out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            out.flush()
        return EXIT_OK

    @chain.command("reconcile")
    @click.argument(
        "snapshot_file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True)
    )
    @_url_option
    def reconcile(snapshot_file: str, url: str | None) -> int:
        """Compare on-chain balances in FILE with the ledger; never writes.

        FILE ('-' for stdin) holds a JSON object mapping each address to its
        balance as an integer of 18 decimals (a string of digits also does).
        Exits 3 when any address differs.
        """
        snapshot = _read_snapshot(snapshot_file)
        with _ledger(url) as ledger:
            mismatches = ledger.reconcile(snapshot)
        if not mismatches:
            click.echo(f"no mismatches: the {len(snapshot)} addresses in the snapshot agree")
            return EXIT_OK
        for m in mismatches:
            who = m.account_id or "unknown to the ledger"
            click.echo(
                f"{m.address} ({who}): ledger {m.ledger_value}, chain {m.chain_value}, "
                f"difference {m.chain_value - m.ledger_value:+d}"
            )
        click.echo(_count(len(mismatches), "mismatch/mismatches"))
        return EXIT_PROBLEMS

    @chain.command("prove")
    @click.argument("entry_id", type=int)
    @_json_option
    @_url_option
    def prove(entry_id: int, as_json: bool, url: str | None) -> int:
        """The Merkle proof that a checkpoint covers ENTRY_ID."""
        with _ledger(url) as ledger:
            try:
                proof = ledger.prove_inclusion(entry_id)
            except InvalidArgument as exc:
                if "checkpoint" in str(exc) or "sealed" in str(exc):
                    raise CommandFailed(
                        f"{exc}: run 'tokenledger checkpoint' first", EXIT_REJECTED
                    ) from exc
                raise
        valid = verify_inclusion(
            proof.entry_hash, proof.index, proof.size, proof.path, proof.merkle_root
        )
        if as_json:
            _print_json({**_jsonable(proof), "verified": valid})
            return EXIT_OK
        click.echo(
            f"entry {proof.entry_id} is chain position {proof.seq}, leaf {proof.index} of "
            f"{proof.size} under checkpoint {proof.checkpoint_id}"
        )
        click.echo(f"entry hash:  {proof.entry_hash}")
        click.echo(f"merkle root: {proof.merkle_root}")
        click.echo(f"audit path ({len(proof.path)} hashes):")
        for node in proof.path:
            click.echo(f"  {node}")
        click.echo(f"verified here: {'yes' if valid else 'NO'}")
        click.echo(
            "anyone can check it with tokenledger.chain.verify_inclusion("
            "entry_hash, index, size, path, merkle_root)"
        )
        return EXIT_OK if valid else EXIT_PROBLEMS


def _read_snapshot(path: str) -> dict[str, int]:
    """The address -> balance map of a reconcile FILE, or a usage error saying what is wrong."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path!r}: {exc}", param_hint="FILE") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{path!r} is not JSON: {exc}", param_hint="FILE") from exc
    if not isinstance(document, dict):
        raise click.BadParameter(
            f"{path!r} must hold a JSON object mapping addresses to balances", param_hint="FILE"
        )
    snapshot: dict[str, int] = {}
    for address, raw in document.items():
        # Big integers travel as strings in many JSON tools (JavaScript's among them).
        value = int(raw) if isinstance(raw, str) and raw.strip().lstrip("-").isdigit() else raw
        if isinstance(value, bool) or not isinstance(value, int):
            raise click.BadParameter(
                f"the balance of {address!r} must be an integer of 18 decimals, got {value!r}",
                param_hint="FILE",
            )
        snapshot[address] = value
    return snapshot


def _add_serve_and_demo(cli: click.Group) -> None:
    @cli.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
    @click.option(
        "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port."
    )
    @_url_option
    def serve(host: str, port: int, url: str | None) -> int:
        """Serve the read-only HTTP API with uvicorn.

        The app is tokenledger.api.create_app(ledger); Ctrl-C or SIGTERM stops it.
        """
        try:
            import uvicorn  # noqa: PLC0415  (only serve needs the server)

            from tokenledger.api import create_app  # noqa: PLC0415  (the 'api' extra)
        except ImportError as exc:
            raise CommandFailed(
                f"serve needs the 'api' and 'cli' extras ({exc}): "
                "pip install 'tokenledger[api,cli]'",
                EXIT_MISSING_EXTRA,
            ) from exc
        with _ledger(url) as ledger:
            app = create_app(ledger)
            where = _shown(_resolve(url))
            click.echo(f"serving {where} on http://{host}:{port} (Ctrl-C stops)", err=True)
            # uvicorn shuts down gracefully, then re-raises Ctrl-C: the
            # documented way to stop the server is not an error.
            with suppress(KeyboardInterrupt):
                uvicorn.run(app, host=host, port=port)
        return EXIT_OK

    @cli.command("demo")
    @click.option(
        "--agents",
        type=click.IntRange(MIN_AGENTS, MAX_AGENTS),
        default=DEFAULT_AGENTS,
        show_default=True,
        help="How many agents take part.",
    )
    @click.option(
        "--rounds",
        type=click.IntRange(1, MAX_ROUNDS),
        default=DEFAULT_ROUNDS,
        show_default=True,
        help="How many rounds of debates, hypotheses, auctions and payments.",
    )
    @click.option(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        show_default=True,
        help="The random seed: one seed, one economy.",
    )
    @click.option(
        "--force",
        is_flag=True,
        help="Play even in a database that holds accounts other than the demo's.",
    )
    @_url_option
    def demo(agents: int, rounds: int, seed: int, force: bool, url: str | None) -> int:
        """Play a small agent economy, then check that the books balance.

        Agents (demo-<role>-NNN) are endowed, rewarded for debates and
        hypotheses, bid on artifacts with stakes, pay each other and burn
        fees. Running it again continues the same economy: existing demo
        accounts are reused. The journal is append-only, so the demo refuses
        a database with other accounts unless --force is given.
        """
        config = DemoConfig(agents=agents, rounds=rounds, seed=seed)
        with _ledger(url) as ledger:
            shown = _shown(_resolve(url))
            others = demo_foreign_accounts(ledger, config.prefix)
            if others and not force:
                raise CommandFailed(
                    f"{shown} holds {others} accounts that are not the demo's, and demo entries "
                    "cannot be removed from an append-only journal: use another database "
                    "(e.g. --url sqlite:///demo.db) or pass --force",
                    EXIT_REJECTED,
                )
            console = _console()
            console.print(
                Text(
                    f"Demo economy: {agents} agents, {rounds} rounds, seed {seed}, on {shown}",
                    style="bold",
                )
            )
            with _demo_progress(console, rounds) as progress:
                result = run_demo(ledger, config, progress)
        _print_demo(console, result)
        return EXIT_OK if result.integrity.ok else EXIT_PROBLEMS


@contextmanager
def _demo_progress(
    console: Console, rounds: int
) -> Iterator[Callable[[int, int, DemoStats], None]]:
    """A progress bar on a terminal; a line every tenth of the run elsewhere (logs, pipes)."""
    if not console.is_terminal:
        step = max(1, rounds // 10)

        def log(done: int, total: int, stats: DemoStats) -> None:
            if done % step == 0 or done == total:
                click.echo(f"  round {done}/{total}: {stats.total_writes} ledger calls")

        yield log
        return
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds  {task.fields[calls]} ledger calls"),
        TimeElapsedColumn(),
        console=console,
    )
    task = bar.add_task("playing", total=rounds, calls=0)

    def advance(done: int, total: int, stats: DemoStats) -> None:
        bar.update(task, completed=done, calls=stats.total_writes)

    with bar:
        yield advance


def _print_demo(console: Console, result: DemoResult) -> None:
    stats = result.stats
    rate = stats.total_writes / result.seconds if result.seconds else 0.0
    console.print(
        f"\n{stats.total_writes} ledger calls in {result.seconds:.1f}s ({rate:.0f}/s), "
        f"run id {result.run_id}; accounts created {stats.accounts_created}, "
        f"reused {stats.accounts_reused}",
        markup=False,
    )
    activity = Table(title="Activity", title_justify="left")
    activity.add_column("kind")
    activity.add_column("calls", justify="right")
    for kind, count in stats.writes.most_common():
        activity.add_row(*_cells(kind, count))
    activity.add_row(*_cells("(retries answered from the first write)", stats.retries))
    activity.add_row(*_cells("(overdrafts refused)", stats.refused))
    console.print(activity)
    console.print(_holders_table(result.supply))
    if result.statement:
        owner = result.supply.distribution.top_holders[0].account_id
        statement = Table(title=f"Statement of {owner} (latest 5)", title_justify="left")
        for column in ("id", "", "counterparty", "amount", "reason", "balance after"):
            statement.add_column(column, justify="right" if column in ("id", "amount") else "left")
        for entry in result.statement:
            incoming = entry.to_account == owner
            after = entry.balance_after_to if incoming else entry.balance_after_from
            statement.add_row(
                *_cells(
                    str(entry.id),
                    "in" if incoming else "out",
                    entry.from_account if incoming else entry.to_account,
                    _amount(entry.amount),
                    entry.reason,
                    _amount(after),
                )
            )
        console.print(statement)

    supply = result.supply
    figures = Table(title="Supply", title_justify="left", show_header=False)
    figures.add_column()
    figures.add_column(justify="right")
    for label, value in (
        ("total supply", _amount(supply.total_supply)),
        ("minted", _amount(supply.minted)),
        ("burned", _amount(supply.burned)),
        ("staked now", _amount(supply.staked)),
        ("velocity (24h)", _amount(supply.velocity.velocity)),
        ("gini", _amount(supply.distribution.gini)),
        ("accounts", str(supply.accounts)),
    ):
        figures.add_row(*_cells(label, value))
    console.print(figures)

    integrity = result.integrity
    checks = Table(title="Integrity", title_justify="left", show_header=False)
    checks.add_column()
    checks.add_column()
    counts = integrity.report.counts
    checkpoint = integrity.checkpoint
    for passed, label in (
        (
            integrity.report.ok,
            f"verify(): {len(integrity.report.problems)} problems in "
            f"{counts.get('entries', 0)} entries, {counts.get('accounts', 0)} accounts",
        ),
        (integrity.conserved, "minted - burned = total supply (balances + stakes)"),
        (
            not integrity.mismatched_accounts,
            f"the demo's own bookkeeping matches the ledger for "
            f"{integrity.tracked_accounts - len(integrity.mismatched_accounts)}/"
            f"{integrity.tracked_accounts} accounts",
        ),
        (
            not integrity.duplicated_retries,
            f"{stats.retries} retried rewards wrote {integrity.duplicated_retries} extra entries",
        ),
        (
            checkpoint is not None or integrity.proof_entry_id is None,
            f"sealed {integrity.sealed} entries; "
            + (
                f"checkpoint {checkpoint.id} over positions {checkpoint.first_seq}.."
                f"{checkpoint.last_seq}, root {checkpoint.merkle_root[:16]}..."
                if checkpoint is not None
                else "no new checkpoint"
            ),
        ),
        (
            integrity.proof_valid is not False,
            f"inclusion proof of entry {integrity.proof_entry_id}: "
            + {
                True: "valid",
                False: "INVALID",
                None: "not checked (not sealed yet: a transaction is open elsewhere)",
            }[integrity.proof_valid],
        ),
    ):
        checks.add_row(
            Text("ok" if passed else "FAILED", style="green" if passed else "red"), Text(label)
        )
    console.print(checks)
    for problem in integrity.report.problems[:20]:
        console.print(f"  {problem.kind}: {problem.message}", markup=False)
    verdict = "the books balance" if integrity.ok else "the books DO NOT balance"
    console.print(Text(verdict, style="bold green" if integrity.ok else "bold red"))


if __name__ == "__main__":
    sys.exit(main())
