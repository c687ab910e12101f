"""``tokenledger db copy`` at scale: a sealed SQLite ledger of N entries into PostgreSQL.

    python bench/ledger_copy.py --entries 1000000      # or: python bench/run.py --only copy

The source is the read side's seeded economy (``reads.economy``), written
straight into a SQLite file at head with each entry's digest and its chain
link computed as the ledger computes them, so the source verifies and the
copy has the chain to carry too. The copy runs in a fresh process (the
library's ``copy_ledger``, then the checks ``db copy`` runs: row counts,
chain heads, ``verify`` on the target), which reports the time of each
phase and its own peak RSS (``VmHWM``: a fresh process image starts its own).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reads
import writes

from tokenledger import migrations
from tokenledger.domain.hashing import entry_digest, link_hash
from tokenledger.storage.posting.sqlite import sqlite_timestamp

GENESIS = "0" * 64

COPY_PROBE = """
import json, sys, time
from pathlib import Path
from tokenledger import Ledger
from tokenledger.storage import create_engine
from tokenledger.storage.copying import check_copy, copy_ledger

def peak_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0

source, target = create_engine(sys.argv[1]), create_engine(sys.argv[2])
base = peak_mib()
started = time.perf_counter()
plan = copy_ledger(source, target, page_size=int(sys.argv[3]))
copied = time.perf_counter() - started
after_copy = peak_mib()
problems = check_copy(target, plan)
report = Ledger(target).verify()
verified = time.perf_counter() - started - copied
print(json.dumps({
    "rows": sum(t.source_rows for t in plan.tables),
    "copy_seconds": round(copied, 1), "verify_seconds": round(verified, 1),
    "ok": report.ok and not problems, "entries": report.counts["entries"],
    "baseline_rss_mib": round(base, 1), "copy_peak_rss_mib": round(after_copy, 1),
    "peak_rss_mib": round(peak_mib(), 1),
}))
"""


def build_sqlite_source(path: Path, accounts: int, entries: int) -> float:
    """A sealed ledger of ``entries`` entries at head in ``path``; seconds taken."""
    started = time.perf_counter()
    url = f"sqlite:///{path}"
    migrations.upgrade(url)
    account_rows, journal = reads.economy(accounts, entries)
    connection = sqlite3.connect(path)
    previous = GENESIS
    batch_entries: list[tuple[Any, ...]] = []
    batch_links: list[tuple[Any, ...]] = []

    def flush() -> None:
        connection.executemany(
            "INSERT INTO token_ledger (id, timestamp, from_account, to_account, amount, reason, "
            "balance_after_from, balance_after_to, writer_txid, digest) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
            batch_entries,
        )
        connection.executemany(
            "INSERT INTO token_chain (seq, entry_id, hash, encoding) VALUES (?, ?, ?, 2)",
            batch_links,
        )
        batch_entries.clear()
        batch_links.clear()

    last = 0
    for entry_id, moment, sender, receiver, amount, reason, after_from, after_to in journal:
        row = {
            "id": entry_id,
            "timestamp": moment,
            "from_account": sender,
            "to_account": receiver,
            "amount": amount,
            "reason": reason,
            "reference_type": None,
            "reference_id": None,
            "memo": None,
            "balance_after_from": after_from,
            "balance_after_to": after_to,
            "idempotency_key": None,
            "stake_id": None,
            "reverses_entry_id": None,
            "writer_txid": 0,
        }
        digest = entry_digest(row)
        previous = link_hash(previous, digest)
        stamp = sqlite_timestamp(moment)
        batch_entries.append(
            (entry_id, stamp, sender, receiver, amount, reason, after_from, after_to, digest)
        )
        batch_links.append((entry_id, entry_id, previous))
        last = entry_id
        if len(batch_entries) >= 50_000:
            flush()
    flush()
    connection.executemany(
        "INSERT INTO token_accounts (account_id, balance, total_earned, total_spent, "
        "total_staked, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (name, balance, earned, spent, staked, sqlite_timestamp(c), sqlite_timestamp(u))
            for name, balance, earned, spent, staked, c, u in account_rows()
        ],
    )
    connection.execute(
        "UPDATE token_chain_head SET seq = ?, hash = ?, last_txid = 0, last_entry_id = ?",
        (last, previous, last),
    )
    connection.commit()
    connection.close()
    return time.perf_counter() - started


def run(admin_url: str, accounts: int, entries: int, page_size: int = 5_000) -> dict[str, Any]:
    """Build the source, copy it into a fresh PostgreSQL database, report the figures."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "source.db"
        build = build_sqlite_source(path, accounts, entries)
        print(f"copy: source of {entries:,} entries built in {build:.1f} s", flush=True)
        target = writes.fresh_database(admin_url, "tokenledger_bench_copy")
        done = subprocess.run(
            [sys.executable, "-c", COPY_PROBE, f"sqlite:///{path}", target, str(page_size)],
            capture_output=True,
            text=True,
            check=True,
            env={k: v for k, v in os.environ.items() if k != migrations.URL_ENV},
        )
        results: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        results |= {
            "accounts": accounts,
            "source_entries": entries,
            "page_size": page_size,
            "source_bytes": path.stat().st_size,
            "build_seconds": round(build, 1),
        }
    results["rows_per_second"] = round(results["rows"] / results["copy_seconds"])
    print("copy", results, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=5_000)
    args = parser.parse_args()
    admin_url = os.environ.get(
        "TOKENLEDGER_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    )
    print(json.dumps(run(admin_url, args.accounts, args.entries, args.page_size), indent=2))


if __name__ == "__main__":
    main()
