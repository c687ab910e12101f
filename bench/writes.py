"""Write throughput: the library against references doing the same row work.

PostgreSQL references run with pgbench on the same server, in the same run:

(a) client-side statements: BEGIN; lock both account rows in id order
    (SELECT ... FOR UPDATE); two UPDATEs; one INSERT into token_ledger; COMMIT.
(b) one server-side call (a PL/pgSQL function) doing the same.

SQLite's reference is raw ``sqlite3`` doing the same row work in one
process: BEGIN IMMEDIATE; read both rows; two UPDATEs; one INSERT; COMMIT.

The library runs ``Ledger.transfer`` in separate worker processes (one
Python process per worker, as a host's web workers would be).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import sqlite3
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tokenledger import Ledger, Transfer, migrations
from tokenledger.storage import create_engine
from tokenledger.storage.posting.postgres import POST_ENTRY_FUNCTION

BALANCE = 10**9  # tokens per benchmark account: no transfer ever runs out

REFERENCE_FUNCTION = """
CREATE OR REPLACE FUNCTION bench_transfer(p_from varchar, p_to varchar, p_amount bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE fb bigint; tb bigint; new_id bigint;
BEGIN
    PERFORM 1 FROM token_accounts WHERE account_id IN (p_from, p_to)
        ORDER BY account_id FOR UPDATE;
    UPDATE token_accounts SET balance = balance - p_amount,
        total_spent = total_spent + p_amount, updated_at = now()
        WHERE account_id = p_from RETURNING balance INTO fb;
    UPDATE token_accounts SET balance = balance + p_amount,
        total_earned = total_earned + p_amount, updated_at = now()
        WHERE account_id = p_to RETURNING balance INTO tb;
    INSERT INTO token_ledger (timestamp, from_account, to_account, amount, reason,
        balance_after_from, balance_after_to)
        VALUES (now(), p_from, p_to, p_amount, 'bench', fb, tb) RETURNING id INTO new_id;
    RETURN new_id;
END
$$
"""

_PICK = r"""\set i random(0, :n - 1)
\set j (:i + random(1, :n - 1)) % :n
"""
_A = "'bench-' || lpad(:i::text, 2, '0')"
_B = "'bench-' || lpad(:j::text, 2, '0')"
SCRIPT_CLIENT_SIDE = (
    _PICK + "BEGIN;\n" + f"SELECT balance FROM token_accounts WHERE account_id IN ({_A}, {_B}) "
    "ORDER BY account_id FOR UPDATE;\n"
    + "UPDATE token_accounts SET balance = balance - 1, total_spent = total_spent + 1, "
    f"updated_at = now() WHERE account_id = {_A} RETURNING balance AS fb \\gset\n"
    + "UPDATE token_accounts SET balance = balance + 1, total_earned = total_earned + 1, "
    f"updated_at = now() WHERE account_id = {_B} RETURNING balance AS tb \\gset\n"
    + "INSERT INTO token_ledger (timestamp, from_account, to_account, amount, reason, "
    f"balance_after_from, balance_after_to) VALUES (now(), {_A}, {_B}, 1, 'bench', :fb, :tb);\n"
    + "END;\n"
)
SCRIPT_SERVER_SIDE = _PICK + f"SELECT bench_transfer({_A}, {_B}, 1);\n"


def account_names(n: int) -> list[str]:
    return [f"bench-{i:02d}" for i in range(n)]


def fresh_database(admin_url: str, name: str) -> str:
    """Drop and create database ``name``, migrate it to head; its URL."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    migrations.upgrade(url)
    return url


def prepare_postgres(admin_url: str, name: str, accounts: int) -> str:
    """A fresh database at head with ``accounts`` funded accounts and the reference function."""
    url = fresh_database(admin_url, name)
    engine = create_engine(url)
    ledger = Ledger(engine)
    for account in account_names(accounts):
        ledger.create_account(account, BALANCE)
    with engine.begin() as connection:
        connection.execute(text(REFERENCE_FUNCTION))
    engine.dispose()
    return url


def pgbench(url: str, script: str, *, clients: int, accounts: int, seconds: float) -> float:
    """Transactions per second of ``script`` under pgbench."""
    parsed = make_url(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    command = [
        "pgbench", "-n", "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432),
        "-U", parsed.username or "postgres", "-f", handle.name, "-D", f"n={accounts}",
        "-c", str(clients), "-j", str(clients), "-T", str(int(seconds)), parsed.database or "",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    finally:
        Path(handle.name).unlink()
    match = re.search(r"tps = ([0-9.]+)", done.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{done.stdout}\n{done.stderr}")
    return float(match.group(1))


def _library_worker(
    url: str,
    accounts: int,
    seconds: float,
    seed: int,
    start: Any,
    engine_options: dict[str, Any],
    threads: int = 1,
    group_commit: bool = False,
) -> int:
    """``Ledger.transfer`` in a loop, from ``threads`` threads sharing one ledger."""
    engine = create_engine(url, **{"pool_size": threads, **engine_options})
    ledger = Ledger(engine, group_commit=group_commit)
    names = account_names(accounts)

    def one(rng: random.Random) -> None:
        a, b = rng.sample(names, 2)
        ledger.transfer(a, b, "0.000001", "bench")

    def until(deadline: float, rng: random.Random) -> int:
        done = 0
        while time.perf_counter() < deadline:
            one(rng)
            done += 1
        return done

    rngs = [random.Random(seed * 1000 + t) for t in range(threads)]
    for rng in rngs:  # warm the connections, the caches
        for _ in range(20):
            one(rng)
    start.wait()
    deadline = time.perf_counter() + seconds
    with ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(partial(until, deadline), rngs))
    engine.dispose()
    return done


# What the library sends per transfer on PostgreSQL (storage/posting/postgres.py).
DRIVER_CALL = (
    "SELECT entry_id, entry_time, after_from, after_to, prior_id, locked "
    f"FROM {POST_ENTRY_FUNCTION}(%s, %s, %s, 'bench', NULL, NULL, NULL, NULL)"
)


def _driver_worker(url: str, accounts: int, seconds: float, seed: int, start: Any, *_: Any) -> int:
    """The library's server-side call made through the bare driver: no library code."""
    parsed = make_url(url)
    connection = psycopg2.connect(
        host=parsed.host, port=parsed.port, user=parsed.username,
        password=parsed.password, dbname=parsed.database,
    )  # fmt: skip
    connection.autocommit = True
    cursor = connection.cursor()
    names = account_names(accounts)
    rng = random.Random(seed)

    def one() -> None:
        cursor.execute(DRIVER_CALL, (*rng.sample(names, 2), 1))
        cursor.fetchone()

    for _ in range(20):  # warm up as the library's workers do
        one()
    start.wait()
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        one()
        done += 1
    connection.close()
    return done


def library(
    url: str,
    *,
    workers: int,
    accounts: int,
    seconds: float,
    engine_options: dict[str, Any] | None = None,
    driver_only: bool = False,
    threads: int = 1,
    group_commit: bool = False,
) -> float:
    """Transfers per second of ``Ledger.transfer`` in ``workers`` processes.

    ``threads``: threads per process sharing one ledger (``group_commit``
    on or off). ``driver_only``: the same server-side call through bare
    psycopg2 instead, the floor that the library's Python overhead stands on.
    """
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Event()
    worker = _driver_worker if driver_only else _library_worker
    with context.Pool(workers) as pool:
        pending = [
            pool.apply_async(
                worker,
                (url, accounts, seconds, 7 + i, start, engine_options or {}, threads, group_commit),
            )
            for i in range(workers)
        ]
        time.sleep(1.0 + 0.2 * workers)  # let every worker warm up and reach the start line
        start.set()
        total = sum(p.get(timeout=seconds + 120) for p in pending)
    return total / seconds


@dataclass
class SqliteResult:
    synchronous: str
    raw: float
    library: float


def sqlite_pair(
    directory: Path, synchronous: str, seconds: float, accounts: int = 50, slices: int = 10
) -> SqliteResult:
    """Raw sqlite3 and the library, one process, on the same file.

    They take turns in short slices, so that drift in the disk's fsync
    latency over the run falls on both alike.
    """
    path = directory / f"writes-{synchronous.lower()}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    migrations.upgrade(url)
    engine = create_engine(url, sqlite_synchronous=synchronous)
    ledger = Ledger(engine)
    names = account_names(accounts)
    for account in names:
        ledger.create_account(account, BALANCE)
    raw_connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    raw_connection.execute(f"PRAGMA synchronous = {synchronous}")
    rng = random.Random(3)
    share = seconds / slices
    raw_done = library_done = 0
    for _ in range(slices):
        raw_done += _raw_sqlite(raw_connection, names, share, rng)
        deadline = time.perf_counter() + share
        while time.perf_counter() < deadline:
            a, b = rng.sample(names, 2)
            ledger.transfer(a, b, "0.000001", "bench")
            library_done += 1
    raw_connection.close()
    engine.dispose()
    return SqliteResult(synchronous, raw_done / seconds, library_done / seconds)


def _raw_sqlite(
    connection: sqlite3.Connection, names: list[str], seconds: float, rng: random.Random
) -> int:
    """Transfers done by plain sqlite3 in ``seconds``: the same row work as the library."""
    stamp = "2026-01-01 00:00:00.000000"
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        a, b = rng.sample(names, 2)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "SELECT account_id, balance FROM token_accounts WHERE account_id IN (?, ?) "
            "ORDER BY account_id",
            (a, b),
        ).fetchall()
        (fb,) = connection.execute(
            "UPDATE token_accounts SET balance = balance - 1, total_spent = total_spent + 1, "
            "updated_at = ? WHERE account_id = ? RETURNING balance",
            (stamp, a),
        ).fetchone()
        (tb,) = connection.execute(
            "UPDATE token_accounts SET balance = balance + 1, total_earned = total_earned + 1, "
            "updated_at = ? WHERE account_id = ? RETURNING balance",
            (stamp, b),
        ).fetchone()
        connection.execute(
            "INSERT INTO token_ledger (timestamp, from_account, to_account, amount, reason, "
            "balance_after_from, balance_after_to) VALUES (?, ?, ?, 1, 'bench', ?, ?)",
            (stamp, a, b, fb, tb),
        )
        connection.execute("COMMIT")
        done += 1
    return done


def batch_throughput(
    url: str, *, batch: int, batches: int, accounts: int = 50, rounds: int = 5
) -> float:
    """Transfers per second through ``transfer_many`` in batches of ``batch``.

    The median of ``rounds`` rounds of ``batches`` batches: one round is
    short enough for a neighbour's burst of I/O to halve it.
    """
    engine = create_engine(url)
    ledger = Ledger(engine)
    names = account_names(accounts)
    rng = random.Random(11)

    def one_batch() -> list[Transfer]:
        return [Transfer(*rng.sample(names, 2), "0.000001", "bench") for _ in range(batch)]

    ledger.transfer_many(one_batch())  # warm-up
    rates = []
    for _ in range(rounds):
        prepared = [one_batch() for _ in range(batches)]
        started = time.perf_counter()
        for transfers in prepared:
            ledger.transfer_many(transfers)
        rates.append(batch * batches / (time.perf_counter() - started))
    engine.dispose()
    return statistics.median(rates)
