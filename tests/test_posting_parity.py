"""The posting rule is written twice, and the two must give one answer.

PostgreSQL's one-entry server function (``sql/post_entry_v1.sql``) and the
Python ``Posting`` (``domain/postings.py``) decide the same question: does
an entry fit the figures of the accounts it touches? Here both are fed the
same figures at the boundaries (the exact balance, an overdraft by one base
unit, the storable maximum, a stake's last unit) and at random near them,
and must agree on accepting or refusing, and on the balances after. The
digests are written twice too (SQL on PostgreSQL, Python on SQLite and in
``verify``): both must give one answer on any text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, text

from tokenledger import InternalError, Ledger, LedgerError
from tokenledger.domain.amounts import MAX_UNITS
from tokenledger.domain.books import Balances
from tokenledger.domain.constants import SYSTEM_ACCOUNT
from tokenledger.domain.hashing import entry_digest, stake_digest
from tokenledger.domain.postings import Draft, Posting
from tokenledger.storage.posting.postgres import POST_ENTRY_FUNCTION, POST_ENTRY_SQL, function_sql

pytestmark = pytest.mark.postgresql

A, B = "parity-a", "parity-b"


@dataclass(frozen=True)
class Case:
    sender: str
    receiver: str
    amount: int
    figures: dict[str, Balances]


def python_rule(case: Case) -> tuple[int | None, int | None] | None:
    """The Python answer: the balances after, or None when refused."""
    posting = Posting({k: Balances(*vars_of(v)) for k, v in case.figures.items()}, _NOW)
    try:
        row = posting.add(Draft(case.sender, case.receiver, case.amount, "parity"))
    except LedgerError:
        return None
    return row["balance_after_from"], row["balance_after_to"]


def server_rule(connection: Connection, case: Case) -> tuple[int | None, int | None] | None:
    """The server function's answer on the same figures, in a transaction rolled back after."""
    transaction = connection.begin()
    try:
        for account_id, b in case.figures.items():
            connection.execute(
                text(
                    "INSERT INTO token_accounts (account_id, balance, total_earned, total_spent, "
                    "total_staked, created_at, updated_at) "
                    "VALUES (:id, :b, :e, :s, :k, now(), now())"
                ),
                {
                    "id": account_id,
                    "b": b.balance,
                    "e": b.total_earned,
                    "s": b.total_spent,
                    "k": b.total_staked,
                },
            )
        entry_id, after_from, after_to = connection.execute(
            text(
                f"SELECT entry_id, after_from, after_to FROM {POST_ENTRY_FUNCTION}("
                ":s, :r, :a, 'parity', NULL, NULL, NULL, NULL)"
            ),
            {"s": case.sender, "r": case.receiver, "a": case.amount},
        ).one()
    finally:
        transaction.rollback()
    return None if entry_id is None else (after_from, after_to)


def vars_of(b: Balances) -> tuple[int, int, int, int]:
    return b.balance, b.total_earned, b.total_spent, b.total_staked


_NOW = datetime(2026, 1, 1, tzinfo=UTC)


def fig(balance: int, earned: int = 0, spent: int = 0, staked: int = 0) -> Balances:
    return Balances(balance, earned, spent, staked)


BOUNDARIES = [
    ("the exact balance", Case(A, B, 7, {A: fig(7, 7), B: fig(0)}), True),
    ("an overdraft by one unit", Case(A, B, 8, {A: fig(7, 7), B: fig(0)}), False),
    (
        "the receiver reaches the maximum",
        Case(A, B, 5, {A: fig(5, 5), B: fig(MAX_UNITS - 5)}),
        True,
    ),
    (
        "the receiver passes the maximum by one",
        Case(A, B, 5, {A: fig(5, 5), B: fig(MAX_UNITS - 4)}),
        False,
    ),
    (
        "earned passes the maximum",
        Case(A, B, 5, {A: fig(5, 5), B: fig(0, MAX_UNITS - 4, MAX_UNITS - 4)}),
        False,
    ),
    (
        "spent reaches the maximum",
        Case(A, B, 5, {A: fig(5, MAX_UNITS, MAX_UNITS - 5, 0), B: fig(0)}),
        True,
    ),
    (
        "spent passes the maximum",
        Case(A, B, 5, {A: fig(5, MAX_UNITS, MAX_UNITS - 4, 0), B: fig(0)}),
        False,
    ),
    ("a stake's last unit stays locked", Case(A, B, 6, {A: fig(5, 15, 0, 10), B: fig(0)}), False),
    ("all but the stake can move", Case(A, B, 5, {A: fig(5, 15, 0, 10), B: fig(0)}), True),
    ("a mint to the maximum", Case(SYSTEM_ACCOUNT, B, MAX_UNITS, {B: fig(0)}), True),
    ("a mint past the maximum", Case(SYSTEM_ACCOUNT, B, 1, {B: fig(MAX_UNITS)}), False),
    ("a burn of everything", Case(A, SYSTEM_ACCOUNT, 9, {A: fig(9, 9)}), True),
    ("a burn of one unit more", Case(A, SYSTEM_ACCOUNT, 10, {A: fig(9, 9)}), False),
    ("an unknown receiver", Case(A, B, 1, {A: fig(9, 9)}), False),
    ("an unknown sender", Case(A, B, 1, {B: fig(0)}), False),
]


@pytest.fixture
def connection(pg_engine: Engine) -> Iterator[Connection]:
    with pg_engine.connect() as connection:
        yield connection


