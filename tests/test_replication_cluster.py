"""Replicas, a missing synchronous standby and a failover, on a real Patroni cluster.

One cluster for the module (``tests/cluster.py``: etcd and two PostgreSQL 15
nodes under Patroni, synchronous mode, on loopback ports). The tests run in
file order; the last one kills the primary, so it comes last.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

import cluster as patroni
from conftest import REQUIRE_PG_ENV
from tokenledger import (
    InsufficientFunds,
    Ledger,
    LedgerEntry,
    OutcomeUnknown,
    StorageError,
    migrations,
)
from tokenledger.storage import create_engine

pytestmark = pytest.mark.postgresql


@pytest.fixture(scope="module")
def cluster() -> Iterator[patroni.Cluster]:
    missing = patroni.available()
    if missing is not None:
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(f"the replication tests need a cluster: {missing}", pytrace=False)
        pytest.skip(missing)
    with patroni.patroni_cluster() as running:
        migrations.upgrade(running.primary().url())
        yield running


@pytest.fixture
def primary_engine(cluster: patroni.Cluster) -> Iterator[Engine]:
    engine = create_engine(cluster.multi_host_url(), pool_size=10, max_overflow=5)
    yield engine
    engine.dispose()


@pytest.fixture
def standby_engine(cluster: patroni.Cluster) -> Iterator[Engine]:
    engine = create_engine(cluster.standby().url(), pool_size=10, max_overflow=5)
    yield engine
    engine.dispose()


def _books_balance(ledger: Ledger) -> None:
    """Conservation to the base unit, and a whole, verifiable journal."""
    report = ledger.verify()
    assert report.ok, report.problems[:5]
    engine = ledger.engine
    assert engine is not None
    with engine.connect() as connection:
        held = connection.execute(
            text("SELECT coalesce(sum(balance + total_staked), 0) FROM token_accounts")
        ).scalar_one()
        minted = connection.execute(
            text(
                "SELECT coalesce(sum(CASE WHEN from_account = 'system' THEN amount ELSE 0 END)"
                " - sum(CASE WHEN to_account = 'system' THEN amount ELSE 0 END), 0) "
                "FROM token_ledger"
            )
        ).scalar_one()
    assert held == minted


def test_replica_reads_under_load_see_each_callers_writes(
    cluster: patroni.Cluster, primary_engine: Engine, standby_engine: Engine
) -> None:
    ledger = Ledger(primary_engine, standby_engine, require_synchronous=True)
    for i in range(4):
        ledger.create_account(f"load-{i}", 1000)
    for r in range(2):
        ledger.create_account(f"reader-{r}", 100)
        ledger.create_account(f"reader-{r}-to", 0)
    stop = threading.Event()
    failures: list[BaseException] = []

    def load(i: int) -> None:
        while not stop.is_set():
            try:
                ledger.transfer(f"load-{i}", f"load-{(i + 1) % 4}", "0.01", "load")
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)
                return

    def reader(r: int) -> None:
        try:
            for n in range(1, 41):
                entry = ledger.transfer(f"reader-{r}", f"reader-{r}-to", 1, "mine")
                # The read right after the write, from the replica, sees it.
                assert ledger.get_balance(f"reader-{r}-to") == Decimal(n)
                assert ledger.get_statement(f"reader-{r}-to", limit=1)[0].id == entry.id
        except BaseException as exc:
            failures.append(exc)

    loaders = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    readers = [threading.Thread(target=reader, args=(r,)) for r in range(2)]
    for thread in loaders + readers:
        thread.start()
    for thread in readers:
        thread.join(timeout=120)
    stop.set()
    for thread in loaders:
        thread.join(timeout=30)
    assert failures == []
    counts = ledger._binding.counts  # type: ignore[attr-defined]
    print(f"\nreplica reads under load: {counts}")
    # Most reads were the replica's (the rest had to wait past the bound: a loaded machine).
    assert counts["replica"] > counts["primary"], counts
    # The standby holds what the primary acknowledged, once it has replayed it.
    assert ledger.get_total_supply() == Ledger(standby_engine).get_total_supply()
    _books_balance(ledger)


def test_a_standby_that_goes_away_under_synchronous_commit(
    cluster: patroni.Cluster, primary_engine: Engine, standby_engine: Engine
) -> None:
    """Bounded, in doubt, nothing lost: the key resolves it once the standby is back."""
    ledger = Ledger(primary_engine, commit_deadline=1.0, require_synchronous=True)
    ledger.create_account("away-a", 10)
    ledger.create_account("away-b", 0)
    standby = cluster.standby()
    standby.signal_all(signal.SIGSTOP)  # the standby stops answering (a hung host)
    try:
        started = time.monotonic()
        with pytest.raises(OutcomeUnknown, match="deadline"):
            ledger.transfer("away-a", "away-b", 3, "pay", idempotency_key="away-1")
        took = time.monotonic() - started
    finally:
        standby.signal_all(signal.SIGCONT)
    assert 1.0 <= took < 10.0
    # The commit was ended after it was written on the primary: the entry is
    # there, and once the standby is back it has it too. The key says so.
    entry = ledger.transfer("away-a", "away-b", 3, "pay", idempotency_key="away-1")
    assert ledger.transfer("away-a", "away-b", 3, "pay", idempotency_key="away-1") == entry
    assert ledger.get_balance("away-b") == Decimal(3)
    deadline = time.monotonic() + 30
    replica = Ledger(standby_engine)
    while time.monotonic() < deadline:
        if replica.get_balance("away-b") == Decimal(3):
            break
        time.sleep(0.1)
    assert [e.id for e in replica.get_statement("away-b")] == [entry.id]
    # Writes go on once the standby is back.
    ledger.transfer("away-a", "away-b", 1, "pay")
    assert ledger.get_balance("away-a") == Decimal(6)
    _books_balance(ledger)


def test_failover_under_writers_loses_no_acknowledged_entry(
    cluster: patroni.Cluster, primary_engine: Engine
) -> None:
    """kill -9 the primary node under 4 keyed writers; Patroni promotes the standby."""
    ledger = Ledger(primary_engine, failover_wait=60.0, commit_deadline=15.0)
    accounts = [f"fo-{i}" for i in range(8)]
    for account in accounts:
        ledger.create_account(account, 1000)
    supply_before = ledger.get_total_supply()
    acknowledged: dict[str, tuple[LedgerEntry, float]] = {}
    errors: Counter[str] = Counter()
    stop = threading.Event()
    failures: list[BaseException] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        chooser = random.Random(w)
        n = 0
        give_up = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < give_up:
            key = f"fo-{w}-{n}"
            sender, receiver = chooser.sample(accounts, 2)
            while time.monotonic() < give_up:  # the same key until it is acknowledged
                try:
                    entry = ledger.transfer(sender, receiver, "0.01", "fo", idempotency_key=key)
                except (OutcomeUnknown, StorageError):
                    with lock:
                        errors[key] += 1
                    time.sleep(0.05)
                    continue
                except InsufficientFunds:  # pragma: no cover - 1000 each, 0.01 a time
                    break
                except BaseException as exc:
                    failures.append(exc)
                    return
                with lock:
                    acknowledged[key] = (entry, time.monotonic())
                break
            n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    old, new = cluster.primary(), cluster.standby()
    before_kill = len(acknowledged)
    killed_at = time.monotonic()
    old.kill()
    promoted_after = cluster.wait_for_primary(new, timeout=60)
    # Let the writers find the new primary and write there for a while.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            after = [t for _, t in acknowledged.values() if t > killed_at + promoted_after]
        if len(after) >= 40:
            break
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(timeout=90)
    assert failures == []
    assert before_kill > 0
    assert len(after) >= 40
    times = sorted(t for _, t in acknowledged.values())
    stall = max(later - earlier for earlier, later in itertools.pairwise(times))
    print(
        f"\nfailover: promoted {promoted_after:.2f} s after kill -9; writes stalled for "
        f"{stall:.2f} s; {len(acknowledged)} acknowledged, "
        f"{sum(errors.values())} errors seen by writers, "
        f"{ledger._binding.in_doubt_retries} in-doubt commits resolved by key"
    )

    survivor = create_engine(new.url())
    try:
        books = Ledger(survivor)
        with survivor.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT idempotency_key, id, amount FROM token_ledger "
                    "WHERE idempotency_key LIKE 'fo-%'"
                )
            ).all()
        stored = Counter(row.idempotency_key for row in rows)
        assert max(stored.values()) == 1  # never written twice
        ids = {row.idempotency_key: row.id for row in rows}
        # Every acknowledged entry survived, under its key, with its id; and
        # every key a writer tried (in doubt or not) was written exactly once.
        assert {key: entry.id for key, (entry, _) in acknowledged.items()} == ids
        assert set(errors) <= set(ids)
        assert books.get_total_supply() == supply_before
        balances = sum(books.get_balance(account) for account in accounts)
        assert balances == Decimal(1000) * len(accounts)
        _books_balance(books)
    finally:
        survivor.dispose()
