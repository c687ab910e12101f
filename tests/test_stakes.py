"""Stakes: lock, settle (in part, to system), release (with a fee), expire; each exactly once."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from auditor import audit
from tokenledger import (
    ESCROW_ACCOUNT,
    SYSTEM_ACCOUNT,
    AccountNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidArgument,
    Ledger,
    LedgerError,
    Stake,
    StakeClosed,
    StakeExpired,
    StakeNotFound,
)
from tokenledger.service.stakes import EXPIRY_BATCH

D = Decimal
FUTURE = datetime(2099, 1, 1, tzinfo=UTC)


def wait_until_past(moment: datetime) -> None:
    """Sleep until the clock (this machine's, which both backends use here) passes ``moment``."""
    while (left := (moment - datetime.now(UTC)).total_seconds()) > -0.01:
        time.sleep(max(left, 0) + 0.02)


@pytest.fixture
def market(ledger: Ledger) -> Ledger:
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 50)
    ledger.create_account("treasury", 0)
    return ledger


def _figures(ledger: Ledger, account_id: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    a = ledger.get_account(account_id)
    return a.balance, a.total_staked, a.total_earned, a.total_spent


def test_stake_moves_available_tokens_into_escrow(market: Ledger, engine: Engine) -> None:
    stake = market.stake(
        "alice", "30.5", "bid", "artifact", "art-1", "first bid", expires_at=FUTURE
    )
    assert (stake.account_id, stake.amount, stake.status) == ("alice", D("30.5"), "open")
    assert (stake.reference_type, stake.reference_id, stake.memo) == (
        "artifact",
        "art-1",
        "first bid",
    )
    assert stake.expires_at == FUTURE
    assert stake.closed_at is None
    assert market.get_balance("alice") == D("69.5")
    assert _figures(market, "alice") == (D("69.5"), D("30.5"), D(100), D(0))
    assert market.get_total_supply() == D(150)  # locked, not gone

    entry = market.get_statement("alice")[0]
    assert (entry.from_account, entry.to_account, entry.stake_id) == (
        "alice",
        ESCROW_ACCOUNT,
        stake.id,
    )
    assert (entry.balance_after_from, entry.balance_after_to) == (D("69.5"), None)
    assert market.get_stake(stake.id) == stake
    assert market.get_stakes("alice") == [stake]
    audit(engine)


def test_stakes_page_by_cursor_to_the_end(market: Ledger) -> None:
    made = [market.stake("alice", 1, f"bid {i}") for i in range(7)]
    for stake in made[1::3]:
        market.release(stake.id, "withdrawn")
    still_open = [s.id for s in made if s.id not in {m.id for m in made[1::3]}]

    for open_only, expected in ((True, still_open), (False, [s.id for s in made])):
        seen: list[int] = []
        after = None
        while True:
            page = market.get_stakes("alice", open_only, after=after, limit=2)
            seen += [s.id for s in page]
            if len(page) < 2:
                break
            after = page[-1].id
        assert seen == expected  # nothing skipped, nothing repeated, oldest first
    assert market.get_stakes("alice", after=made[-1].id) == []
    assert market.get_stakes("bob", after=made[0].id) == []  # a cursor from another account


def test_full_settlement_pays_the_winner(market: Ledger, engine: Engine) -> None:
    stake = market.stake("alice", 40, "position", "market", "m-1")
    settled = market.settle(stake.id, "bob", "market_resolved")
    assert settled.status == "settled"
    assert settled.closed_at is not None
    assert _figures(market, "alice") == (D(60), D(0), D(100), D(40))
    assert _figures(market, "bob") == (D(90), D(0), D(90), D(0))
    payout = market.get_statement("bob")[0]
    assert (payout.from_account, payout.to_account, payout.amount) == (ESCROW_ACCOUNT, "bob", D(40))
    assert (payout.reference_type, payout.reference_id) == ("market", "m-1")
    assert market.get_stakes("alice") == []
    assert market.get_stakes("alice", open_only=False) == [settled]
    assert market.get_total_supply() == D(150)
    audit(engine)


def test_partial_settlement_returns_the_rest_to_the_owner(market: Ledger, engine: Engine) -> None:
    stake = market.stake("alice", 40, "position")
    market.settle(stake.id, "bob", "partial win", amount="15.25")
    assert _figures(market, "alice") == (D("84.75"), D(0), D(100), D("15.25"))
    assert market.get_balance("bob") == D("65.25")
    back = market.get_statement("alice")[0]
    assert (back.from_account, back.to_account, back.amount) == (
        ESCROW_ACCOUNT,
        "alice",
        D("24.75"),
    )
    assert back.balance_after_to == D("84.75")
    audit(engine)


def test_settling_to_system_slashes_by_burning(market: Ledger, engine: Engine) -> None:
    stake = market.stake("alice", 40, "position")
    market.settle(stake.id, SYSTEM_ACCOUNT, "slashed", amount=10)
    assert _figures(market, "alice") == (D(90), D(0), D(100), D(10))
    assert market.get_total_supply() == D(140)
    audit(engine)


def test_release_returns_the_stake_less_a_burned_fee(market: Ledger, engine: Engine) -> None:
    stake = market.stake("alice", 40, "bid")
    released = market.release(stake.id, "cancelled", fee="0.5")
    assert released.status == "released"
    assert _figures(market, "alice") == (D("99.5"), D(0), D(100), D("0.5"))
    assert market.get_total_supply() == D("149.5")
    audit(engine)


def test_release_fee_can_be_paid_to_an_account(market: Ledger, engine: Engine) -> None:
    stake = market.stake("alice", 40, "bid")
    market.release(stake.id, "cancelled", fee=2, fee_account="treasury")
    assert market.get_balance("treasury") == D(2)
    assert market.get_balance("alice") == D(98)
    assert market.get_total_supply() == D(150)
    no_fee = market.stake("bob", 10, "bid")
    market.release(no_fee.id, "cancelled")
    assert _figures(market, "bob") == (D(50), D(0), D(50), D(0))
    audit(engine)


def test_expire_releases_only_stakes_past_their_expiry(market: Ledger, engine: Engine) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)
    due = market.stake("alice", 10, "bid", expires_at=soon)
    later = market.stake("alice", 20, "bid", expires_at=FUTURE)
    never = market.stake("bob", 5, "bid")
    assert market.expire_stakes() == 0  # nothing is due yet
    wait_until_past(soon)
    # A moment before the expiry expires nothing, one after it the due stake.
    assert market.expire_stakes(now=soon - timedelta(seconds=1)) == 0
    assert market.expire_stakes(now=soon + timedelta(milliseconds=1)) == 1
    assert market.get_stake(due.id).status == "expired"
    assert market.get_stake(later.id).status == "open"
    assert market.get_stake(never.id).status == "open"
    assert _figures(market, "alice") == (D(80), D(20), D(100), D(0))
    # A caller's clock cannot expire a stake early: the ledger's clock decides.
    assert market.expire_stakes(now=FUTURE + timedelta(days=1)) == 0
    assert market.get_stake(later.id).status == "open"
    assert market.expire_stakes() == 0
    audit(engine)


