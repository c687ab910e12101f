"""The ``tokenledger`` command: operate a ledger from a shell or a deploy pipeline.

Every command takes ``--url``; without it the database is
``$TOKENLEDGER_DATABASE_URL``, else the SQLite file ``./tokenledger.db``,
created and migrated on first use (see ``tokenledger.config``). A PostgreSQL
database is never migrated implicitly: the deploy pipeline runs
``tokenledger db upgrade``, and other commands refuse a schema that is not at
the newest revision rather than fail half-way.

Errors are one line on stderr, never a traceback, with the exit codes of
``tokenledger.cli.exits`` (0 ok, 1 refused by the ledger, 2 usage, 3 a check
found problems, 4 database unusable, 5 missing extra, 70 internal, 130
interrupted).

The package: this module (the entry point and the error mapping),
``_open`` (opening the database), ``options``, ``render`` (printing),
``commands/`` (one module per command group) and ``demo`` (the
demonstration economy, a library over ``Ledger``).

The commands need the ``cli`` extra (click, rich, uvicorn); without it,
``main`` says which extra to install and exits with 5.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from tokenledger.cli.exits import (
    EXIT_DATABASE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MISSING_EXTRA,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_REJECTED,
    EXIT_USAGE,
    CommandFailed,
)
from tokenledger.domain.errors import LedgerError, StorageError

try:
    import click
except ImportError as _missing:  # the 'cli' extra is not installed; main() says so
    _MISSING_EXTRA: str | None = _missing.name or "click"
else:
    try:
        import rich  # noqa: F401  (the commands draw with it)
    except ImportError as _missing_rich:
        _MISSING_EXTRA = _missing_rich.name or "rich"
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

DEBUG_ENV = "TOKENLEDGER_DEBUG"
# libpq (psycopg2 and psycopg 3) waits forever for an unreachable host by
# default; an operator's command should fail within seconds instead.
CONNECT_TIMEOUT_ENV = "PGCONNECT_TIMEOUT"
CONNECT_TIMEOUT_SECONDS = "10"

# click >= 8.2 raises this for a group called without a command; 8.1 prints help itself.
_NO_ARGS_IS_HELP: tuple[type[click.UsageError], ...] = tuple(
    getattr(click.exceptions, name)
    for name in ("NoArgsIsHelpError",)
    if _MISSING_EXTRA is None and hasattr(click.exceptions, name)
)


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
        from tokenledger.cli._open import database_error_reason  # noqa: PLC0415

        return EXIT_DATABASE, f"database error: {database_error_reason(exc)}"
    return (
        EXIT_INTERNAL,
        f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)",
    )


def _error(message: str) -> None:
    # One line, whatever the message holds: scripts and log scrapers read it.
    print("Error: " + " ".join(message.split()), file=sys.stderr)


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

    # Imported here: the command modules need click and rich, which main() checks first.
    from tokenledger.cli.commands import COMMAND_GROUPS  # noqa: PLC0415

    for register in COMMAND_GROUPS:
        register(cli)
    return cli


if __name__ == "__main__":
    sys.exit(main())
