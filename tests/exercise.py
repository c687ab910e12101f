"""One pass over every kind of ledger call, asserting each outcome: for configurations to run.

``every_operation`` is what a host configuration (an isolation level, a
driver, a PgBouncer mode) must carry without a single surprise. It repeats
each statement more than five times, the point at which psycopg 3 would
start preparing statements on the server.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenledger import (
    SYSTEM_ACCOUNT,
    IdempotencyConflict,
    InsufficientFunds,
    Ledger,
    StakeClosed,
    Transfer,
)

__all__ = ["every_operation"]


def every_operation(ledger: Ledger, prefix: str = "x") -> None:
    """Accounts, writes, refusals, batches, stakes, reversals, sealing, reads; all checked."""
    alice, bob = f"{prefix}-alice", f"{prefix}-bob"
    supply_before = ledger.get_total_supply()
    ledger.create_account(alice, 1000)
    ledger.create_account(bob, 0)
    first = ledger.transfer(alice, bob, "1.5", "r", idempotency_key=f"{prefix}-k")
    assert ledger.transfer(alice, bob, "1.5", "r", idempotency_key=f"{prefix}-k") == first
    with pytest.raises(IdempotencyConflict):
        ledger.transfer(alice, bob, 2, "r", idempotency_key=f"{prefix}-k")
    for _ in range(7):
        ledger.transfer(alice, bob, 1, "r")
        ledger.mint(bob, "0.25", "reward")
        ledger.burn(alice, "0.5", "fee")
        ledger.get_balance(bob)
        ledger.get_statement(bob, limit=3)
    with pytest.raises(InsufficientFunds):
        ledger.transfer(bob, alice, 10_000, "too much")
    batch = ledger.transfer_many([Transfer(bob, alice, 1, "a"), Transfer(alice, bob, 2, "b")])
    assert [e.amount for e in batch] == [Decimal(1), Decimal(2)]
    stake = ledger.stake(alice, 10, "bid")
    ledger.settle(stake.id, bob, "won", amount=4)
    with pytest.raises(StakeClosed):
        ledger.release(stake.id, "again")
    slashed = ledger.stake(bob, 2, "bid")
    ledger.settle(slashed.id, SYSTEM_ACCOUNT, "slash")
    ledger.reverse(first.id, "undo")
    # alice's figures: 1000, less 1.5, 7 and 3.5, plus 1, less 2 and 10, plus 6 and 1.5
    assert ledger.get_balance(alice) == Decimal("984.5")
    # bob's: 1.5, 7 and 1.75 in, 1 out, 2 and 4 in, 2 staked and slashed, 1.5 reversed
    assert ledger.get_balance(bob) == Decimal("11.75")
    assert ledger.get_total_supply() - supply_before == Decimal("996.25")
    assert ledger.expire_stakes() == 0
    ledger.seal()
    assert ledger.checkpoint() is not None
    report = ledger.verify()
    assert report.ok, report.problems[:5]
    assert report.counts["unsealed_pending"] == 0
    exported = list(ledger.export_chain())
    assert len(exported) == report.counts["entries"]
    assert ledger.supply_report().total_supply - supply_before == Decimal("996.25")
