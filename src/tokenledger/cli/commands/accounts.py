"""``tokenledger account create``, ``balance``, ``statement``, ``supply``: accounts, read."""

from __future__ import annotations

from datetime import timedelta

import click

from tokenledger.cli._open import open_ledger
from tokenledger.cli.exits import EXIT_OK
from tokenledger.cli.options import json_option, url_option
from tokenledger.cli.render import (
    amount,
    console,
    holders_table,
    print_json,
    statement_table,
    supply_table,
)
from tokenledger.domain.records import jsonable

__all__ = ["register"]


def register(cli: click.Group) -> None:
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
    @json_option
    @url_option
    def create(account_id: str, initial: str, as_json: bool, url: str | None) -> int:
        """Open the account ID."""
        with open_ledger(url) as ledger:
            created = ledger.create_account(account_id, initial)
        if as_json:
            print_json(created)
        else:
            click.echo(f"created account {created.account_id} with {amount(created.balance)}")
        return EXIT_OK

    @cli.command("balance")
    @click.argument("account_id", metavar="ID")
    @click.option("--as-of", default=None, metavar="ISO", help="The balance at this moment.")
    @json_option
    @url_option
    def balance(account_id: str, as_of: str | None, as_json: bool, url: str | None) -> int:
        """Print account ID's available balance (staked tokens excluded)."""
        with open_ledger(url) as ledger:
            balance = ledger.get_balance(account_id, as_of=as_of)
            record = None if as_of is not None else ledger.get_account(account_id)
        if not as_json:
            click.echo(amount(balance))
        elif record is not None:
            print_json(record)
        else:
            print_json({"account_id": account_id, "balance": balance, "as_of": as_of})
        return EXIT_OK

    @cli.command("statement")
    @click.argument("account_id", metavar="ID")
    @click.option("--since", default=None, metavar="ISO", help="Only entries at or after this.")
    @click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N entries.")
    @json_option
    @url_option
    def statement(
        account_id: str, since: str | None, limit: int | None, as_json: bool, url: str | None
    ) -> int:
        """Account ID's entries, newest first."""
        with open_ledger(url) as ledger:
            entries = ledger.get_statement(account_id, since=since, limit=limit)
            on_chain = ledger.chain_deployment() is not None
            hashes = ledger.chain_tx_hashes(entry.id for entry in entries) if on_chain else {}
        if as_json:
            # tx_hash: null until the entry is on chain (tokenledger chain push).
            print_json([{**jsonable(e), "tx_hash": hashes.get(e.id)} for e in entries])
            return EXIT_OK
        if not entries:
            click.echo(f"no entries for {account_id}")
            return EXIT_OK
        console().print(
            statement_table(
                account_id,
                entries,
                f"Statement of {account_id}",
                tx_hashes=hashes if on_chain else None,
            )
        )
        return EXIT_OK

    @cli.command("supply")
    @click.option(
        "--window-hours",
        type=click.FloatRange(min=0, min_open=True, max=24 * 366 * 100),
        default=24.0,
        show_default=True,
        help="The window over which velocity is measured.",
    )
    @json_option
    @url_option
    def supply(window_hours: float, as_json: bool, url: str | None) -> int:
        """Total supply, velocity and how holdings are distributed."""
        with open_ledger(url) as ledger:
            report = ledger.supply_report(timedelta(hours=window_hours))
        if as_json:
            print_json(report)
        else:
            out = console()
            out.print(supply_table(report, f"{window_hours:g}h"))
            if report.distribution.top_holders:
                out.print(holders_table(report))
        return EXIT_OK
