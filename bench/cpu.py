"""Client CPU per transfer: the library against the bare driver, in one process.

``time.process_time()`` counts the CPU of this process alone (every thread),
so the server's work and the time spent waiting for it are left out: what
remains is what the library costs the host's process on top of the driver.

PostgreSQL: the bare driver (psycopg2 or psycopg 3, autocommit) sends the
library's own one-entry server call; the library runs ``Ledger.transfer`` on
the same driver. They take turns in slices, so that drift falls on both
alike. With group commit, 8 threads share one ledger, and the CPU of the
whole process is divided by the transfers it made.

SQLite: raw ``sqlite3`` doing the same row work (``writes._raw_sqlite``)
against ``Ledger.transfer``, at ``synchronous=NORMAL`` and ``FULL``.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from writes import BALANCE, DRIVER_CALL, _raw_sqlite, account_names

from tokenledger import Ledger, migrations
from tokenledger.storage import create_engine


def _cpu_per_call(step: Callable[[], None], calls: int) -> float:
    """Microseconds of this process's CPU per call of ``step``."""
    started = time.process_time()
    for _ in range(calls):
        step()
    return (time.process_time() - started) / calls * 1e6


def _bare_connection(url: str, driver: str) -> Any:
    parsed = make_url(url)
    options = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
    }
    if driver == "psycopg2":
        import psycopg2  # noqa: PLC0415

        connection = psycopg2.connect(**options)
    else:
        import psycopg  # noqa: PLC0415

        connection = psycopg.connect(**options)
    connection.autocommit = True
    return connection


def postgres(url: str, *, accounts: int = 50, calls: int = 3000) -> dict[str, Any]:
    """CPU per transfer on both drivers, alone and with group commit at 8 threads."""
    names = account_names(accounts)
    results: dict[str, Any] = {}
    for driver in ("psycopg2", "psycopg"):
        results[driver] = _one_driver(url, driver, names, calls)
        print("cpu", driver, results[driver], flush=True)
    return results


def _one_driver(url: str, driver: str, names: list[str], calls: int, slices: int = 6) -> dict:
    engine = create_engine(make_url(url).set(drivername=f"postgresql+{driver}"), pool_size=8)
    ledger = Ledger(engine)
    grouped = Ledger(engine, group_commit=True)
    connection = _bare_connection(url, driver)
    cursor = connection.cursor()
    rng = random.Random(5)

    def bare() -> None:
        cursor.execute(DRIVER_CALL, (*rng.sample(names, 2), 1))
        cursor.fetchone()

    def alone() -> None:
        ledger.transfer(*rng.sample(names, 2), "0.000001", "bench")

    def eight_threads() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: _transfer_many_times(grouped, names, calls // 8), range(8)))

    for step in (bare, alone):
        _cpu_per_call(step, 50)  # warm up
    per = calls // slices
    bare_us, alone_us, grouped_us = [], [], []
    for _ in range(slices):
        bare_us.append(_cpu_per_call(bare, per))
        alone_us.append(_cpu_per_call(alone, per))
        # One call of eight_threads makes calls // 8 * 8 transfers.
        grouped_us.append(_cpu_per_call(eight_threads, 1) / (calls // 8 * 8))
    connection.close()
    engine.dispose()
    b, a, g = (sum(x) / len(x) for x in (bare_us, alone_us, grouped_us))
    return {
        "bare_driver_us": round(b),
        "library_us": round(a),
        "ratio": round(a / b, 2),
        "group_commit_8_threads_us": round(g),
        "group_commit_ratio": round(g / b, 2),
    }


def _transfer_many_times(ledger: Ledger, names: list[str], count: int) -> None:
    rng = random.Random()
    for _ in range(count):
        ledger.transfer(*rng.sample(names, 2), "0.000001", "bench")


def sqlite(directory: Path, *, accounts: int = 50, seconds: float = 4.0) -> dict[str, Any]:
    """CPU per transfer against raw sqlite3 doing the same row work, per synchronous mode."""
    results: dict[str, Any] = {}
    names = account_names(accounts)
    for synchronous in ("NORMAL", "FULL"):
        path = directory / f"cpu-{synchronous.lower()}.db"
        url = f"sqlite:///{path}"
        migrations.upgrade(url)
        engine = create_engine(url, sqlite_synchronous=synchronous)
        ledger = Ledger(engine)
        for account in names:
            ledger.create_account(account, BALANCE)
        raw = sqlite3.connect(path, isolation_level=None, timeout=30)
        raw.execute(f"PRAGMA synchronous = {synchronous}")
        rng = random.Random(9)
        raw_cpu = library_cpu = 0.0
        raw_done = library_done = 0
        for _ in range(6):
            started = time.process_time()
            raw_done += _raw_sqlite(raw, names, seconds / 6, rng)
            raw_cpu += time.process_time() - started
            started = time.process_time()
            deadline = time.perf_counter() + seconds / 6
            while time.perf_counter() < deadline:
                ledger.transfer(*rng.sample(names, 2), "0.000001", "bench")
                library_done += 1
            library_cpu += time.process_time() - started
        raw.close()
        engine.dispose()
        r, lib = raw_cpu / raw_done * 1e6, library_cpu / library_done * 1e6
        results[synchronous] = {
            "raw_us": round(r),
            "library_us": round(lib),
            "ratio": round(lib / r, 2),
        }
        print("cpu sqlite", synchronous, results[synchronous], flush=True)
    return results