def test_expire_handles_more_stakes_than_one_batch(market: Ledger, engine: Engine) -> None:
    market.mint("alice", 1000, "more")
    # Far enough ahead that a slow machine still stakes them all before it passes.
    soon = datetime.now(UTC) + timedelta(seconds=4)
    for _ in range(EXPIRY_BATCH + 3):
        market.stake("alice", 1, "bid", expires_at=soon)
    wait_until_past(soon)
    assert market.expire_stakes() == EXPIRY_BATCH + 3
    assert market.get_account("alice").total_staked == 0
    audit(engine)


def test_an_expired_stake_cannot_be_settled_but_can_be_released(
    market: Ledger, engine: Engine, snapshot: Callable[[], object]
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)
    first = market.stake("alice", 10, "bid", expires_at=soon)
    second = market.stake("alice", 5, "bid", expires_at=soon)
    wait_until_past(soon)
    before = snapshot()
    for settle in (
        lambda: market.settle(first.id, "bob", "won"),
        lambda: market.settle(first.id, SYSTEM_ACCOUNT, "slash", amount=1),
    ):
        with pytest.raises(StakeExpired) as refused:
            settle()
        assert isinstance(refused.value, StakeClosed)
        assert refused.value.stake_id == first.id
    assert snapshot() == before  # refused before anything was written
    released = market.release(first.id, "cancelled", fee=1)
    assert (released.status, market.get_balance("alice")) == ("released", D(94))
    assert market.expire_stakes() == 1  # the other one
    assert market.get_stake(second.id).status == "expired"
    assert _figures(market, "alice") == (D(99), D(0), D(100), D(1))
    audit(engine)