@pytest.mark.parametrize(("name", "case", "accepted"), BOUNDARIES, ids=[b[0] for b in BOUNDARIES])
def test_both_rules_give_one_answer_at_the_boundaries(
    connection: Connection, name: str, case: Case, accepted: bool
) -> None:
    python, server = python_rule(case), server_rule(connection, case)
    assert (python is not None) is accepted, name
    assert server == python, name


def _near(limit: int) -> st.SearchStrategy[int]:
    """Values at and around the interesting ones: 0, a few units, the maximum."""
    return st.one_of(
        st.integers(0, 20),
        st.integers(limit - 20, limit),
        st.integers(0, limit),
    )


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["transfer", "mint", "burn"]))
    sender = SYSTEM_ACCOUNT if kind == "mint" else A
    receiver = SYSTEM_ACCOUNT if kind == "burn" else B
    amount = draw(_near(MAX_UNITS).filter(lambda n: n > 0))
    figures = {}
    for account_id in {sender, receiver} - {SYSTEM_ACCOUNT}:
        figures[account_id] = Balances(*(draw(_near(MAX_UNITS)) for _ in range(4)))
    return Case(sender, receiver, amount, figures)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=cases())
def test_both_rules_agree_near_the_limits(connection: Connection, case: Case) -> None:
    assert server_rule(connection, case) == python_rule(case)


def test_a_disagreement_is_raised_loudly_and_writes_nothing(pg_engine: Engine) -> None:
    """If the server refused what the Python rule accepts, that is a bug, not a retry."""
    ledger = Ledger(pg_engine)
    ledger.create_account(A, 10)
    ledger.create_account(B, 0)
    refuse_everything = f"""
        CREATE OR REPLACE FUNCTION {POST_ENTRY_FUNCTION}(
            p_sender varchar, p_receiver varchar, p_amount bigint, p_reason varchar,
            p_reference_type varchar, p_reference_id varchar, p_memo text, p_key varchar,
            OUT entry_id bigint, OUT entry_time timestamptz, OUT after_from bigint,
            OUT after_to bigint, OUT prior_id bigint, OUT locked json
        ) LANGUAGE sql AS $$
            SELECT NULL::bigint, NULL::timestamptz, NULL::bigint, NULL::bigint, NULL::bigint,
                json_agg(json_build_array(account_id, balance, total_earned, total_spent,
                    total_staked, updated_at))
            FROM token_accounts WHERE account_id IN (p_sender, p_receiver)
        $$
    """
    with pg_engine.begin() as connection:
        connection.execute(text(refuse_everything))
    try:
        with pytest.raises(InternalError, match="disagree"):
            ledger.transfer(A, B, 1, "fits easily")
    finally:
        with pg_engine.begin() as connection:
            connection.exec_driver_sql(function_sql(POST_ENTRY_SQL))
    assert (ledger.get_balance(A), ledger.get_balance(B)) == (10, 0)
    assert ledger.transfer(A, B, 1, "fits easily").amount == 1  # the real function is back


# -- the digests: one encoding, computed in SQL and in Python -------------------------

_texts = st.text(
    alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=40
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    texts=st.tuples(*(st.none() | _texts for _ in range(5))),
    numbers=st.tuples(*(st.none() | st.integers(0, MAX_UNITS) for _ in range(4))),
    micros=st.integers(0, 10**12),
)
def test_the_server_and_python_compute_one_digest(
    connection: Connection,
    texts: tuple[str | None, ...],
    numbers: tuple[int | None, ...],
    micros: int,
) -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    reason, reference_type, reference_id, memo, key = texts
    after_from, after_to, stake_id, reverses = numbers
    entry = {
        "id": 7,
        "timestamp": moment,
        "from_account": "alice ☃ 'x'",
        "to_account": 'b"ob\\',
        "amount": 5,
        "reason": reason or "r",
        "reference_type": reference_type,
        "reference_id": reference_id,
        "memo": memo,
        "balance_after_from": after_from,
        "balance_after_to": after_to,
        "idempotency_key": key,
        "stake_id": stake_id,
        "reverses_entry_id": reverses,
        "writer_txid": micros,
    }
    arguments = (
        "(:id, :timestamp, :from_account, :to_account, :amount, :reason, :reference_type, "
        ":reference_id, :memo, :balance_after_from, :balance_after_to, :idempotency_key, "
        ":stake_id, :reverses_entry_id, :writer_txid)"
    )
    # Both server functions of encoding 2: the one that calls helpers, the flat one.
    server, flat = connection.execute(
        text(
            f"SELECT tokenledger_entry_digest_v2{arguments}, "
            f"tokenledger_entry_digest_v2_flat{arguments}"
        ),
        entry,
    ).one()
    assert server == flat == entry_digest(entry)
    stake = {
        "id": 3,
        "account_id": entry["from_account"],
        "amount": 9,
        "status": "open",
        "reason": entry["reason"],
        "reference_type": reference_type,
        "reference_id": reference_id,
        "memo": memo,
        "expires_at": None if key is None else moment,
        "created_at": moment,
        "closed_at": None,
    }
    server_stake = connection.execute(
        text(
            "SELECT tokenledger_stake_digest_v1(:id, :account_id, :amount, :status, :reason, "
            ":reference_type, :reference_id, :memo, :expires_at, :created_at, :closed_at)"
        ),
        stake,
    ).scalar_one()
    assert server_stake == stake_digest(stake)
