"""Workload functions for tests that run in threads or separate processes.

Kept in a module of their own so that spawned processes can import them.
"""

from __future__ import annotations

import json
import os
import random
import time
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


# -- fault injection (tests/test_faults.py) ---------------------------------------


def _log_event(fd: int, **event: object) -> None:
    """One JSON line in a single write(2) to an O_APPEND file: a line is whole or absent."""
    os.write(fd, (json.dumps(event) + "\n").encode())


def keyed_transfer_loop(
    url: str,
    accounts: list[str],
    log_path: str,
    prefix: str,
    seed: int,
    *,
    hold_after: int | None = None,
    stop_path: str | None = None,
    busy_timeout: float = 30.0,
    max_operations: int = 100_000,
) -> None:
    """Keyed transfers until stopped or killed, logging each call before and after it.

    Before a call: ``{"ev": "start", "key", "args"}``; after it returns:
    ``{"ev": "done", "key", "id"}``; a raised error: ``{"ev": "error", ...}``.
    With ``hold_after=n``, after ``n`` calls the worker opens
    ``ledger.transaction()``, makes two keyed transfers in it (``"held"``
    events), logs ``"holding"`` and sleeps there, holding its locks, until it
    is killed. With ``stop_path``, it returns once that file exists.
    """
    engine = create_engine(url, busy_timeout=busy_timeout)
    ledger = Ledger(engine)
    rng = random.Random(seed)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for number in range(max_operations):
            if stop_path is not None and os.path.exists(stop_path):
                break
            if hold_after is not None and number == hold_after:
                with ledger.transaction() as tx:
                    for sub in range(2):
                        key = f"{prefix}-{number}-held-{sub}"
                        args = _planned(rng, accounts)
                        _log_event(fd, ev="start", key=key, args=args, held=True)
                        entry = tx.transfer(*args, idempotency_key=key)
                        _log_event(fd, ev="held", key=key, id=entry.id)
                    _log_event(fd, ev="holding")
                    time.sleep(120)  # killed long before this ends
                _log_event(fd, ev="error", key="", kind="NotKilled", message="woke up")
                break
            key = f"{prefix}-{number}"
            args = _planned(rng, accounts)
            _log_event(fd, ev="start", key=key, args=args)
            try:
                entry = ledger.transfer(*args, idempotency_key=key)
            except Exception as exc:
                _log_event(fd, ev="error", key=key, kind=type(exc).__name__, message=str(exc))
            else:
                _log_event(fd, ev="done", key=key, id=entry.id)
        _log_event(fd, ev="stopped")
    finally:
        os.close(fd)
        engine.dispose()


def _planned(rng: random.Random, accounts: list[str]) -> list[str]:
    """Arguments of one transfer: small amounts against large balances, so none is refused."""
    sender, receiver = rng.sample(accounts, 2)
    return [sender, receiver, f"{rng.randint(1, 5_000_000) / 1_000_000:.6f}", "fault-stream"]