def test_a_keyed_stake_retried_after_its_expiry_returns_the_original(
    market: Ledger, snapshot: Callable[[], object]
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)
    first = market.stake("alice", 5, "bid", expires_at=soon, idempotency_key="short")
    wait_until_past(soon)
    before = snapshot()
    assert market.stake("alice", 5, "bid", expires_at=soon, idempotency_key="short") == first
    assert snapshot() == before
    with pytest.raises(IdempotencyConflict):
        market.stake("alice", 6, "bid", expires_at=soon, idempotency_key="short")
    # An unkeyed stake with that expiry is refused: it is in the past.
    with pytest.raises(InvalidArgument):
        market.stake("alice", 5, "bid", expires_at=soon)
    assert snapshot() == before


def test_stake_idempotency(market: Ledger, snapshot: Callable[[], object]) -> None:
    first = market.stake("alice", 5, "bid", "artifact", "a", expires_at=FUTURE, idempotency_key="s")
    after = snapshot()
    assert (
        market.stake("alice", 5, "bid", "artifact", "a", expires_at=FUTURE, idempotency_key="s")
        == first
    )
    assert snapshot() == after
    for changed in (
        lambda: market.stake(
            "alice", 6, "bid", "artifact", "a", expires_at=FUTURE, idempotency_key="s"
        ),
        lambda: market.stake("alice", 5, "bid", "artifact", "a", idempotency_key="s"),
        lambda: market.stake(
            "bob", 5, "bid", "artifact", "a", expires_at=FUTURE, idempotency_key="s"
        ),
        lambda: market.transfer("alice", "bob", 5, "bid", idempotency_key="s"),
    ):
        with pytest.raises(IdempotencyConflict):
            changed()
    assert snapshot() == after
    # The repeat reports the stake as it is now, even once resolved.
    market.settle(first.id, "bob", "won")
    again = market.stake("alice", 5, "bid", "artifact", "a", expires_at=FUTURE, idempotency_key="s")
    assert again.id == first.id
    assert again.status == "settled"


