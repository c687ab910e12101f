"""psycopg 3 (the host's driver) end to end, whatever driver the rest of the suite uses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from auditor import audit
from conftest import empty_postgres, with_driver
from test_batch import check_texts_survive_a_batch
from test_group_commit import check_texts_survive_one_batch
from tokenledger import IdempotencyConflict, InsufficientFunds, Ledger, Transfer
from tokenledger.storage import create_engine

pytestmark = pytest.mark.postgresql


@pytest.fixture
def psycopg3_engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(with_driver(postgres_url, "psycopg"), pool_size=10)
    assert engine.dialect.driver == "psycopg"
    empty_postgres(engine)
    yield engine
    engine.dispose()


def test_every_kind_of_write_and_read(psycopg3_engine: Engine) -> None:
    ledger = Ledger(psycopg3_engine)
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    entry = ledger.transfer("alice", "bob", "12.345678", "debate", idempotency_key="k")
    assert ledger.transfer("alice", "bob", "12.345678", "debate", idempotency_key="k") == entry
    with pytest.raises(IdempotencyConflict):
        ledger.transfer("alice", "bob", 1, "debate", idempotency_key="k")
    with pytest.raises(InsufficientFunds):
        ledger.transfer("bob", "alice", 1000, "too much")
    ledger.mint("bob", 1, "reward")
    ledger.burn("alice", "0.5", "fee")
    stake = ledger.stake("alice", 10, "bid")
    ledger.settle(stake.id, "bob", "won", amount=4)
    ledger.transfer_many([Transfer("bob", "alice", 1, "a"), Transfer("alice", "bob", 2, "b")])
    ledger.reverse(entry.id, "undo")
    # bob: the transfer, the mint, the payout, the batch, and the reversal taking it back
    assert ledger.get_balance("bob") == Decimal(6)
    assert ledger.get_total_supply() == Decimal("100.5")
    assert len(ledger.get_statement("bob")) == 6
    assert ledger.checkpoint() is not None
    report = ledger.verify()
    assert report.ok, report.problems
    audit(psycopg3_engine)


def test_batch_texts(psycopg3_engine: Engine) -> None:
    ledger = Ledger(psycopg3_engine)
    ledger.create_account("a", 10)
    check_texts_survive_a_batch(ledger, psycopg3_engine)


def test_group_commit_texts(psycopg3_engine: Engine) -> None:
    check_texts_survive_one_batch(Ledger(psycopg3_engine, group_commit=True), psycopg3_engine)


def test_concurrent_writers(psycopg3_engine: Engine) -> None:
    ledger = Ledger(psycopg3_engine)
    for name in ("a", "b", "c"):
        ledger.create_account(name, 50)
    refusals: list[str] = []

    def worker(seed: int) -> None:
        for i in range(40):
            sender, receiver = [("a", "b"), ("b", "c"), ("c", "a")][(seed + i) % 3]
            try:
                ledger.transfer(sender, receiver, 7, "trade")
            except InsufficientFunds:
                refusals.append(sender)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ledger.get_total_supply() == Decimal(150)
    assert ledger.verify().ok
    audit(psycopg3_engine)
