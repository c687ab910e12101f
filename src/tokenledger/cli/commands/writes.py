"""``tokenledger mint``, ``burn``, ``transfer``: one entry from the shell."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from tokenledger.cli._open import open_ledger
from tokenledger.cli.exits import EXIT_OK
from tokenledger.cli.options import entry_options
from tokenledger.cli.render import amount as shown_amount
from tokenledger.cli.render import print_json
from tokenledger.domain.records import LedgerEntry
from tokenledger.service.ledger import Ledger

__all__ = ["register"]


def register(cli: click.Group) -> None:
    @cli.command("mint")
    @click.argument("account_id", metavar="ID")
    @click.argument("amount")
    @entry_options
    def mint(account_id: str, amount: str, **options: Any) -> int:
        """Create AMOUNT new tokens in account ID."""
        entry = _write(options, lambda ledger, fields: ledger.mint(account_id, amount, **fields))
        return _report(entry, options, f"minted {shown_amount(entry.amount)} to {entry.to_account}")

    @cli.command("burn")
    @click.argument("account_id", metavar="ID")
    @click.argument("amount")
    @entry_options
    def burn(account_id: str, amount: str, **options: Any) -> int:
        """Destroy AMOUNT tokens of account ID's available balance."""
        entry = _write(options, lambda ledger, fields: ledger.burn(account_id, amount, **fields))
        summary = f"burned {shown_amount(entry.amount)} from {entry.from_account}"
        return _report(entry, options, summary)

    @cli.command("transfer")
    @click.argument("from_id", metavar="FROM")
    @click.argument("to_id", metavar="TO")
    @click.argument("amount")
    @entry_options
    def transfer(from_id: str, to_id: str, amount: str, **options: Any) -> int:
        """Move AMOUNT tokens from account FROM to account TO."""
        entry = _write(
            options, lambda ledger, fields: ledger.transfer(from_id, to_id, amount, **fields)
        )
        summary = (
            f"transferred {shown_amount(entry.amount)} "
            f"from {entry.from_account} to {entry.to_account}"
        )
        return _report(entry, options, summary)


# The entry_options that are the command's own, not the entry's.
_COMMAND_OPTIONS = ("url", "as_json")


def _write(
    options: dict[str, Any], call: Callable[[Ledger, dict[str, Any]], LedgerEntry]
) -> LedgerEntry:
    fields = {k: v for k, v in options.items() if k not in _COMMAND_OPTIONS}
    with open_ledger(options["url"]) as ledger:
        return call(ledger, fields)


def _report(entry: LedgerEntry, options: dict[str, Any], summary: str) -> int:
    if options["as_json"]:
        print_json(entry)
        return EXIT_OK
    balances = [
        f"{party} now has {shown_amount(after)}"
        for party, after in (
            (entry.from_account, entry.balance_after_from),
            (entry.to_account, entry.balance_after_to),
        )
        if after is not None
    ]
    click.echo(f"{summary} (entry {entry.id}); {', '.join(balances)}")
    return EXIT_OK
