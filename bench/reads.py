"""The read side at scale: a seeded economy of N accounts and M entries.

The generator computes every balance and balance-after with the library's
own arithmetic (``tokenledger.domain.books``), so the loaded books are whole and
``verify`` must pass on them; it loads with COPY (PostgreSQL) or one
executemany (SQLite) instead of going through ``Ledger``, which would take
far longer than the measurements themselves.
"""

from __future__ import annotations

import io
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from tokenledger import Ledger
from tokenledger.domain.books import Balances, apply_entry

START = datetime(2026, 1, 1, tzinfo=UTC)


def economy(
    accounts: int, entries: int, seed: int = 42
) -> tuple[Callable[[], list[tuple[Any, ...]]], Iterator[tuple[Any, ...]]]:
    """Account rows (after everything) and a generator of journal rows, in id order.

    Activity is skewed like a real economy: a few agents are far busier
    than most (a Pareto choice of parties). Every account opens with a mint.
    """
    rng = random.Random(seed)
    names = [f"agent-{i:06d}" for i in range(accounts)]
    books = {name: Balances() for name in names}
    moment = START
    step = timedelta(days=30) / max(entries, 1)

    def pick() -> str:
        if rng.random() < 0.5:  # half the activity falls on a heavy-tailed few
            return names[min(int(rng.paretovariate(1.2)) - 1, accounts - 1)]
        return names[rng.randrange(accounts)]

    def rows() -> Iterator[tuple[Any, ...]]:
        nonlocal moment
        written = 0
        for name in names:
            if written >= entries:
                return
            amount = 1000 * 10**6
            after = apply_entry(books, "system", name, amount)
            written += 1
            yield (written, moment, "system", name, amount, "initial_balance", None, after[1])
            moment += step
        while written < entries:
            roll = rng.random()
            a = pick()
            if roll < 0.10:
                sender, receiver, amount = "system", a, rng.randint(1, 50) * 10**6
            elif roll < 0.15 and books[a].balance > 10**6:
                sender, receiver, amount = a, "system", rng.randint(1, books[a].balance // 2)
            else:
                b = pick()
                if b == a or books[a].balance < 2:
                    continue
                sender, receiver, amount = a, b, rng.randint(1, books[a].balance // 2)
            after = apply_entry(books, sender, receiver, amount)
            written += 1
            reason = "reward" if sender == "system" else "fee" if receiver == "system" else "trade"
            yield (written, moment, sender, receiver, amount, reason, after[0], after[1])
            moment += step

    def account_rows() -> list[tuple[Any, ...]]:
        """The final figures: call only after the journal generator is exhausted."""
        end = START + timedelta(days=31)
        return [
            (name, b.balance, b.total_earned, b.total_spent, b.total_staked, START, end)
            for name, b in books.items()
        ]

    return account_rows, rows()


def load_postgres(engine: Engine, accounts: int, entries: int) -> float:
    """COPY a generated economy in; seconds taken."""
    started = time.perf_counter()
    account_rows, journal = economy(accounts, entries)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        buffer = io.StringIO()
        for row in journal:
            entry_id, moment, sender, receiver, amount, reason, after_from, after_to = row
            buffer.write(
                f"{entry_id}\t{moment.isoformat()}\t{sender}\t{receiver}\t{amount}\t{reason}\t"
                f"{_copy(after_from)}\t{_copy(after_to)}\n"
            )
        buffer.seek(0)
        cursor.copy_expert(
            "COPY token_ledger (id, timestamp, from_account, to_account, amount, reason, "
            "balance_after_from, balance_after_to) FROM STDIN",
            buffer,
        )
        buffer = io.StringIO()
        for name, balance, earned, spent, staked, created, updated in account_rows():
            buffer.write(
                f"{name}\t{balance}\t{earned}\t{spent}\t{staked}\t"
                f"{created.isoformat()}\t{updated.isoformat()}\n"
            )
        buffer.seek(0)
        cursor.copy_expert(
            "COPY token_accounts (account_id, balance, total_earned, total_spent, total_staked, "
            "created_at, updated_at) FROM STDIN",
            buffer,
        )
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('token_ledger', 'id'), %s)", (entries,)
        )
        raw.commit()
        cursor.execute("ANALYZE token_ledger")
        cursor.execute("ANALYZE token_accounts")
        raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - started


def _copy(value: int | None) -> str:
    return "\\N" if value is None else str(value)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def read_latencies(ledger: Ledger, accounts: int, repeat: int, seed: int = 5) -> dict[str, Any]:
    rng = random.Random(seed)
    names = [f"agent-{rng.randrange(accounts):06d}" for _ in range(repeat)]
    busy = [f"agent-{i:06d}" for i in range(10)]  # the Pareto head: the longest histories
    as_of = START + timedelta(days=15)
    results: dict[str, Any] = {}
    iterator = iter(names * 3)
    results["get_statement_50"] = percentiles(
        timed(lambda: ledger.get_statement(next(iterator), limit=50), repeat)
    )
    busy_cycle = iter(busy * (repeat // len(busy) + 1))
    results["get_statement_50_busiest"] = percentiles(
        timed(lambda: ledger.get_statement(next(busy_cycle), limit=50), repeat)
    )
    results["get_balance"] = percentiles(timed(lambda: ledger.get_balance(next(iterator)), repeat))
    results["get_balance_as_of"] = percentiles(
        timed(lambda: ledger.get_balance(next(iterator), as_of=as_of), repeat)
    )
    results["supply_report"] = percentiles(timed(ledger.supply_report, 5))
    return results


VERIFY_PROBE = """
import json, resource, sys, time
from pathlib import Path
from tokenledger import Ledger

def peak_mib():
    # VmHWM: this process's own peak. ru_maxrss would start at the peak of
    # the process that forked it (Linux keeps it across fork and exec).
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

ledger = Ledger.from_url(sys.argv[1])
ledger.get_total_supply()  # connect and import everything before the baseline
base = peak_mib()
started = time.perf_counter()
report = ledger.verify()
elapsed = time.perf_counter() - started
peak = peak_mib()
print(json.dumps({
    "seconds": round(elapsed, 2), "ok": report.ok, "entries": report.counts["entries"],
    "baseline_rss_mib": round(base, 1), "peak_rss_mib": round(peak, 1),
    "problems": len(report.problems),
}))
"""


def verify_in_subprocess(url: str) -> dict[str, Any]:
    """``verify`` in a fresh process, so its peak memory is its own."""
    done = subprocess.run(
        [sys.executable, "-c", VERIFY_PROBE, url], capture_output=True, text=True, check=True
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
