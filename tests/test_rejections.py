"""Every rejection of CONTRACT.md: a typed error, and nothing written.

Each case runs against a small populated ledger; a snapshot of every ledger
table before and after proves that the rejected call changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from tokenledger import (
    AccountExists,
    AccountNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidArgument,
    Ledger,
    LedgerError,
)

Call = Callable[[Ledger], Any]

BAD_AMOUNTS = [
    0,
    -1,
    "-0.5",
    Decimal("-3"),
    "0.0000001",
    Decimal("1.0000001"),
    1e-7,
    float("nan"),
    float("inf"),
    Decimal("NaN"),
    Decimal("-Infinity"),
    "NaN",
    True,
    False,
    None,
    "abc",
    "",
    "1 000",
    "9223372036854.775808",
    10**13,
    [5],
]

CASES: list[tuple[str, Call, type[LedgerError]]] = []


def case(name: str, error: type[LedgerError]) -> Callable[[Call], Call]:
    def register(call: Call) -> Call:
        CASES.append((name, call, error))
        return call

    return register


for i, bad in enumerate(BAD_AMOUNTS):
    CASES.append(
        (
            f"transfer amount {bad!r}",
            lambda lg, b=bad: lg.transfer("alice", "bob", b, "x"),
            InvalidAmount,
        )
    )
    CASES.append(
        (f"mint amount {bad!r}", lambda lg, b=bad: lg.mint("alice", b, "x"), InvalidAmount)
    )
    CASES.append(
        (f"burn amount {bad!r}", lambda lg, b=bad: lg.burn("alice", b, "x"), InvalidAmount)
    )
    if bad not in (0, False):  # a zero initial balance is allowed
        CASES.append(
            (
                f"initial balance {bad!r}",
                lambda lg, b=bad, n=i: lg.create_account(f"new{n}", b),
                InvalidAmount,
            )
        )

BAD_IDS: list[object] = ["", "x" * 256, 42, None, b"alice", "nul\x00byte", "\ud800", ["alice"]]
RESERVED_IDS = ["system", "system:escrow", "system:anything"]

for bad in BAD_IDS + RESERVED_IDS:
    CASES.append((f"create {bad!r}", lambda lg, b=bad: lg.create_account(b), InvalidArgument))
    CASES.append(
        (f"transfer from {bad!r}", lambda lg, b=bad: lg.transfer(b, "bob", 1, "x"), InvalidArgument)
    )
    CASES.append(
        (f"transfer to {bad!r}", lambda lg, b=bad: lg.transfer("alice", b, 1, "x"), InvalidArgument)
    )
    CASES.append((f"mint to {bad!r}", lambda lg, b=bad: lg.mint(b, 1, "x"), InvalidArgument))
    CASES.append((f"burn from {bad!r}", lambda lg, b=bad: lg.burn(b, 1, "x"), InvalidArgument))
for bad in BAD_IDS:
    CASES.append((f"balance of {bad!r}", lambda lg, b=bad: lg.get_balance(b), InvalidArgument))
    CASES.append((f"statement of {bad!r}", lambda lg, b=bad: lg.get_statement(b), InvalidArgument))

for bad in ["", "   ", "\t\n", None, 7, "r" * 256, "nul\x00"]:
    CASES.append(
        (f"reason {bad!r}", lambda lg, b=bad: lg.transfer("alice", "bob", 1, b), InvalidArgument)
    )
    CASES.append(
        (f"mint reason {bad!r}", lambda lg, b=bad: lg.mint("alice", 1, b), InvalidArgument)
    )

for field, bad in [
    ("reference_type", ""),
    ("reference_id", 5),
    ("memo", "m" * 4097),
    ("memo", "\ud800"),
]:
    CASES.append(
        (
            f"{field} {bad!r}",
            lambda lg, f=field, b=bad: lg.transfer("alice", "bob", 1, "x", **{f: b}),
            InvalidArgument,
        )
    )
for bad in ["", 5, "k" * 256]:
    CASES.append(
        (
            f"idempotency key {bad!r}",
            lambda lg, b=bad: lg.transfer("alice", "bob", 1, "x", idempotency_key=b),
            InvalidArgument,
        )
    )
for bad in ["yesterday", "2026-13-01", 12345, "", "9" * 100]:
    CASES.append(
        (f"since {bad!r}", lambda lg, b=bad: lg.get_statement("alice", since=b), InvalidArgument)
    )
    CASES.append(
        (f"as_of {bad!r}", lambda lg, b=bad: lg.get_balance("alice", as_of=b), InvalidArgument)
    )
for bad in [0, -1, True, "5", 1.5]:
    CASES.append(
        (f"limit {bad!r}", lambda lg, b=bad: lg.get_statement("alice", limit=b), InvalidArgument)
    )


@case("self-transfer", InvalidArgument)
def _self(ledger: Ledger) -> Any:
    return ledger.transfer("alice", "alice", 1, "x")


@case("existing account", AccountExists)
def _exists(ledger: Ledger) -> Any:
    return ledger.create_account("alice")


@case("transfer from unknown", AccountNotFound)
def _unknown_from(ledger: Ledger) -> Any:
    return ledger.transfer("nobody", "bob", 1, "x")


@case("transfer to unknown", AccountNotFound)
def _unknown_to(ledger: Ledger) -> Any:
    return ledger.transfer("alice", "nobody", 1, "x")


@case("mint to unknown", AccountNotFound)
def _unknown_mint(ledger: Ledger) -> Any:
    return ledger.mint("nobody", 1, "x")


@case("burn from unknown", AccountNotFound)
def _unknown_burn(ledger: Ledger) -> Any:
    return ledger.burn("nobody", 1, "x")


@case("overdraft", InsufficientFunds)
def _overdraft(ledger: Ledger) -> Any:
    return ledger.transfer("alice", "bob", "100.000001", "x")


@case("burn more than held", InsufficientFunds)
def _overburn(ledger: Ledger) -> Any:
    return ledger.burn("bob", "51.000001", "x")  # bob holds 51


@case("idempotency key reused with other arguments", IdempotencyConflict)
def _conflict(ledger: Ledger) -> Any:
    return ledger.transfer("alice", "bob", 2, "first", idempotency_key="used")


@case("idempotency key of a transfer reused for a mint", IdempotencyConflict)
def _conflict_kind(ledger: Ledger) -> Any:
    return ledger.mint("bob", 1, "first", idempotency_key="used")


def _populate(ledger: Ledger) -> None:
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 50)
    ledger.transfer("alice", "bob", 1, "first", idempotency_key="used")
    ledger.mint("alice", 1, "top-up")


@pytest.mark.parametrize(
    ("call", "error"),
    [pytest.param(call, error, id=name) for name, call, error in CASES],
)
def test_rejected_call_raises_and_writes_nothing(
    ledger: Ledger, snapshot: Callable[[], object], call: Call, error: type[LedgerError]
) -> None:
    _populate(ledger)
    before = snapshot()
    with pytest.raises(error):
        call(ledger)
    assert snapshot() == before
    # The ledger still works after the rejection.
    ledger.transfer("bob", "alice", "0.5", "still works")


def test_there_is_a_case_for_every_contract_rejection() -> None:
    names = " ".join(name for name, _, _ in CASES)
    for needle in ("nan", "inf", "True", "abc", "1.0000001", "9223372036854.775808", "-1", "0"):
        assert needle.lower() in names.lower(), needle
    assert len(CASES) > 150
