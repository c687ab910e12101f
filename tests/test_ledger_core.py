"""Accounts, transfers, mints, burns and reads, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum

import pytest
from sqlalchemy import Engine, text

from auditor import audit
from tokenledger import (
    DECIMALS,
    SYSTEM_ACCOUNT,
    AccountNotFound,
    InsufficientFunds,
    InvalidAmount,
    Ledger,
)

D = Decimal


def test_create_account_mints_the_initial_balance_as_an_entry(
    ledger: Ledger, engine: Engine
) -> None:
    account = ledger.create_account("alice")
    assert account.account_id == "alice"
    assert account.balance == D("1000")
    assert account.total_earned == D("1000")
    assert (account.total_spent, account.total_staked) == (D(0), D(0))
    assert account.created_at.tzinfo is not None
    assert ledger.get_account("alice") == account

    (entry,) = ledger.get_statement("alice")
    assert (entry.from_account, entry.to_account) == (SYSTEM_ACCOUNT, "alice")
    assert entry.amount == D("1000")
    assert entry.reason == "initial_balance"
    assert (entry.balance_after_from, entry.balance_after_to) == (None, D("1000"))
    assert ledger.get_total_supply() == D("1000")
    audit(engine)


def test_zero_initial_balance_writes_no_entry(ledger: Ledger) -> None:
    account = ledger.create_account("bob", 0)
    assert account.balance == D(0)
    assert ledger.get_statement("bob") == []
    assert ledger.get_total_supply() == D(0)


def test_transfer_moves_exact_amounts_and_records_balances_after(
    ledger: Ledger, engine: Engine
) -> None:
    ledger.create_account("alice", "100")
    ledger.create_account("bob", 0)
    entry = ledger.transfer(
        "alice", "bob", "12.345678", "debate_round", "debate", "d-17", "round 3"
    )
    assert entry.amount == D("12.345678")
    assert (entry.from_account, entry.to_account) == ("alice", "bob")
    assert (entry.reason, entry.reference_type, entry.reference_id, entry.memo) == (
        "debate_round",
        "debate",
        "d-17",
        "round 3",
    )
    assert entry.balance_after_from == D("87.654322")
    assert entry.balance_after_to == D("12.345678")
    assert entry.timestamp.utcoffset() == timedelta(0)

    alice, bob = ledger.get_account("alice"), ledger.get_account("bob")
    assert (alice.balance, alice.total_earned, alice.total_spent) == (
        D("87.654322"),
        D(100),
        D("12.345678"),
    )
    assert (bob.balance, bob.total_earned, bob.total_spent) == (D("12.345678"), D("12.345678"), 0)
    assert ledger.get_total_supply() == D(100)
    assert ledger.get_entry(entry.id) == entry
    audit(engine)


def test_floats_are_taken_by_their_shortest_repr(ledger: Ledger) -> None:
    ledger.create_account("alice", 0)
    ledger.mint("alice", 0.1, "reward")
    ledger.mint("alice", 0.2, "reward")
    assert ledger.get_balance("alice") == D("0.3")  # not 0.30000000000000004


def test_results_are_decimals_with_six_places(ledger: Ledger) -> None:
    ledger.create_account("alice", 1)
    balance = ledger.get_balance("alice")
    assert isinstance(balance, Decimal)
    assert balance.as_tuple().exponent == -DECIMALS
    assert str(ledger.get_total_supply()) == "1.000000"


def test_a_trillion_tokens_fit_in_one_account(ledger: Ledger, engine: Engine) -> None:
    ledger.create_account("whale", 10**12)
    ledger.create_account("minnow", 0)
    ledger.transfer("whale", "minnow", "0.000001", "dust")
    assert ledger.get_balance("whale") == D("999999999999.999999")
    assert ledger.get_total_supply() == D(10**12)
    audit(engine)


def test_overflowing_a_balance_is_refused(ledger: Ledger, snapshot) -> None:  # type: ignore[no-untyped-def]
    ledger.create_account("whale", "9223372036854.775807")
    before = snapshot()
    with pytest.raises(InvalidAmount, match="storable maximum"):
        ledger.mint("whale", "0.000001", "too much")
    assert snapshot() == before


def test_supply_is_exact_past_the_64_bit_sum(ledger: Ledger, engine: Engine) -> None:
    big = "9000000000000"
    for name in ("a", "b", "c"):
        ledger.create_account(name, big)
    assert ledger.get_total_supply() == D(big) * 3  # 2.7e19 base units > 2**63
    audit(engine)


def test_mint_and_burn_change_the_supply(ledger: Ledger, engine: Engine) -> None:
    ledger.create_account("alice", 10)
    mint = ledger.mint("alice", "5.5", "hypothesis_reward", "hypothesis", "h-1")
    assert (mint.from_account, mint.to_account) == (SYSTEM_ACCOUNT, "alice")
    assert (mint.balance_after_from, mint.balance_after_to) == (None, D("15.5"))
    burn = ledger.burn("alice", "0.5", "listing_fee")
    assert (burn.from_account, burn.to_account) == ("alice", SYSTEM_ACCOUNT)
    assert (burn.balance_after_from, burn.balance_after_to) == (D(15), None)
    assert ledger.get_total_supply() == D(15)
    account = ledger.get_account("alice")
    assert (account.total_earned, account.total_spent) == (D("15.5"), D("0.5"))
    audit(engine)


def test_overdraft_is_refused_and_names_the_figures(ledger: Ledger, snapshot) -> None:  # type: ignore[no-untyped-def]
    ledger.create_account("alice", 5)
    ledger.create_account("bob", 0)
    before = snapshot()
    with pytest.raises(InsufficientFunds) as caught:
        ledger.transfer("alice", "bob", "5.000001", "too much")
    assert caught.value.account_id == "alice"
    assert caught.value.available == D(5)
    assert caught.value.requested == D("5.000001")
    with pytest.raises(InsufficientFunds):
        ledger.burn("bob", 1, "nothing to burn")
    assert snapshot() == before
    ledger.transfer("alice", "bob", 5, "exactly all")  # the whole balance can go
    assert ledger.get_balance("alice") == D(0)


def test_statement_is_newest_first_with_since_and_limit(ledger: Ledger) -> None:
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 100)
    ledger.create_account("carol", 100)
    ids = [ledger.transfer("alice", "bob", 1, f"t{i}").id for i in range(3)]
    ledger.transfer("carol", "bob", 2, "other")  # not alice's
    ids.append(ledger.transfer("bob", "alice", 3, "back").id)

    statement = ledger.get_statement("alice")
    assert [e.id for e in statement][:4] == list(reversed(ids))
    assert statement[-1].reason == "initial_balance"
    assert len(statement) == 5
    assert [e.id for e in ledger.get_statement("alice", limit=2)] == [ids[3], ids[2]]

    cut = ledger.get_entry(ids[1]).timestamp
    since = ledger.get_statement("alice", since=cut)
    assert [e.id for e in since] == [ids[3], ids[2], ids[1]]
    assert ledger.get_statement("alice", since=cut.isoformat()) == since
    assert ledger.get_statement("alice", since=datetime(2999, 1, 1, tzinfo=UTC)) == []
    bob = ledger.get_statement("bob")
    assert len(bob) == 6
    assert all("bob" in (e.from_account, e.to_account) for e in bob)


def test_naive_since_is_read_as_utc(ledger: Ledger) -> None:
    ledger.create_account("alice", 1)
    (entry,) = ledger.get_statement("alice")
    naive = entry.timestamp.replace(tzinfo=None)
    assert ledger.get_statement("alice", since=naive) == [entry]
    assert ledger.get_statement("alice", since=naive + timedelta(microseconds=1)) == []


def test_balance_as_of_a_moment(ledger: Ledger) -> None:
    ledger.create_account("alice", 10)
    ledger.create_account("bob", 0)
    first = ledger.transfer("alice", "bob", 1, "a")
    second = ledger.transfer("alice", "bob", 2, "b")
    ledger.transfer("bob", "alice", 3, "c")
    created = ledger.get_account("alice").created_at
    assert ledger.get_balance("alice", as_of=created - timedelta(seconds=1)) == D(0)
    assert ledger.get_balance("alice", as_of=first.timestamp) == D(9)
    assert ledger.get_balance("bob", as_of=second.timestamp.isoformat()) == D(3)
    assert ledger.get_balance("alice", as_of=datetime.now(UTC) + timedelta(days=1)) == D(10)
    assert ledger.get_balance("bob", as_of=second.timestamp) == D(3)


def test_reading_unknown_accounts_raises_account_not_found(ledger: Ledger) -> None:
    for read in (ledger.get_account, ledger.get_balance, ledger.get_statement):
        with pytest.raises(AccountNotFound):
            read("nobody")
    with pytest.raises(AccountNotFound):
        ledger.get_balance(SYSTEM_ACCOUNT)  # system has no account row


def test_account_ids_are_stored_verbatim(ledger: Ledger, engine: Engine) -> None:
    ids = [" padded ", "ÜñïçødÉ-агент-🤖", "a/../b", "x" * 255, "DROP TABLE token_ledger;--"]
    for account_id in ids:
        ledger.create_account(account_id, 1)
    for account_id in ids:
        assert ledger.get_account(account_id).account_id == account_id
    with engine.connect() as connection:
        stored = set(connection.execute(text("SELECT account_id FROM token_accounts")).scalars())
    assert stored == set(ids)
    audit(engine)


class Agent(str, Enum):  # noqa: UP042 - not StrEnum, whose str() is its value
    CAROL = "carol"


def test_str_subclasses_are_stored_by_their_value(ledger: Ledger, engine: Engine) -> None:
    account = ledger.create_account(Agent.CAROL, 5)
    ledger.create_account("dave", 0)
    entry = ledger.transfer(Agent.CAROL, "dave", 1, Agent.CAROL)
    assert (account.account_id, entry.from_account, entry.reason) == ("carol",) * 3
    assert all(type(text) is str for text in (account.account_id, entry.from_account, entry.reason))
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT from_account, reason FROM token_ledger WHERE id = :i"), {"i": entry.id}
        ).one()
    assert tuple(stored) == ("carol", "carol")
    assert ledger.get_balance("carol") == Decimal(4)
    audit(engine)


def test_list_entries_pages_through_the_whole_journal(ledger: Ledger) -> None:
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    for i in range(7):
        ledger.transfer("alice", "bob", 1, f"t{i}")
    seen: list[int] = []
    before = None
    while True:
        page = ledger.list_entries(before=before, limit=3)
        if not page:
            break
        seen.extend(e.id for e in page)
        before = page[-1].id
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) == 8
