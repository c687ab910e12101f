"""Migrations while the host writes: no write fails beyond the retried ones.

A database holding data from the first revision is upgraded to head by
``tokenledger db upgrade`` while 8 writers keep moving tokens. Each writer
uses what the schema it finds supports: the first release's plain SQL while
the database is older than head (every revision is expand-only, so those
writes stay valid), the ledger itself once it is at head. Two upgrades at
once end at head with one history. A revision that waits for a table lock
longer than ``lock_timeout`` is rolled back and run again.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from conftest import PostgresServer
from tokenledger import ConcurrencyConflict, Ledger, migrations
from tokenledger.schema.check import check_schema
from tokenledger.storage import create_engine
from tokenledger.storage.posting.sqlite import sqlite_timestamp

HEAD = migrations.head()
ACCOUNTS = ("ann", "ben", "cat", "dan")
START = 1_000 * 1_000_000  # each account's first balance, in base units


@pytest.fixture
def fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'online.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database("tokenledger_online")
    yield url
    server.drop_database(url)


def _at_first_revision_with_data(url: str) -> None:
    migrations.upgrade(url, "0001_core_ledger")
    engine = create_engine(url)
    with engine.begin() as connection:
        for account in ACCOUNTS:
            _old_release_mint(connection, account, START)
    engine.dispose()


def _now(connection: Connection) -> Any:
    moment = datetime.now(UTC)
    return moment if connection.dialect.name == "postgresql" else sqlite_timestamp(moment)


def _old_release_mint(connection: Connection, account: str, amount: int) -> None:
    stamp = _now(connection)
    connection.execute(
        text(
            "INSERT INTO token_accounts (account_id, balance, total_earned, total_spent, "
            "total_staked, created_at, updated_at) VALUES (:a, :b, :b, 0, 0, :t, :t)"
        ),
        {"a": account, "b": amount, "t": stamp},
    )
    connection.execute(
        text(
            "INSERT INTO token_ledger (timestamp, from_account, to_account, amount, reason, "
            "balance_after_from, balance_after_to) VALUES (:t, 'system', :a, :b, 'seed', NULL, :b)"
        ),
        {"a": account, "b": amount, "t": stamp},
    )


def _old_release_transfer(connection: Connection, sender: str, receiver: str, amount: int) -> None:
    """A transfer as the first release wrote it: lock both rows in id order, append, save."""
    # SQLite has no row locks: the caller's BEGIN IMMEDIATE holds the write lock.
    lock = " FOR UPDATE" if connection.dialect.name == "postgresql" else ""
    rows = connection.execute(
        text(
            "SELECT account_id, balance, total_earned, total_spent FROM token_accounts "
            f"WHERE account_id IN (:a, :b) ORDER BY account_id{lock}"
        ),
        {"a": sender, "b": receiver},
    )
    figures = {row.account_id: row for row in rows}
    stamp = _now(connection)  # taken under the locks: each account's entries stay in time order
    after_from = figures[sender].balance - amount
    after_to = figures[receiver].balance + amount
    connection.execute(
        text(
            "INSERT INTO token_ledger (timestamp, from_account, to_account, amount, reason, "
            "balance_after_from, balance_after_to) VALUES (:t, :f, :r, :n, 'old release', :af, :at)"
        ),
        {"t": stamp, "f": sender, "r": receiver, "n": amount, "af": after_from, "at": after_to},
    )
    for account, balance, earned, spent in (
        (sender, after_from, figures[sender].total_earned, figures[sender].total_spent + amount),
        (
            receiver,
            after_to,
            figures[receiver].total_earned + amount,
            figures[receiver].total_spent,
        ),
    ):
        connection.execute(
            text(
                "UPDATE token_accounts SET balance = :b, total_earned = :e, total_spent = :s, "
                "updated_at = :t WHERE account_id = :a"
            ),
            {"b": balance, "e": earned, "s": spent, "t": stamp, "a": account},
        )


def _revision(connection: Connection) -> str | None:
    return migrations.current(connection)


class Writers:
    """Threads that transfer tokens until stopped, each as its schema allows."""

    def __init__(self, engine: Engine, count: int) -> None:
        self.engine = engine
        self.ledger = Ledger(engine)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.written = {"old": 0, "new": 0}
        self.retried: list[str] = []
        self.failed: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(count)]

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self, seed: int) -> None:
        chooser = random.Random(seed)
        while not self.stop.is_set():
            sender, receiver = chooser.sample(ACCOUNTS, 2)
            try:
                kind = self._write_once(sender, receiver)
            except (ConcurrencyConflict, DBAPIError) as exc:
                if _retryable(exc):
                    with self.lock:
                        self.retried.append(type(exc).__name__)
                    continue
                with self.lock:
                    self.failed.append(exc)
                return
            except BaseException as exc:
                with self.lock:
                    self.failed.append(exc)
                return
            with self.lock:
                self.written[kind] += 1

    def _write_once(self, sender: str, receiver: str) -> str:
        with self.engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")  # the first release did too
            if _revision(connection) != HEAD:
                _old_release_transfer(connection, sender, receiver, 1_000)
                connection.commit()
                return "old"
            connection.rollback()
        self.ledger.transfer(sender, receiver, "0.001", "new release")
        return "new"


def _retryable(exc: BaseException) -> bool:
    """What a writer runs again: a lost deadlock or a busy database, never anything else."""
    if isinstance(exc, ConcurrencyConflict):
        return True
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return code in {"40P01", "40001"} or "database is locked" in str(orig)


def _upgrade_cli(url: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k != migrations.URL_ENV}
    return subprocess.Popen(
        [sys.executable, "-m", "tokenledger.cli", "db", "upgrade", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def _books_whole(url: str) -> int:
    """Seal, verify, check the schema; the number of entries."""
    engine = create_engine(url)
    try:
        ledger = Ledger(engine)
        ledger.seal()
        report = ledger.verify()
        assert report.ok, report.problems
        assert check_schema(engine) == []
        total = sum(ledger.get_balance(a) for a in ACCOUNTS)
        assert total * 1_000_000 == len(ACCOUNTS) * START  # conservation
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM token_ledger")).scalar_one())
    finally:
        engine.dispose()


def test_db_upgrade_from_the_first_revision_with_8_writers_running(fresh_url: str) -> None:
    _at_first_revision_with_data(fresh_url)
    engine = create_engine(fresh_url, pool_size=10, max_overflow=0)
    try:
        with Writers(engine, 8) as writers:
            time.sleep(0.3)  # the old release is writing
            upgrade = _upgrade_cli(fresh_url)
            out, err = upgrade.communicate(timeout=180)
            time.sleep(0.3)  # and the new one, after
        assert upgrade.returncode == 0, err
        assert f"to {HEAD}" in out
        assert writers.failed == [], writers.failed
        assert writers.written["old"] > 0
        assert writers.written["new"] > 0
        entries = _books_whole(fresh_url)
        assert entries == len(ACCOUNTS) + writers.written["old"] + writers.written["new"]
    finally:
        engine.dispose()


def test_two_upgrades_at_once_end_at_head_with_one_history(fresh_url: str) -> None:
    _at_first_revision_with_data(fresh_url)

    upgrades = [_upgrade_cli(fresh_url) for _ in range(2)]
    results = [u.communicate(timeout=180) for u in upgrades]

    for upgrade, (out, err) in zip(upgrades, results, strict=True):
        assert upgrade.returncode == 0, err
        assert HEAD in out
    engine = create_engine(fresh_url)
    with engine.connect() as connection:
        versions = connection.execute(text(f"SELECT * FROM {migrations.VERSION_TABLE}")).all()
    engine.dispose()
    assert versions == [(HEAD,)]
    assert _books_whole(fresh_url) == len(ACCOUNTS)


@pytest.mark.postgresql
def test_a_revision_that_waits_too_long_for_a_lock_is_rolled_back_and_retried(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database("tokenledger_lock_timeout")
    try:
        _at_first_revision_with_data(url)
        migrations.upgrade(url, "0004_post_entry_function")
        engine = create_engine(url)
        retries: list[int] = []
        holding = threading.Event()

        def hold_the_journal() -> None:  # e.g. a long report reading the journal
            with engine.connect() as connection:
                connection.execute(text("LOCK TABLE token_ledger IN ACCESS SHARE MODE"))
                holding.set()
                time.sleep(1.5)
                connection.rollback()

        blocker = threading.Thread(target=hold_the_journal)
        blocker.start()
        holding.wait(10)
        started = time.monotonic()
        # 0005 alters token_ledger: it needs the lock the reader holds.
        migrations.upgrade(url, lock_timeout_ms=200, on_retry=lambda n, _e: retries.append(n))
        blocker.join()

        assert retries, "the upgrade should have timed out at least once"
        assert time.monotonic() - started >= 1.0
        assert migrations.current(url) == HEAD
        engine.dispose()
        assert _books_whole(url) == len(ACCOUNTS)
    finally:
        postgres_server.drop_database(url)
