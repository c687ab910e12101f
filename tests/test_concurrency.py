"""Many writers at once: no lost update, no negative balance, no deadlock reaching a caller.

Run against PostgreSQL with threads and with separate processes, and against
SQLite with several processes on one file.
"""

from __future__ import annotations

import multiprocessing
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine

from auditor import audit
from tokenledger import Ledger
from tokenledger.storage import create_engine
from workers import process_worker, random_transfers

ACCOUNTS = [f"agent-{i:02d}" for i in range(12)]


def _open_accounts(ledger: Ledger) -> None:
    for account_id in ACCOUNTS:
        ledger.create_account(account_id, 100)


def _only_overdrafts(outcomes: Counter[str]) -> None:
    unexpected = {k: v for k, v in outcomes.items() if k not in ("ok", "InsufficientFunds")}
    assert not unexpected, unexpected
    assert outcomes["ok"] > 0
    assert outcomes["InsufficientFunds"] > 0


def _check_books(engine: Engine, ledger: Ledger, outcomes: Counter[str]) -> None:
    figures = audit(engine)  # conservation, replay, no negative balance
    report = ledger.verify()
    assert report.ok, report.problems[:5]
    ok_writes = outcomes["ok"] + len(ACCOUNTS)  # plus the opening mints
    assert report.counts["entries"] == ok_writes  # no lost and no extra entry
    assert figures["supply"] == figures["minted"] - figures["burned"]


@pytest.mark.postgresql
@pytest.mark.parametrize("hot", [False, True], ids=["spread", "two-hot-accounts"])
def test_threads_on_postgresql(pg_engine: Engine, hot: bool) -> None:
    engine = pg_engine
    ledger = Ledger(engine)
    _open_accounts(ledger)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(
            pool.map(lambda seed: random_transfers(ledger, ACCOUNTS, 60, seed, hot=hot), range(16))
        )
    outcomes = sum(results, Counter())
    _only_overdrafts(outcomes)
    _check_books(engine, ledger, outcomes)


@pytest.mark.postgresql
def test_processes_on_postgresql(pg_engine: Engine, postgres_url: str) -> None:
    engine = pg_engine
    ledger = Ledger(engine)
    _open_accounts(ledger)
    outcomes = _run_processes(postgres_url, workers=6, operations=80, hot=False)
    _only_overdrafts(outcomes)
    _check_books(engine, ledger, outcomes)


@pytest.mark.sqlite
def test_processes_on_one_sqlite_file(tmp_path: Path, sqlite_template: Path) -> None:
    path = tmp_path / "shared.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    ledger = Ledger(engine)
    _open_accounts(ledger)
    outcomes = _run_processes(url, workers=4, operations=60, hot=True)
    # No "database is locked" reaches a caller within the busy timeout.
    _only_overdrafts(outcomes)
    _check_books(engine, ledger, outcomes)
    engine.dispose()


def _run_processes(url: str, *, workers: int, operations: int, hot: bool) -> Counter[str]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [
            pool.submit(process_worker, url, ACCOUNTS, operations, 1000 + i, hot)
            for i in range(workers)
        ]
        return sum((f.result(timeout=300) for f in futures), Counter())
