"""Idempotency keys: a repeat returns the original and writes nothing; a changed one is refused."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from auditor import audit
from tokenledger import IdempotencyConflict, Ledger, LedgerEntry


@pytest.fixture
def funded(ledger: Ledger) -> Ledger:
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    return ledger


@pytest.mark.parametrize(
    "write",
    [
        lambda lg: lg.transfer(
            "alice", "bob", "2.5", "bid", "artifact", "a1", "m", idempotency_key="k"
        ),
        lambda lg: lg.mint("bob", "2.5", "reward", "debate", "d1", idempotency_key="k"),
        lambda lg: lg.burn("alice", "2.5", "fee", idempotency_key="k"),
    ],
    ids=["transfer", "mint", "burn"],
)
def test_a_repeated_write_returns_the_original_and_writes_nothing(
    funded: Ledger, snapshot: Callable[[], object], write: Callable[[Ledger], LedgerEntry]
) -> None:
    first = write(funded)
    after_first = snapshot()
    again = write(funded)
    assert again == first
    assert snapshot() == after_first


def test_a_key_reused_with_other_arguments_is_refused(
    funded: Ledger, snapshot: Callable[[], object]
) -> None:
    funded.transfer("alice", "bob", 1, "bid", idempotency_key="k")
    before = snapshot()
    variants = [
        lambda: funded.transfer("alice", "bob", 2, "bid", idempotency_key="k"),
        lambda: funded.transfer("bob", "alice", 1, "bid", idempotency_key="k"),
        lambda: funded.transfer("alice", "bob", 1, "other", idempotency_key="k"),
        lambda: funded.transfer("alice", "bob", 1, "bid", "t", idempotency_key="k"),
        lambda: funded.transfer("alice", "bob", 1, "bid", memo="m", idempotency_key="k"),
        lambda: funded.mint("bob", 1, "bid", idempotency_key="k"),
        lambda: funded.burn("alice", 1, "bid", idempotency_key="k"),
    ]
    for variant in variants:
        with pytest.raises(IdempotencyConflict):
            variant()
    assert snapshot() == before


def test_equal_amounts_in_other_forms_are_the_same_request(funded: Ledger) -> None:
    first = funded.transfer("alice", "bob", "1.5", "bid", idempotency_key="k")
    assert funded.transfer("alice", "bob", Decimal("1.500000"), "bid", idempotency_key="k") == first
    assert funded.transfer("alice", "bob", 1.5, "bid", idempotency_key="k") == first


def test_a_retry_after_the_money_is_gone_still_returns_the_original(funded: Ledger) -> None:
    first = funded.transfer("alice", "bob", 100, "everything", idempotency_key="k")
    assert funded.get_balance("alice") == 0
    assert funded.transfer("alice", "bob", 100, "everything", idempotency_key="k") == first


@pytest.mark.postgresql
def test_concurrent_calls_with_one_key_write_once(pg_engine: Engine) -> None:
    engine = pg_engine
    ledger = Ledger(engine)
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    ledger.create_account("carol", 0)
    barrier = threading.Barrier(12)
    results: list[object] = []

    def worker(i: int) -> None:
        barrier.wait()
        # Half of the callers use other accounts with the same key: exactly one
        # request wins, the same ones get its entry, the others a conflict.
        to = "bob" if i % 2 else "carol"
        try:
            results.append(ledger.transfer("alice", to, 7, "bid", idempotency_key="race"))
        except IdempotencyConflict as exc:
            results.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = [r for r in results if isinstance(r, LedgerEntry)]
    conflicts = [r for r in results if isinstance(r, IdempotencyConflict)]
    assert len(entries) + len(conflicts) == 12
    assert len({e.id for e in entries}) == 1
    winner = entries[0]
    assert len(conflicts) == 6  # the callers who named the other receiver
    assert all(e.to_account == winner.to_account for e in entries)
    with engine.connect() as connection:
        count = connection.execute(
            text("SELECT count(*) FROM token_ledger WHERE idempotency_key = 'race'")
        ).scalar_one()
    assert count == 1
    assert ledger.get_balance("alice") == 93
    audit(engine)
