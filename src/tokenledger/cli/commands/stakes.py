"""``tokenledger stakes list``, ``stakes expire``: tokens locked in positions."""

from __future__ import annotations

import click
from rich.table import Table

from tokenledger.cli._open import open_ledger
from tokenledger.cli.exits import EXIT_OK
from tokenledger.cli.options import json_option, url_option
from tokenledger.cli.render import amount, cells, console, count, moment, print_json

__all__ = ["register"]


def register(cli: click.Group) -> None:
    @cli.group("stakes")
    def stakes() -> None:
        """Tokens locked in positions."""

    @stakes.command("list")
    @click.argument("account_id", metavar="ACCOUNT")
    @click.option("--all", "show_all", is_flag=True, help="Closed stakes too, not only open.")
    @json_option
    @url_option
    def list_stakes(account_id: str, show_all: bool, as_json: bool, url: str | None) -> int:
        """ACCOUNT's stakes, oldest first."""
        with open_ledger(url) as ledger:
            found = ledger.get_stakes(account_id, open_only=not show_all)
        if as_json:
            print_json(found)
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
                *cells(
                    stake.id,
                    amount(stake.amount),
                    stake.status,
                    stake.reason,
                    reference,
                    moment(stake.created_at),
                    moment(stake.expires_at),
                    moment(stake.closed_at),
                )
            )
        console().print(table)
        return EXIT_OK

    @stakes.command("expire")
    @click.option("--now", default=None, metavar="ISO", help="Expire as of this moment.")
    @url_option
    def expire(now: str | None, url: str | None) -> int:
        """Return every open stake past its expiry to its owner."""
        with open_ledger(url) as ledger:
            expired = ledger.expire_stakes(now=now)
        click.echo(f"expired {count(expired, 'stake/stakes')}")
        return EXIT_OK
