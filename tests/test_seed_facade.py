"""tokenledger.token_ledger: the seed's functions by their seed names, on a default ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tokenledger import AccountNotFound, InsufficientFunds, LedgerEntry, token_ledger


@pytest.fixture
def configured(engine: Engine) -> Iterator[None]:
    token_ledger.configure(engine)
    yield
    token_ledger.reset()


@pytest.mark.usefixtures("configured")
def test_the_seed_functions_work_on_the_configured_database(engine: Engine) -> None:
    alice = token_ledger.create_account("alice")
    token_ledger.create_account("bob", 0)
    assert alice.balance == Decimal(1000)
    entry = token_ledger.transfer("alice", "bob", "2.5", "debate_reward", "debate", "d-1", "memo")
    assert isinstance(entry, LedgerEntry)
    assert (entry.reference_type, entry.reference_id, entry.memo) == ("debate", "d-1", "memo")
    token_ledger.mint("bob", 1, "hypothesis_reward", idempotency_key="h-1")
    token_ledger.mint("bob", 1, "hypothesis_reward", idempotency_key="h-1")  # written once
    token_ledger.burn("bob", "0.5", "fee")
    assert token_ledger.get_balance("bob") == Decimal(3)
    assert token_ledger.get_balance("bob", as_of=entry.timestamp) == Decimal("2.5")
    assert [e.reason for e in token_ledger.get_statement("bob")] == [
        "fee",
        "hypothesis_reward",
        "debate_reward",
    ]
    assert len(token_ledger.get_statement("bob", limit=1)) == 1
    assert token_ledger.get_total_supply() == Decimal("1000.5")
    assert token_ledger.get_ledger().engine is engine
    with pytest.raises(InsufficientFunds):
        token_ledger.transfer("bob", "alice", 100, "too much")
    with pytest.raises(AccountNotFound):
        token_ledger.get_balance("nobody")


def test_importing_opens_nothing_and_the_default_comes_from_the_environment(
    tmp_path: Path,
) -> None:
    """Unconfigured, the module opens $TOKENLEDGER_DATABASE_URL on first use (a real process)."""
    database = tmp_path / "seed.db"
    script = (
        "import tokenledger.token_ledger as t\n"
        "assert t._default == []\n"  # nothing opened at import time
        "t.create_account('alice', 5)\n"
        "print(t.get_balance('alice'), t.get_ledger().engine.url.database)\n"
    )
    env = {**os.environ, "TOKENLEDGER_DATABASE_URL": f"sqlite:///{database}"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5.000000", str(database)]
    assert database.exists()  # created and migrated on first use
