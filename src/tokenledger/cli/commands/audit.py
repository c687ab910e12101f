"""``tokenledger verify``, ``seal``, ``checkpoint``: the audit trail."""

from __future__ import annotations

import json

import click

from tokenledger.cli._open import open_ledger
from tokenledger.cli.exits import EXIT_OK, EXIT_PROBLEMS
from tokenledger.cli.options import json_option, url_option
from tokenledger.cli.render import count

__all__ = ["register"]


def register(cli: click.Group) -> None:
    @cli.command("verify")
    @json_option
    @url_option
    def verify(as_json: bool, url: str | None) -> int:
        """Check the whole books: exit 0 when they are whole, 3 when not."""
        with open_ledger(url) as ledger:
            report = ledger.verify()
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        else:
            counts = report.counts
            scope = ", ".join(
                (
                    count(counts.get("entries", 0), "entry/entries"),
                    count(counts.get("accounts", 0), "account/accounts"),
                    count(counts.get("stakes", 0), "stake/stakes"),
                    f"{counts.get('sealed', 0)} sealed",
                    count(counts.get("checkpoints", 0), "checkpoint/checkpoints"),
                )
            )
            if report.ok:
                click.echo(f"OK: the books are whole ({scope})")
            else:
                found = count(len(report.problems), "problem/problems")
                click.echo(f"FAILED: {found} found ({scope})")
                for problem in report.problems:
                    click.echo(f"  {problem.kind}: {problem.message}")
                if counts.get("problems_not_listed"):
                    click.echo(f"  ... and {counts['problems_not_listed']} more")
        return EXIT_OK if report.ok else EXIT_PROBLEMS

    @cli.command("seal")
    @url_option
    def seal(url: str | None) -> int:
        """Link every committed, unsealed entry into the hash chain."""
        with open_ledger(url) as ledger:
            sealed = ledger.seal()
        click.echo(f"sealed {count(sealed, 'entry/entries')}")
        return EXIT_OK

    @cli.command("checkpoint")
    @url_option
    def checkpoint(url: str | None) -> int:
        """Seal, then store a Merkle root over the new chain positions."""
        with open_ledger(url) as ledger:
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