BAD_CALLS: list[tuple[str, Callable[[Ledger, Stake, Stake], object], type[LedgerError]]] = [
    (
        "stake more than available",
        lambda lg, s, c: lg.stake("alice", "90.000001", "x"),
        InsufficientFunds,
    ),
    ("stake zero", lambda lg, s, c: lg.stake("alice", 0, "x"), InvalidAmount),
    ("stake negative", lambda lg, s, c: lg.stake("alice", -1, "x"), InvalidAmount),
    ("stake from system", lambda lg, s, c: lg.stake("system", 1, "x"), InvalidArgument),
    ("stake from escrow", lambda lg, s, c: lg.stake(ESCROW_ACCOUNT, 1, "x"), InvalidArgument),
    ("stake unknown account", lambda lg, s, c: lg.stake("nobody", 1, "x"), AccountNotFound),
    (
        "stake past expiry",
        lambda lg, s, c: lg.stake("alice", 1, "x", expires_at="2001-01-01T00:00:00Z"),
        InvalidArgument,
    ),
    (
        "stake bad expiry",
        lambda lg, s, c: lg.stake("alice", 1, "x", expires_at="soon"),
        InvalidArgument,
    ),
    ("stake blank reason", lambda lg, s, c: lg.stake("alice", 1, " "), InvalidArgument),
    (
        "settle more than staked",
        lambda lg, s, c: lg.settle(s.id, "bob", "x", amount="10.000001"),
        InvalidAmount,
    ),
    ("settle zero", lambda lg, s, c: lg.settle(s.id, "bob", "x", amount=0), InvalidAmount),
    ("settle closed stake", lambda lg, s, c: lg.settle(c.id, "bob", "x"), StakeClosed),
    ("release closed stake", lambda lg, s, c: lg.release(c.id, "x"), StakeClosed),
    ("settle unknown stake", lambda lg, s, c: lg.settle(999_999, "bob", "x"), StakeNotFound),
    ("release unknown stake", lambda lg, s, c: lg.release(999_999, "x"), StakeNotFound),
    ("get unknown stake", lambda lg, s, c: lg.get_stake(999_999), StakeNotFound),
    ("settle to unknown account", lambda lg, s, c: lg.settle(s.id, "nobody", "x"), AccountNotFound),
    ("settle to escrow", lambda lg, s, c: lg.settle(s.id, ESCROW_ACCOUNT, "x"), InvalidArgument),
    ("settle bad stake id", lambda lg, s, c: lg.settle("1", "bob", "x"), StakeNotFound),  # type: ignore[arg-type]
    ("settle stake id 0", lambda lg, s, c: lg.settle(0, "bob", "x"), StakeNotFound),
    ("negative fee", lambda lg, s, c: lg.release(s.id, "x", fee=-1), InvalidAmount),
    (
        "fee larger than stake",
        lambda lg, s, c: lg.release(s.id, "x", fee="10.000001"),
        InvalidAmount,
    ),
    (
        "fee account without fee",
        lambda lg, s, c: lg.release(s.id, "x", fee_account="bob"),
        InvalidArgument,
    ),
    (
        "fee to unknown account",
        lambda lg, s, c: lg.release(s.id, "x", fee=1, fee_account="nobody"),
        AccountNotFound,
    ),
    (
        "fee to system by name",
        lambda lg, s, c: lg.release(s.id, "x", fee=1, fee_account="system"),
        InvalidArgument,
    ),
    ("stakes of unknown account", lambda lg, s, c: lg.get_stakes("nobody"), AccountNotFound),
    (
        "stakes after an unknown stake",
        lambda lg, s, c: lg.get_stakes("alice", after=999),
        StakeNotFound,
    ),
    ("stakes after a non-id", lambda lg, s, c: lg.get_stakes("alice", after="1"), InvalidArgument),
    ("stakes after zero", lambda lg, s, c: lg.get_stakes("alice", after=0), InvalidArgument),
    ("stakes with limit 0", lambda lg, s, c: lg.get_stakes("alice", limit=0), InvalidArgument),
    ("bad expire time", lambda lg, s, c: lg.expire_stakes(now="whenever"), InvalidArgument),
    (
        "reverse a stake entry",
        lambda lg, s, c: lg.reverse(lg.get_statement("alice")[0].id, "x"),
        InvalidArgument,
    ),
]


@pytest.mark.parametrize(("call", "error"), [pytest.param(c, e, id=n) for n, c, e in BAD_CALLS])
def test_bad_stake_calls_raise_and_write_nothing(
    market: Ledger,
    snapshot: Callable[[], object],
    call: Callable[[Ledger, Stake, Stake], object],
    error: type[LedgerError],
) -> None:
    closed = market.stake("bob", 5, "old")
    market.release(closed.id, "done")
    open_stake = market.stake("alice", 10, "bid")
    before = snapshot()
    with pytest.raises(error):
        call(market, open_stake, closed)
    assert snapshot() == before


