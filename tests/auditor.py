"""An independent auditor of the books, for tests.

It reads the raw tables with plain SQL and replays the journal with its own
arithmetic (not ``tokenledger.domain.books``), so a bug in the library's replay
cannot hide a bug in its writes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, text

SYSTEM = "system"
ESCROW = "system:escrow"


def audit(engine: Engine) -> dict[str, Any]:
    """Replay everything; raise AssertionError on the first broken invariant.

    Returns the replayed figures, for tests that want to compare more.
    """
    with engine.connect() as connection:
        accounts = {
            row[0]: tuple(int(v) for v in row[1:])
            for row in connection.execute(
                text(
                    "SELECT account_id, balance, total_earned, total_spent, total_staked "
                    "FROM token_accounts"
                )
            )
        }
        owners = {
            row[0]: row[1]
            for row in connection.execute(text("SELECT id, account_id FROM token_stakes"))
        }
        open_stakes: dict[str, int] = defaultdict(int)
        for owner, amount in connection.execute(
            text("SELECT account_id, amount FROM token_stakes WHERE status = 'open'")
        ):
            open_stakes[owner] += int(amount)
        entries = connection.execute(
            text(
                "SELECT id, from_account, to_account, amount, balance_after_from, "
                "balance_after_to, stake_id FROM token_ledger ORDER BY id"
            )
        ).all()

    balance: dict[str, int] = defaultdict(int)
    earned: dict[str, int] = defaultdict(int)
    spent: dict[str, int] = defaultdict(int)
    staked: dict[str, int] = defaultdict(int)
    minted = burned = 0
    for entry_id, sender, receiver, stored_amount, after_from, after_to, stake_id in entries:
        amount = int(stored_amount)
        assert amount > 0, f"entry {entry_id} has amount {amount}"
        assert sender != receiver, f"entry {entry_id} moves tokens to its sender"
        if sender == SYSTEM:
            minted += amount
        if receiver == SYSTEM:
            burned += amount
        if receiver == ESCROW:  # stake: available -> staked
            assert owners[stake_id] == sender
            balance[sender] -= amount
            staked[sender] += amount
            expected = (balance[sender], None)
        elif sender == ESCROW:  # resolution: out of the owner's stake
            owner = owners[stake_id]
            staked[owner] -= amount
            if receiver == owner:
                balance[owner] += amount
            else:
                spent[owner] += amount
                if receiver != SYSTEM:
                    balance[receiver] += amount
                    earned[receiver] += amount
            expected = (None, None if receiver == SYSTEM else balance[receiver])
        else:
            if sender != SYSTEM:
                balance[sender] -= amount
                spent[sender] += amount
            if receiver != SYSTEM:
                balance[receiver] += amount
                earned[receiver] += amount
            expected = (
                None if sender == SYSTEM else balance[sender],
                None if receiver == SYSTEM else balance[receiver],
            )
        stored = (
            None if after_from is None else int(after_from),
            None if after_to is None else int(after_to),
        )
        assert stored == expected, f"entry {entry_id}: balances after {stored} != replay {expected}"
        for party in (sender, receiver):
            if party not in (SYSTEM, ESCROW):
                assert balance[party] >= 0, f"{party} negative after entry {entry_id}"

    for account_id, figures in accounts.items():
        replay = (
            balance[account_id],
            earned[account_id],
            spent[account_id],
            staked[account_id],
        )
        assert figures == replay, f"{account_id}: stored {figures} != replay {replay}"
        assert figures[0] >= 0, f"{account_id} has a negative balance"
        assert figures[3] == open_stakes[account_id], f"{account_id}: staked != open stakes"
    unknown = {p for p in balance if p not in accounts}
    assert not unknown, f"entries name accounts that do not exist: {unknown}"
    supply = sum(f[0] + f[3] for f in accounts.values())
    assert minted - burned == supply, f"minted {minted} - burned {burned} != supply {supply}"
    return {"minted": minted, "burned": burned, "supply": supply, "accounts": accounts}
