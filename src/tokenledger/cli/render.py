"""How the commands print: plain lines, rich tables, JSON; nothing here touches the ledger."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tokenledger.cli.demo import DemoResult, DemoStats
from tokenledger.domain.records import LedgerEntry, SupplyReport, jsonable

__all__ = [
    "amount",
    "cells",
    "console",
    "count",
    "demo_progress",
    "holders_table",
    "moment",
    "print_demo",
    "print_json",
    "statement_table",
    "supply_table",
]

# Rich draws tables 80 columns wide when stdout is not a terminal, which
# wraps a statement's rows; logs and pipes read better a little wider.
PIPE_WIDTH = 120


def console() -> Console:
    interactive = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(highlight=False, width=None if interactive else PIPE_WIDTH)


def cells(*values: object) -> list[Text]:
    # Text, not str: rich would read "[...]" in an account id or a reason as markup.
    return [Text("" if value is None else str(value)) for value in values]


def amount(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def count(number: int, nouns: str) -> str:
    """``number`` and the singular or plural of ``"singular/plural"``."""
    singular, plural = nouns.split("/")
    return f"{number} {singular if number == 1 else plural}"


def moment(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def print_json(value: Any) -> None:
    click.echo(json.dumps(jsonable(value), indent=2, ensure_ascii=False))


def statement_table(
    owner: str,
    entries: Sequence[LedgerEntry],
    title: str,
    *,
    tx_hashes: Mapping[int, str] | None = None,
) -> Table:
    """One account's entries: who paid whom, signed for ``owner``, and its balance after.

    With ``tx_hashes`` (the ledger has a token contract), a last column shows
    each entry's transaction on chain, blank until it is pushed.
    """
    table = Table(title=title, title_justify="left")
    headers = ["id", "time (UTC)", "from", "to", "amount", "balance after", "reason"]
    if tx_hashes is not None:
        headers.append("tx hash")
    for header in headers:
        numeric = header in {"id", "amount", "balance after"}
        # A hash is folded, never cut: it is copied into block explorers.
        overflow: Literal["fold", "ellipsis"] = "fold" if header == "tx hash" else "ellipsis"
        table.add_column(header, justify="right" if numeric else "left", overflow=overflow)
    for entry in entries:
        incoming = entry.to_account == owner
        after = entry.balance_after_to if incoming else entry.balance_after_from
        table.add_row(
            *cells(
                entry.id,
                moment(entry.timestamp),
                entry.from_account,
                entry.to_account,
                ("+" if incoming else "-") + amount(entry.amount),
                amount(after),
                entry.reason,
                *([] if tx_hashes is None else [tx_hashes.get(entry.id)]),
            )
        )
    return table


def supply_table(report: SupplyReport, window: str, title: str | None = None) -> Table:
    """The supply figures: totals, velocity over ``window``, Gini and percentiles."""
    figures = Table(title=title, title_justify="left", show_header=False)
    figures.add_column()
    figures.add_column(justify="right")
    velocity = report.velocity
    for label, value in (
        ("total supply", amount(report.total_supply)),
        ("minted", amount(report.minted)),
        ("burned", amount(report.burned)),
        ("circulating", amount(report.circulating)),
        ("staked", amount(report.staked)),
        ("accounts", str(report.accounts)),
        ("holders", str(report.holders)),
        (f"transfer volume ({window})", amount(velocity.transfer_volume)),
        (f"velocity ({window})", amount(velocity.velocity)),
        (f"entries ({window})", str(velocity.entries)),
        ("gini", amount(report.distribution.gini)),
        *(
            (f"holdings {name}", amount(value))
            for name, value in report.distribution.percentiles.items()
        ),
    ):
        figures.add_row(*cells(label, value))
    return figures


def holders_table(report: SupplyReport) -> Table:
    table = Table(title="Top holders", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("account")
    table.add_column("holdings", justify="right")
    table.add_column("share", justify="right")
    for rank, holder in enumerate(report.distribution.top_holders, start=1):
        share = f"{holder.share * 100:.2f}%"
        table.add_row(*cells(rank, holder.account_id, amount(holder.holdings), share))
    return table


@contextmanager
def demo_progress(out: Console, rounds: int) -> Iterator[Callable[[int, int, DemoStats], None]]:
    """A progress bar on a terminal; a line every tenth of the run elsewhere (logs, pipes)."""
    if not out.is_terminal:
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
        console=out,
    )
    task = bar.add_task("playing", total=rounds, calls=0)

    def advance(done: int, total: int, stats: DemoStats) -> None:
        bar.update(task, completed=done, calls=stats.total_writes)

    with bar:
        yield advance


def print_demo(out: Console, result: DemoResult) -> None:
    """What the demo played, and whether the books balance."""
    stats = result.stats
    rate = stats.total_writes / result.seconds if result.seconds else 0.0
    out.print(
        f"\n{stats.total_writes} ledger calls in {result.seconds:.1f}s ({rate:.0f}/s), "
        f"run id {result.run_id}; accounts created {stats.accounts_created}, "
        f"reused {stats.accounts_reused}",
        markup=False,
    )
    activity = Table(title="Activity", title_justify="left")
    activity.add_column("kind")
    activity.add_column("calls", justify="right")
    for kind, calls in stats.writes.most_common():
        activity.add_row(*cells(kind, calls))
    activity.add_row(*cells("(retries answered from the first write)", stats.retries))
    activity.add_row(*cells("(overdrafts refused)", stats.refused))
    out.print(activity)
    out.print(holders_table(result.supply))
    if result.statement:
        owner = result.supply.distribution.top_holders[0].account_id
        out.print(statement_table(owner, result.statement, f"Statement of {owner} (latest 5)"))
    out.print(supply_table(result.supply, "24h", title="Supply"))

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
    out.print(checks)
    for problem in integrity.report.problems[:20]:
        out.print(f"  {problem.kind}: {problem.message}", markup=False)
    verdict = "the books balance" if integrity.ok else "the books DO NOT balance"
    out.print(Text(verdict, style="bold green" if integrity.ok else "bold red"))