@pytest.mark.postgresql
def test_one_stake_resolves_exactly_once_under_racing_calls(pg_engine: Engine) -> None:
    """Four resolutions race for one stake, 20 times: exactly one wins each race.

    Half the stakes are still open (settle, slash and release race; expiry
    finds nothing), half are past their expiry (release and expiry race;
    settling is refused as expired).
    """
    engine = pg_engine
    ledger = Ledger(engine)
    ledger.create_account("alice", 1000)
    ledger.create_account("bob", 0)
    soon = datetime.now(UTC) + timedelta(seconds=2)
    open_stakes = [ledger.stake("alice", 10, "bid", expires_at=FUTURE) for _ in range(10)]
    # A millisecond apart, so that each race can expire its own stake and no later one.
    due_stakes = [
        ledger.stake("alice", 10, "bid", expires_at=soon + timedelta(milliseconds=i))
        for i in range(10)
    ]
    wait_until_past(due_stakes[-1].expires_at or soon)
    for stake in [s for pair in zip(open_stakes, due_stakes, strict=True) for s in pair]:
        barrier = threading.Barrier(4)
        resolved: list[str] = []  # one item per call that resolved the stake
        closed: list[str] = []
        due_by = stake.expires_at if stake.expires_at != FUTURE else soon - timedelta(days=1)

        def race(
            name: str,
            action: Callable[[], object],
            barrier: threading.Barrier = barrier,
            resolved: list[str] = resolved,
            closed: list[str] = closed,
        ) -> None:
            barrier.wait()
            try:
                result = action()
            except StakeClosed:
                closed.append(name)
                return
            # expire_stakes reports how many it expired instead of raising.
            if not (name == "expire" and result == 0):
                resolved.append(name)

        actions = {
            "settle": lambda s=stake.id: ledger.settle(s, "bob", "won"),
            "release": lambda s=stake.id: ledger.release(s, "cancel", fee=1),
            "slash": lambda s=stake.id: ledger.settle(s, SYSTEM_ACCOUNT, "slash", amount=3),
            # What was due by this stake's expiry: this stake and no later one (for an
            # open stake, a moment when nothing was due).
            "expire": lambda due_by=due_by: ledger.expire_stakes(now=due_by),
        }
        threads = [threading.Thread(target=race, args=item) for item in actions.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(resolved) == 1, resolved
        assert set(resolved) | set(closed) | {"expire"} == set(actions)
        if stake.expires_at is not None and stake.expires_at < FUTURE:
            assert resolved[0] in {"release", "expire"}, resolved
            assert {"settle", "slash"} <= set(closed)
        final = ledger.get_stake(stake.id).status
        expected_status = {"settle": "settled", "slash": "settled", "release": "released"}
        assert final == expected_status.get(resolved[0], "expired")
        with engine.connect() as connection:
            resolutions = connection.execute(
                text(
                    "SELECT count(DISTINCT timestamp) FROM token_ledger "
                    "WHERE stake_id = :s AND from_account = :escrow"
                ),
                {"s": stake.id, "escrow": ESCROW_ACCOUNT},
            ).scalar_one()
        assert resolutions == 1  # the legs of exactly one resolution
    assert ledger.get_account("alice").total_staked == 0
    audit(engine)


@pytest.mark.postgresql
def test_many_workers_staking_and_resolving(pg_engine: Engine) -> None:
    pooled = pg_engine
    ledger = Ledger(pooled)
    owners = [f"agent-{i}" for i in range(5)]
    for owner in owners:
        ledger.create_account(owner, 200)

    def worker(seed: int) -> Counter[str]:
        rng = random.Random(seed)
        seen: Counter[str] = Counter()
        mine: list[int] = []
        for _ in range(40):
            roll = rng.random()
            try:
                if roll < 0.45 or not mine:
                    # Some stakes expire while the workers run, some never.
                    expiry = (
                        datetime.now(UTC) + timedelta(seconds=rng.uniform(1, 3))
                        if rng.random() < 0.3
                        else FUTURE
                    )
                    mine.append(
                        ledger.stake(
                            rng.choice(owners), rng.randint(1, 30), "bid", expires_at=expiry
                        ).id
                    )
                elif roll < 0.65:
                    ledger.settle(
                        mine.pop(rng.randrange(len(mine))),
                        rng.choice(owners),
                        "won",
                        amount=rng.randint(1, 3) if rng.random() < 0.5 else None,
                    )
                elif roll < 0.85:
                    ledger.release(
                        mine.pop(rng.randrange(len(mine))), "cancel", fee=rng.choice([None, 1])
                    )
                else:
                    ledger.expire_stakes()
                    time.sleep(0.05)
                seen["ok"] += 1
            except (InsufficientFunds, StakeClosed) as exc:
                seen[type(exc).__name__] += 1
            except InvalidAmount:  # a partial settlement larger than a small stake
                seen["InvalidAmount"] += 1
        return seen

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = sum(pool.map(worker, range(10)), Counter())
    allowed = {"ok", "InsufficientFunds", "StakeClosed", "StakeExpired", "InvalidAmount"}
    assert set(outcomes) <= allowed, outcomes
    assert outcomes["ok"] > 200
    audit(pooled)
    report = ledger.verify()
    assert report.ok, report.problems[:5]
