"""transfer_many: many transfers, one transaction, all or nothing."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from enum import Enum

import pytest
from sqlalchemy import Engine

from auditor import audit
from tokenledger import (
    AccountNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidArgument,
    Ledger,
    Transfer,
)
from tokenledger.service.ledger import MAX_BATCH

D = Decimal


@pytest.fixture
def trio(ledger: Ledger) -> Ledger:
    for name, balance in (("a", 10), ("b", 0), ("c", 0)):
        ledger.create_account(name, balance)
    return ledger


def test_a_batch_applies_in_order_against_running_balances(trio: Ledger, engine: Engine) -> None:
    entries = trio.transfer_many(
        [
            Transfer("a", "b", 6, "pay", "invoice", "i-1"),
            {"from_id": "b", "to_id": "c", "amount": "5.5", "reason": "forward"},
            Transfer("c", "a", "0.5", "tip", memo="thanks"),
        ]
    )
    assert [(e.from_account, e.to_account, e.amount) for e in entries] == [
        ("a", "b", D(6)),
        ("b", "c", D("5.5")),
        ("c", "a", D("0.5")),
    ]
    assert [(e.balance_after_from, e.balance_after_to) for e in entries] == [
        (D(4), D(6)),
        (D("0.5"), D("5.5")),
        (D(5), D("4.5")),
    ]
    assert entries == sorted(entries, key=lambda e: e.id)
    assert len({e.timestamp for e in entries}) == 1  # one transaction, one moment
    assert entries[0].reference_id == "i-1"
    assert entries[2].memo == "thanks"
    assert [trio.get_balance(n) for n in "abc"] == [D("4.5"), D("0.5"), D(5)]
    assert trio.get_entry(entries[1].id) == entries[1]
    audit(engine)


def test_a_refused_item_refuses_the_whole_batch(
    trio: Ledger, snapshot: Callable[[], object]
) -> None:
    before = snapshot()
    with pytest.raises(InsufficientFunds) as caught:
        trio.transfer_many(
            [
                Transfer("a", "b", 6, "ok"),
                Transfer("b", "c", 3, "ok"),
                Transfer("b", "c", 4, "too much"),
            ]
        )
    assert any("transfer 2 of the batch" in note for note in caught.value.__notes__)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (Transfer("a", "b", 0, "zero"), InvalidAmount),
        (Transfer("a", "a", 1, "self"), InvalidArgument),
        (Transfer("a", "system", 1, "reserved"), InvalidArgument),
        (Transfer("a", "nobody", 1, "unknown"), AccountNotFound),
        (Transfer("a", "b", 1, ""), InvalidArgument),
        ({"from_id": "a", "to_id": "b", "amount": 1}, InvalidArgument),
        ({"from_id": "a", "to_id": "b", "amount": 1, "reason": "x", "extra": 1}, InvalidArgument),
        (("a", "b", 1, "tuple"), InvalidArgument),
    ],
    ids=[
        "zero",
        "self",
        "reserved",
        "unknown",
        "blank-reason",
        "missing-key",
        "extra-key",
        "tuple",
    ],
)
def test_a_malformed_item_writes_nothing(
    trio: Ledger, snapshot: Callable[[], object], bad: object, error: type[Exception]
) -> None:
    before = snapshot()
    with pytest.raises(error) as caught:
        trio.transfer_many([Transfer("a", "b", 1, "fine"), bad])  # type: ignore[list-item]
    assert any("transfer 1 of the batch" in note for note in caught.value.__notes__)
    assert snapshot() == before


def test_an_empty_batch_writes_nothing(trio: Ledger, snapshot: Callable[[], object]) -> None:
    before = snapshot()
    assert trio.transfer_many([]) == []
    assert snapshot() == before


def test_too_large_a_batch_is_refused(trio: Ledger) -> None:
    with pytest.raises(InvalidArgument, match="at most"):
        trio.transfer_many([Transfer("a", "b", "0.000001", "x")] * (MAX_BATCH + 1))


def test_a_repeated_keyed_batch_returns_the_originals(
    trio: Ledger, snapshot: Callable[[], object]
) -> None:
    batch = [
        Transfer("a", "b", 1, "x", idempotency_key="k1"),
        Transfer("b", "c", 1, "y", idempotency_key="k2"),
    ]
    first = trio.transfer_many(batch)
    after = snapshot()
    assert trio.transfer_many(batch) == first
    assert snapshot() == after
    with pytest.raises(IdempotencyConflict):
        trio.transfer_many([batch[0], Transfer("b", "c", 1, "y", idempotency_key="k3")])
    with pytest.raises(IdempotencyConflict):
        trio.transfer_many([batch[0], Transfer("b", "c", 2, "y", idempotency_key="k2")])
    with pytest.raises(InvalidArgument, match="twice"):
        trio.transfer_many([Transfer("a", "b", 1, "x", idempotency_key="dup")] * 2)
    assert snapshot() == after


def test_a_large_batch(trio: Ledger, engine: Engine) -> None:
    trio.mint("a", 10_000, "funding")
    for i in range(20):
        trio.create_account(f"n{i}", 0)
    batch = [Transfer("a", f"n{i % 20}", "0.5", "fan-out") for i in range(2000)]
    entries = trio.transfer_many(batch)
    assert len(entries) == 2000
    assert trio.get_balance("a") == D(9010)  # 10 + 10,000 - 2,000 x 0.5
    assert trio.get_balance("n7") == D(50)
    report = trio.verify()
    assert report.ok, report.problems[:3]
    audit(engine)


class Name(str, Enum):  # noqa: UP042 - not StrEnum, whose str() is its value
    """A str subclass whose str() is not its value ("Name.CAROL")."""

    CAROL = "carol"


TRICKY_TEXTS = [
    'say "hi"', "back\\slash", "{braces}", "a,b", "NULL", " padded ", "ünï 😀", '\\"', Name.CAROL
]  # fmt: skip


def test_texts_survive_a_batch_exactly(trio: Ledger, engine: Engine) -> None:
    check_texts_survive_a_batch(trio, engine)


def check_texts_survive_a_batch(trio: Ledger, engine: Engine) -> None:
    """Ids, reasons, references and memos that an array literal must quote and escape."""
    for name in TRICKY_TEXTS:
        trio.create_account(name, 0)
    batch = [
        Transfer("a", name, 1, reason=name, reference_type=name, reference_id=name, memo=name)
        for name in TRICKY_TEXTS
    ]
    entries = trio.transfer_many(batch)
    stored = [trio.get_entry(e.id) for e in entries]
    assert [(e.to_account, e.reason, e.reference_type, e.reference_id, e.memo) for e in stored] == [
        (name,) * 5 for name in TRICKY_TEXTS
    ]
    assert all(type(text) is str for e in stored for text in (e.to_account, e.reason, e.memo))
    assert trio.get_statement("carol")[0].to_account == "carol"
    assert [trio.get_balance(name) for name in TRICKY_TEXTS] == [D(1)] * len(TRICKY_TEXTS)
    assert trio.get_balance("a") == D(10 - len(TRICKY_TEXTS))
    audit(engine)


def test_a_batch_inside_a_transaction(trio: Ledger) -> None:
    with trio.transaction() as tx:
        tx.transfer_many([Transfer("a", "b", 2, "x"), Transfer("b", "c", 1, "y")])
        tx.transfer("a", "c", 1, "z")
    assert [trio.get_balance(n) for n in "abc"] == [D(7), D(1), D(2)]
