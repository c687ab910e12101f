"""Workload functions for tests that run in threads or separate processes.

Kept in a module of their own so that spawned processes can import them.
"""

from __future__ import annotations

import random
from collections import Counter

from tokenledger import InsufficientFunds, Ledger
from tokenledger.storage import create_engine


def random_transfers(
    ledger: Ledger, accounts: list[str], operations: int, seed: int, *, hot: bool = False
) -> Counter[str]:
    """Random transfers (some overdrafts), a few mints and burns; counts outcomes by type."""
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    for _ in range(operations):
        sender, receiver = rng.sample(accounts[:2] if hot else accounts, 2)
        # Up to 60 tokens against balances of about 100: many overdrafts.
        amount = f"{rng.randint(1, 60_000_000) / 1_000_000:.6f}"
        roll = rng.random()
        try:
            if roll < 0.05:
                ledger.mint(receiver, amount, "reward")
            elif roll < 0.10:
                ledger.burn(sender, amount, "fee")
            else:
                ledger.transfer(sender, receiver, amount, "trade")
            outcomes["ok"] += 1
        except InsufficientFunds:
            outcomes["InsufficientFunds"] += 1
        except Exception as exc:
            outcomes[f"{type(exc).__name__}: {exc}"] += 1
    return outcomes


def process_worker(
    url: str, accounts: list[str], operations: int, seed: int, hot: bool
) -> Counter[str]:
    """One OS process with its own engine and connection pool."""
    engine = create_engine(url)
    try:
        return random_transfers(Ledger(engine), accounts, operations, seed, hot=hot)
    finally:
        engine.dispose()
