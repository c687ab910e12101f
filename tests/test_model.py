"""The ledger against a model of the books, on both backends (Hypothesis stateful).

``LedgerModel`` runs random sequences of every ledger operation (accounts,
transfers, mints, burns, idempotent repeats and conflicts, stakes and their
settlement, release and expiry, reversals, batches, sealing, checkpoints
and malformed calls of every kind) against a real database and, side by
side, against ``Books``: an in-memory model in integers of base units,
written here from the contract and sharing no code with
``tokenledger.domain.books``. Each operation predicts its outcome first: which rows
it writes, exactly; or that an earlier idempotent call answers it; or that
it is refused, and with which error class. Then:

* a write must append exactly the predicted rows, with the predicted
  balances-after, and nothing else;
* a refusal, or a repeated idempotent call, must leave a fingerprint of
  every ledger table unchanged;
* after every step, every account's figures and the total supply, and two
  accounts' statements (with ``limit``, ``since``, ``as_of``) and stakes
  must equal the model;
* every ten steps, and at the end of each example, ``Ledger.verify()``, the
  independent auditor (tests/auditor.py) and the supply report must agree.

Each example runs on a fresh database: a copy of the migrated SQLite
template, or the session's PostgreSQL database emptied. The defaults take
about a minute for both backends; to search longer::

    TOKENLEDGER_MODEL_EXAMPLES=500 TOKENLEDGER_MODEL_STEPS=100 pytest tests/test_model.py

A failure is shrunk before it is reported, which against a database can
take Hypothesis its full five minutes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text

import strategies as gen
from auditor import audit
from conftest import empty_postgres
from tokenledger import (
    Account,
    AccountExists,
    AccountNotFound,
    EntryNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidArgument,
    Ledger,
    LedgerEntry,
    LedgerError,
    Stake,
    StakeClosed,
    StakeNotFound,
    Transfer,
)
from tokenledger.chain import verify_inclusion
from tokenledger.service.ledger import INITIAL_BALANCE_REASON
from tokenledger.service.stakes import EXPIRY_REASON
from tokenledger.storage import create_engine

EXAMPLES = int(os.environ.get("TOKENLEDGER_MODEL_EXAMPLES", "50"))
STEPS = int(os.environ.get("TOKENLEDGER_MODEL_STEPS", "50"))
AUDIT_EVERY = 10  # steps between verify() + auditor runs (also run at the end of each example)

SYSTEM = "system"
ESCROW = "system:escrow"
MAX_UNITS = gen.MAX_UNITS

Errors = frozenset[type[LedgerError]]


# -- the model ------------------------------------------------------------------


@dataclass
class Figures:
    """An account's figures in base units."""

    balance: int = 0
    earned: int = 0
    spent: int = 0
    staked: int = 0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.balance, self.earned, self.spent, self.staked)


@dataclass(frozen=True)
class Leg:
    """One journal row an operation is predicted to write.

    ``owner`` is not a column: it names whose stake an escrow row moves.
    """

    from_account: str
    to_account: str
    amount: int
    reason: str
    reference_type: str | None = None
    reference_id: str | None = None
    memo: str | None = None
    idempotency_key: str | None = None
    stake_id: int | None = None
    reverses_entry_id: int | None = None
    owner: str | None = None

    def columns(self) -> tuple[Any, ...]:
        return (
            self.from_account,
            self.to_account,
            self.amount,
            self.reason,
            self.reference_type,
            self.reference_id,
            self.memo,
            self.idempotency_key,
            self.stake_id,
            self.reverses_entry_id,
        )


@dataclass
class Entry:
    """A row of the model's journal."""

    id: int
    leg: Leg
    after_from: int | None
    after_to: int | None
    timestamp: datetime | None = None  # learnt from the first record that shows it


@dataclass
class StakeModel:
    id: int
    owner: str
    amount: int
    reason: str
    reference_type: str | None
    reference_id: str | None
    memo: str | None
    expires_at: datetime | None
    status: str = "open"


@dataclass(frozen=True)
class Request:
    """What an idempotent call asked for: the arguments its key binds."""

    kind: str  # transfer, mint, burn, stake
    from_account: str
    to_account: str
    amount: int
    reason: str
    reference_type: str | None
    reference_id: str | None
    memo: str | None
    expires_at: datetime | None = None

    def same_as(self, earlier: Request) -> bool:
        """Is this call a repeat of ``earlier``?"""

        def bound(r: Request) -> tuple[Any, ...]:
            return (
                r.from_account,
                r.to_account,
                r.amount,
                r.reason,
                r.reference_type,
                r.reference_id,
                r.memo,
            )

        if bound(self) != bound(earlier):
            return False
        return self.kind != "stake" or (
            earlier.kind == "stake" and earlier.expires_at == self.expires_at
        )


@dataclass(frozen=True)
class Keyed:
    request: Request
    entry_id: int
    stake_id: int | None = None


@dataclass(frozen=True)
class Plan:
    """One good item of a ``transfer_many`` batch."""

    sender: str
    receiver: str
    units: int
    amount: Any  # the units as the caller writes them
    reason: str
    memo: str | None = None
    key: str | None = None
    reference_type: str | None = None
    reference_id: str | None = None

    def as_transfer(self) -> Transfer:
        return Transfer(
            self.sender,
            self.receiver,
            self.amount,
            self.reason,
            self.reference_type,
            self.reference_id,
            self.memo,
            self.key,
        )

    def as_mapping(self) -> dict[str, Any]:
        item = {
            "from_id": self.sender,
            "to_id": self.receiver,
            "amount": self.amount,
            "reason": self.reason,
            "memo": self.memo,
            "idempotency_key": self.key,
        }
        if self.reference_type is not None or self.reference_id is not None:
            item |= {"reference_type": self.reference_type, "reference_id": self.reference_id}
        return item

    def request(self) -> Request:
        return Request(
            "transfer",
            self.sender,
            self.receiver,
            self.units,
            self.reason,
            self.reference_type,
            self.reference_id,
            self.memo,
        )

    def leg(self) -> Leg:
        r = self.request()
        return Leg(
            r.from_account,
            r.to_account,
            r.amount,
            r.reason,
            r.reference_type,
            r.reference_id,
            r.memo,
            self.key,
        )


@dataclass(frozen=True)
class Verdict:
    """The model's reasons to refuse some legs; ``short`` = (account, available, requested)."""

    errors: Errors
    short: tuple[str, int, int] | None = None

    def __bool__(self) -> bool:
        return bool(self.errors)


class Books:
    """The model: accounts, journal, stakes, supply and keys, in base units.

    The effect of an entry, by its parties (the contract's bookkeeping)::

        agent  -> agent    sender balance -a, spent +a; receiver balance +a, earned +a
        system -> agent    receiver balance +a, earned +a; minted +a
        agent  -> system   sender balance -a, spent +a; burned +a
        agent  -> escrow   owner balance -a, staked +a
        escrow -> owner    owner staked -a, balance +a
        escrow -> agent    owner staked -a, spent +a; receiver balance +a, earned +a
        escrow -> system   owner staked -a, spent +a; burned +a
    """

    def __init__(self) -> None:
        self.accounts: dict[str, Figures] = {}
        self.entries: dict[int, Entry] = {}  # in id order
        self.stakes: dict[int, StakeModel] = {}
        self.minted = 0
        self.burned = 0
        self.keys: dict[str, Keyed] = {}
        self.reversed: set[int] = set()
        self.sealed = 0
        self.checkpointed = 0

    @property
    def last_id(self) -> int:
        return max(self.entries, default=0)

    @property
    def supply(self) -> int:
        return self.minted - self.burned

    def open_stakes(self) -> list[StakeModel]:
        return [s for s in self.stakes.values() if s.status == "open"]

    @staticmethod
    def apply(
        figures: dict[str, Figures], leg: Leg
    ) -> tuple[int | None, int | None, set[str], int, int]:
        """Apply ``leg`` to ``figures``: balances after, accounts touched, minted, burned."""
        sender, receiver, amount = leg.from_account, leg.to_account, leg.amount
        if receiver == ESCROW:
            owner = figures[sender]
            owner.balance -= amount
            owner.staked += amount
            return owner.balance, None, {sender}, 0, 0
        if sender == ESCROW:
            assert leg.owner is not None
            owner = figures[leg.owner]
            owner.staked -= amount
            if receiver == leg.owner:
                owner.balance += amount
                return None, owner.balance, {leg.owner}, 0, 0
            owner.spent += amount
            if receiver == SYSTEM:
                return None, None, {leg.owner}, 0, amount
            payee = figures[receiver]
            payee.balance += amount
            payee.earned += amount
            return None, payee.balance, {leg.owner, receiver}, 0, 0
        after_from = after_to = None
        touched = set()
        if sender != SYSTEM:
            payer = figures[sender]
            payer.balance -= amount
            payer.spent += amount
            after_from = payer.balance
            touched.add(sender)
        if receiver != SYSTEM:
            payee = figures[receiver]
            payee.balance += amount
            payee.earned += amount
            after_to = payee.balance
            touched.add(receiver)
        minted = amount if sender == SYSTEM else 0
        burned = amount if receiver == SYSTEM else 0
        return after_from, after_to, touched, minted, burned

    def refusals(self, legs: list[Leg]) -> Verdict:
        """Why ``legs``, applied in order, must be refused (nothing: they must be written)."""
        figures = {a: replace(f) for a, f in self.accounts.items()}
        for leg in legs:
            before = {a: f.balance for a, f in figures.items()}
            _, _, touched, _, _ = self.apply(figures, leg)
            errors: set[type[LedgerError]] = set()
            short = None
            for account_id in touched:
                f = figures[account_id]
                if f.balance < 0:
                    errors.add(InsufficientFunds)
                    short = (account_id, before[account_id], leg.amount)
                if max(f.as_tuple()) > MAX_UNITS:
                    errors.add(InvalidAmount)
            if errors:
                return Verdict(frozenset(errors), short)
        return Verdict(frozenset())

    def commit(self, legs: list[Leg], rows: list[dict[str, Any]]) -> list[Entry]:
        """Record ``legs`` as the new ``rows`` the database shows; the entries, in id order.

        The rows must be exactly the legs (in any order within the
        operation); their balances-after must equal the model's replay in id
        order.
        """
        assert sorted(map(repr, (leg.columns() for leg in legs))) == sorted(
            map(repr, (_columns(row) for row in rows))
        ), f"predicted rows {[leg.columns() for leg in legs]}, the database has {rows}"
        pending: dict[tuple[Any, ...], list[Leg]] = {}
        for leg in legs:
            pending.setdefault(leg.columns(), []).append(leg)
        written = []
        assert all(row["id"] > self.last_id for row in rows)
        for row in sorted(rows, key=lambda r: r["id"]):
            leg = pending[_columns(row)].pop()
            after_from, after_to, touched, minted, burned = self.apply(self.accounts, leg)
            self.minted += minted
            self.burned += burned
            stored = (row["balance_after_from"], row["balance_after_to"])
            assert stored == (after_from, after_to), (
                f"entry {row['id']}: balances after {stored}, model {(after_from, after_to)}"
            )
            for account_id in touched:
                f = self.accounts[account_id]
                assert f.balance >= 0, f"the model let {account_id!r} go negative"
                assert max(f.as_tuple()) <= MAX_UNITS
            entry = Entry(row["id"], leg, after_from, after_to)
            self.entries[entry.id] = entry
            written.append(entry)
        return written

    def statement(self, account_id: str) -> list[Entry]:
        """The account's entries (as sender or receiver), newest first."""
        return [
            e
            for e in reversed(self.entries.values())
            if account_id in (e.leg.from_account, e.leg.to_account)
        ]


def _columns(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["from_account"],
        row["to_account"],
        row["amount"],
        row["reason"],
        row["reference_type"],
        row["reference_id"],
        row["memo"],
        row["idempotency_key"],
        row["stake_id"],
        row["reverses_entry_id"],
    )


# -- reading the database directly ----------------------------------------------

_FINGERPRINT = text(
    "SELECT "
    "(SELECT count(*) FROM token_ledger), "
    "(SELECT coalesce(max(id), 0) FROM token_ledger), "
    "(SELECT coalesce(sum(id), 0) FROM token_ledger), "
    "(SELECT count(*) FROM token_accounts), "
    "(SELECT max(updated_at) FROM token_accounts), "
    "(SELECT coalesce(min(balance), 0) FROM token_accounts), "
    "(SELECT count(*) FROM token_stakes), "
    "(SELECT coalesce(max(id), 0) FROM token_stakes), "
    "(SELECT count(*) FROM token_stakes WHERE status = 'open'), "
    "(SELECT count(*) FROM token_chain), "
    "(SELECT count(*) FROM token_checkpoints)"
)
_NEW_ROWS = text(
    "SELECT id, from_account, to_account, amount, reason, reference_type, reference_id, memo, "
    "idempotency_key, stake_id, reverses_entry_id, balance_after_from, balance_after_to "
    "FROM token_ledger WHERE id > :after ORDER BY id"
)
_INTEGER_COLUMNS = (
    "amount",
    "stake_id",
    "reverses_entry_id",
    "balance_after_from",
    "balance_after_to",
)


class Probe:
    """Plain SQL on the ledger's tables, independent of the library's reads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def fingerprint(self) -> tuple[Any, ...]:
        with self.engine.connect() as connection:
            return tuple(connection.execute(_FINGERPRINT).one())

    def rows_after(self, entry_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            rows = [dict(r._mapping) for r in connection.execute(_NEW_ROWS, {"after": entry_id})]
        for row in rows:
            for name in _INTEGER_COLUMNS:
                if row[name] is not None:
                    row[name] = int(row[name])
        return rows


# -- comparing records with the model --------------------------------------------


def units_of(value: object) -> int:
    """An amount the ledger returned, in base units; it must be a six-place Decimal."""
    assert isinstance(value, Decimal), f"{value!r} is not a Decimal"
    sign, digits, exponent = value.as_tuple()
    assert exponent == -6, f"{value!r} does not have six decimal places"
    magnitude = int("".join(map(str, digits)))
    return -magnitude if sign else magnitude


def optional_units(value: object) -> int | None:
    return None if value is None else units_of(value)


def assert_utc(moment: object) -> None:
    assert isinstance(moment, datetime), f"{moment!r} is not a datetime"
    assert moment.utcoffset() == timedelta(0), f"{moment!r} is not UTC"


def assert_entry(record: LedgerEntry, entry: Entry) -> None:
    leg = entry.leg
    got = (
        record.id,
        record.from_account,
        record.to_account,
        units_of(record.amount),
        record.reason,
        record.reference_type,
        record.reference_id,
        record.memo,
        optional_units(record.balance_after_from),
        optional_units(record.balance_after_to),
        record.idempotency_key,
        record.stake_id,
        record.reverses_entry_id,
    )
    expected = (
        entry.id,
        leg.from_account,
        leg.to_account,
        leg.amount,
        leg.reason,
        leg.reference_type,
        leg.reference_id,
        leg.memo,
        entry.after_from,
        entry.after_to,
        leg.idempotency_key,
        leg.stake_id,
        leg.reverses_entry_id,
    )
    assert got == expected, f"record {got} != model {expected}"
    assert_utc(record.timestamp)
    if entry.timestamp is None:
        entry.timestamp = record.timestamp
    assert record.timestamp == entry.timestamp, f"entry {entry.id} changed its timestamp"


def assert_stake(record: Stake, stake: StakeModel) -> None:
    got = (
        record.id,
        record.account_id,
        units_of(record.amount),
        record.status,
        record.reason,
        record.reference_type,
        record.reference_id,
        record.memo,
        record.expires_at,
    )
    expected = (
        stake.id,
        stake.owner,
        stake.amount,
        stake.status,
        stake.reason,
        stake.reference_type,
        stake.reference_id,
        stake.memo,
        stake.expires_at,
    )
    assert got == expected, f"stake {got} != model {expected}"
    assert_utc(record.created_at)
    if record.expires_at is not None:
        assert_utc(record.expires_at)
    assert (record.closed_at is None) == (stake.status == "open")
    if record.closed_at is not None:
        assert_utc(record.closed_at)
        assert record.closed_at >= record.created_at


def assert_account(record: Account, figures: Figures) -> None:
    got = tuple(
        units_of(v)
        for v in (record.balance, record.total_earned, record.total_spent, record.total_staked)
    )
    assert got == figures.as_tuple(), f"{record.account_id!r}: {got} != model {figures}"
    assert_utc(record.created_at)
    assert_utc(record.updated_at)


# -- the state machine -------------------------------------------------------------


def _moment_forms(moment: datetime) -> st.SearchStrategy[object]:
    """The same instant as an aware UTC datetime, in another zone, naive UTC or ISO text."""
    return st.sampled_from(
        [
            moment,
            moment.astimezone(timezone(timedelta(hours=5, minutes=30))),
            moment.astimezone(timezone(-timedelta(hours=8))),
            moment.replace(tzinfo=None),
            moment.isoformat(),
            moment.isoformat().replace("+00:00", "Z"),
        ]
    )


class LedgerModel(RuleBasedStateMachine):
    """Every ledger operation, checked against ``Books`` after each step."""

    new_ledger: ClassVar[Callable[[], Ledger]]
    exact_sealing: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.ledger = type(self).new_ledger()
        engine = self.ledger.engine
        assert engine is not None
        self.engine = engine
        self.probe = Probe(engine)
        self.books = Books()
        self.start = datetime.now(UTC)
        self.steps = 0

    # -- outcomes ---------------------------------------------------------------

    def refused(
        self, expected: Verdict | set[type[LedgerError]], call: Callable[[], object]
    ) -> None:
        """``call`` must raise one of the expected errors (that very class) and write nothing.

        An ``InsufficientFunds`` must also name the account, what it had and
        what was asked, when the model knows them.
        """
        verdict = expected if isinstance(expected, Verdict) else Verdict(frozenset(expected))
        errors = verdict.errors
        assert errors, "a refusal needs an expected error"
        names = sorted(e.__name__ for e in errors)
        before = self.probe.fingerprint()
        with pytest.raises(tuple(errors)) as caught:
            call()
        exc = caught.value
        assert type(exc) in errors, f"expected {names}, got {exc!r}"
        if isinstance(exc, InsufficientFunds) and verdict.short is not None:
            got = (exc.account_id, units_of(exc.available), units_of(exc.requested))
            assert got == verdict.short, f"{exc}: model says {verdict.short}"
        assert self.probe.fingerprint() == before, "a refused call changed the database"

    def unchanged(self, call: Callable[[], Any]) -> Any:
        """``call`` must succeed and write nothing (a repeat, an empty batch)."""
        before = self.probe.fingerprint()
        result = call()
        assert self.probe.fingerprint() == before, "the call should have written nothing"
        return result

    def written(
        self, call: Callable[[], Any], legs: Callable[[Any], list[Leg]]
    ) -> tuple[Any, list[Entry]]:
        """``call`` must succeed and append exactly ``legs(result)``; the new entries."""
        last = self.books.last_id
        result = call()
        return result, self.books.commit(legs(result), self.probe.rows_after(last))

    # -- drawing arguments ------------------------------------------------------

    def unknown_account(self, data: st.DataObject, label: str) -> str:
        known = self.books.accounts
        return data.draw(gen.account_ids().filter(lambda a: a not in known), label=label)

    def sometimes_unknown(self, data: st.DataObject, label: str, choices: list[str]) -> str:
        """One of ``choices``, or now and then an id no account has."""
        if not choices or data.draw(_RARELY, label=f"{label} unknown?"):
            return self.unknown_account(data, label)
        return data.draw(st.sampled_from(choices), label=label)

    def payers(self) -> list[str]:
        """Every account, those with tokens to spend four times over (so most debits fit)."""
        funded = [a for a, f in sorted(self.books.accounts.items()) if f.balance > 0]
        return sorted(self.books.accounts) + funded * 4

    def amount(self, data: st.DataObject, available: int | None = None) -> tuple[int, Any]:
        units = data.draw(gen.amount_units(available), label="units")
        return units, data.draw(gen.amount_forms(units), label="amount")

    def details(self, data: st.DataObject) -> tuple[str, str | None, str | None, str | None]:
        return (
            data.draw(gen.reasons(), label="reason"),
            data.draw(gen.optional_texts(), label="reference_type"),
            data.draw(gen.optional_texts(), label="reference_id"),
            data.draw(gen.memos(), label="memo"),
        )

    # -- accounts ---------------------------------------------------------------

    @initialize(data=st.data())
    def open_two_accounts(self, data: st.DataObject) -> None:
        # alice has something to spend in every example; bob may have nothing at all.
        self.create("alice", data.draw(st.integers(10, 1000), label="tokens") * gen.UNITS, data)
        self.create("bob", data.draw(gen.initial_balances(), label="initial"), data)

    @rule(data=st.data())
    def create_account(self, data: st.DataObject) -> None:
        existing = st.sampled_from(sorted(self.books.accounts))
        agent = data.draw(gen.weighted((4, gen.account_ids()), (1, existing)), label="agent")
        initial = data.draw(st.none() | gen.initial_balances(), label="initial")
        self.create(agent, initial, data)

    def create(self, agent: str, initial: int | None, data: st.DataObject) -> None:
        """Open ``agent`` with ``initial`` base units (``None``: the default 1000 tokens)."""
        units = 1000 * gen.UNITS if initial is None else initial
        if initial is None:
            form: Any = None
        elif units:
            form = data.draw(gen.amount_forms(units), label="initial_form")
        else:
            form = data.draw(st.sampled_from([0, "0", "0.000000", 0.0, "-0"]), label="zero")

        def call() -> Account:
            if form is None:
                return self.ledger.create_account(agent)
            return self.ledger.create_account(agent, form)

        if agent in self.books.accounts:
            self.refused({AccountExists}, call)
            return
        legs = [Leg(SYSTEM, agent, units, INITIAL_BALANCE_REASON)] if units else []
        last = self.books.last_id
        account = call()
        self.books.accounts[agent] = Figures()
        self.books.commit(legs, self.probe.rows_after(last))
        assert account.account_id == agent
        assert_account(account, self.books.accounts[agent])

    # -- transfer, mint, burn ---------------------------------------------------

    @precondition(lambda self: len(self.books.accounts) >= 2)
    @rule(data=st.data())
    def transfer(self, data: st.DataObject) -> None:
        sender = self.sometimes_unknown(data, "sender", self.payers())
        others = sorted(a for a in self.books.accounts if a != sender)
        receiver = self.sometimes_unknown(data, "receiver", others)
        self.post("transfer", sender, receiver, data)

    @rule(data=st.data())
    def mint(self, data: st.DataObject) -> None:
        receiver = self.sometimes_unknown(data, "receiver", sorted(self.books.accounts))
        self.post("mint", SYSTEM, receiver, data)

    @rule(data=st.data())
    def burn(self, data: st.DataObject) -> None:
        sender = self.sometimes_unknown(data, "sender", self.payers())
        self.post("burn", sender, SYSTEM, data)

    def post(self, kind: str, sender: str, receiver: str, data: st.DataObject) -> None:
        figures = self.books.accounts.get(sender)
        units, amount = self.amount(data, None if figures is None else figures.balance)
        reason, ref_type, ref_id, memo = self.details(data)
        key = data.draw(gen.idempotency_keys(), label="idempotency_key")
        request = Request(kind, sender, receiver, units, reason, ref_type, ref_id, memo)
        self.post_request(request, amount, key)

    def post_request(self, request: Request, amount: Any, key: str | None) -> None:
        """A transfer, mint or burn call, checked against the model."""
        r = request
        call = _caller(self.ledger, request, amount, key)
        if r.from_account == r.to_account:  # two draws of one unknown id: refused unread
            self.refused({InvalidArgument}, call)
            return
        if key is not None and key in self.books.keys:
            earlier = self.books.keys[key]
            if request.same_as(earlier.request):
                assert_entry(self.unchanged(call), self.books.entries[earlier.entry_id])
            else:
                self.refused({IdempotencyConflict}, call)
            return
        parties = (r.from_account, r.to_account)
        if any(p != SYSTEM and p not in self.books.accounts for p in parties):
            self.refused({AccountNotFound}, call)
            return
        leg = Leg(*parties, r.amount, r.reason, r.reference_type, r.reference_id, r.memo, key)
        errors = self.books.refusals([leg])
        if errors:
            self.refused(errors, call)
            return
        record, (entry,) = self.written(call, lambda _: [leg])
        assert_entry(record, entry)
        if key is not None:
            self.books.keys[key] = Keyed(request, entry.id)

    @precondition(lambda self: self.books.keys)
    @rule(data=st.data())
    def repeat_a_key(self, data: st.DataObject) -> None:
        """A used key again: the same call is answered as before, any other refused."""
        key = data.draw(st.sampled_from(sorted(self.books.keys)), label="key")
        request = self.books.keys[key].request
        change = data.draw(st.sampled_from(_CHANGES), label="change")
        if change == "amount":
            request = replace(request, amount=request.amount % MAX_UNITS + 1)
        elif change == "reason":
            other = "another reason"
            request = replace(request, reason=other if request.reason != other else "a third")
        elif change == "memo":
            request = replace(request, memo=None if request.memo else "another memo")
        elif change == "reference":
            other = "another reference"
            changed = other if request.reference_id != other else None
            request = replace(request, reference_id=changed)
        elif change == "kind":
            if request.kind == "burn":
                holder = request.from_account
                request = replace(request, kind="mint", from_account=SYSTEM, to_account=holder)
            else:
                holder = request.to_account if request.kind == "mint" else request.from_account
                request = replace(
                    request, kind="burn", from_account=holder, to_account=SYSTEM, expires_at=None
                )
        elif change == "expiry" and request.kind == "stake":
            later = None if request.expires_at else self.start + timedelta(days=3)
            request = replace(request, expires_at=later)
        amount = data.draw(gen.amount_forms(request.amount), label="amount")
        if request.kind == "transfer" and data.draw(_SOMETIMES, label="in a batch"):
            self.repeat_in_a_batch(request, amount, key, data)
            return
        if request.kind != "stake":
            self.post_request(request, amount, key)
            return
        expires: object = None
        if request.expires_at is not None:
            expires = data.draw(_moment_forms(request.expires_at), label="expires_at")
        self.stake_request(request, amount, expires, key)

    def repeat_in_a_batch(
        self, request: Request, amount: Any, key: str, data: st.DataObject
    ) -> None:
        """A keyed transfer as a batch item: alone, or beside an item with another key or none."""
        r = request
        plans = [
            Plan(
                r.from_account,
                r.to_account,
                r.amount,
                amount,
                r.reason,
                r.memo,
                key,
                r.reference_type,
                r.reference_id,
            )
        ]
        if data.draw(st.booleans(), label="with another item"):
            other = data.draw(gen.idempotency_keys(), label="other key")
            extra = Plan(r.from_account, r.to_account, 1, "0.000001", "extra", key=other)
            plans.insert(data.draw(st.integers(0, 1), label="position"), extra)
        self.batch([p.as_transfer() for p in plans], plans, None)

    # -- stakes -----------------------------------------------------------------

    @rule(data=st.data())
    def stake(self, data: st.DataObject) -> None:
        owner = self.sometimes_unknown(data, "owner", self.payers())
        figures = self.books.accounts.get(owner)
        units, amount = self.amount(data, None if figures is None else figures.balance)
        reason, ref_type, ref_id, memo = self.details(data)
        expires_at = None
        expires: object = None
        if data.draw(st.booleans(), label="expires"):
            expires_at = self.start + data.draw(gen.expiry_offsets(), label="expiry_offset")
            expires = data.draw(_moment_forms(expires_at), label="expires_at")
        key = data.draw(gen.idempotency_keys(), label="idempotency_key")
        request = Request("stake", owner, ESCROW, units, reason, ref_type, ref_id, memo, expires_at)
        self.stake_request(request, amount, expires, key)

    def stake_request(
        self, request: Request, amount: Any, expires: object, key: str | None
    ) -> None:
        r = request

        def call() -> Stake:
            return self.ledger.stake(
                r.from_account,
                amount,
                r.reason,
                r.reference_type,
                r.reference_id,
                r.memo,
                expires_at=expires,  # type: ignore[arg-type]
                idempotency_key=key,
            )

        if key is not None and key in self.books.keys:
            earlier = self.books.keys[key]
            if request.same_as(earlier.request):
                assert earlier.stake_id is not None
                assert_stake(self.unchanged(call), self.books.stakes[earlier.stake_id])
            else:
                self.refused({IdempotencyConflict}, call)
            return
        if r.from_account not in self.books.accounts:
            self.refused({AccountNotFound}, call)
            return
        leg = Leg(
            r.from_account,
            ESCROW,
            r.amount,
            r.reason,
            r.reference_type,
            r.reference_id,
            r.memo,
            key,
            owner=r.from_account,
        )
        errors = self.books.refusals([leg])
        if errors:
            self.refused(errors, call)
            return
        known = max(self.books.stakes, default=0)
        record, (entry,) = self.written(call, lambda s: [replace(leg, stake_id=s.id)])
        assert record.id > known, "a stake id was reused"
        model = StakeModel(
            record.id,
            r.from_account,
            r.amount,
            r.reason,
            r.reference_type,
            r.reference_id,
            r.memo,
            r.expires_at,
        )
        self.books.stakes[record.id] = model
        assert_stake(record, model)
        if key is not None:
            self.books.keys[key] = Keyed(request, entry.id, record.id)

    def pick_stake(self, data: st.DataObject) -> int:
        """Mostly an open stake; sometimes a closed one, or an id no stake has."""
        open_ids = [s.id for s in self.books.open_stakes()]
        closed_ids = [s.id for s in self.books.stakes.values() if s.status != "open"]
        choices: list[st.SearchStrategy[int]] = [st.sampled_from(open_ids)] * 4 if open_ids else []
        if closed_ids:
            choices.append(st.sampled_from(closed_ids))
        choices.append(st.integers(1, 3).map(lambda n: max(self.books.stakes, default=0) + n))
        return int(data.draw(st.one_of(*choices), label="stake_id"))

    def payee(self, data: st.DataObject, owner: str | None, *, system: bool) -> str:
        """An account, the stake's owner, ``system`` (if allowed) or an unknown id."""
        options = sorted(self.books.accounts)
        options += [owner] * 2 if owner is not None else []
        options += [SYSTEM] * 2 if system else []
        return self.sometimes_unknown(data, "to", options)

    @staticmethod
    def stake_errors(stake: StakeModel | None) -> set[type[LedgerError]]:
        if stake is None:
            return {StakeNotFound}
        if stake.status != "open":
            return {StakeClosed}
        return set()

    def resolve(
        self,
        stake: StakeModel | None,
        legs: list[Leg],
        errors: set[type[LedgerError]],
        status: str,
        call: Callable[[], Stake],
    ) -> None:
        """Settle or release: refused for ``errors`` (or the legs' own), else written."""
        errors = errors | self.stake_errors(stake)
        if not errors:
            errors |= self.books.refusals(legs).errors
        if errors:
            self.refused(errors, call)
            return
        assert stake is not None
        record, _ = self.written(call, lambda _: legs)
        stake.status = status
        assert_stake(record, stake)

    @precondition(lambda self: self.books.open_stakes())
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        stake_id = self.pick_stake(data)
        stake = self.books.stakes.get(stake_id)
        receiver = self.payee(data, stake.owner if stake else None, system=True)
        reason = data.draw(gen.reasons(), label="reason")
        size = stake.amount if stake else 10 * gen.UNITS
        how = data.draw(st.sampled_from(["all", "all", "part", "exact", "over"]), label="how")
        if how == "part":
            paid = data.draw(st.integers(1, size), label="part")
        else:
            paid = size + 1 if how == "over" else size
        amount = None if how == "all" else data.draw(gen.amount_forms(paid), label="amount")

        def call() -> Stake:
            return self.ledger.settle(stake_id, receiver, reason, amount=amount)

        errors: set[type[LedgerError]] = set()
        if receiver != SYSTEM and receiver not in self.books.accounts:
            errors.add(AccountNotFound)
        if paid > size:
            errors.add(InvalidAmount)
        legs = []
        if stake is not None:
            legs = [
                self.escrow_leg(stake, to, units, reason)
                for to, units in ((receiver, paid), (stake.owner, stake.amount - paid))
                if units > 0
            ]
        self.resolve(stake, legs, errors, "settled", call)

    @precondition(lambda self: self.books.open_stakes())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        stake_id = self.pick_stake(data)
        stake = self.books.stakes.get(stake_id)
        reason = data.draw(gen.reasons(), label="reason")
        size = stake.amount if stake else 10 * gen.UNITS
        how = data.draw(st.sampled_from(["none", "zero", "part", "all", "over"]), label="fee")
        fee = 0
        fee_form: Any = None
        if how == "zero":
            fee_form = data.draw(st.sampled_from([0, "0", "0.000000", Decimal(0)]), label="zero")
        elif how != "none":
            if how == "part":
                fee = data.draw(st.integers(1, size), label="part")
            else:
                fee = size + 1 if how == "over" else size
            fee_form = data.draw(gen.amount_forms(fee), label="fee_form")
        fee_account = None
        if fee and data.draw(st.booleans(), label="fee to an account"):
            fee_account = self.payee(data, stake.owner if stake else None, system=False)

        def call() -> Stake:
            return self.ledger.release(stake_id, reason, fee=fee_form, fee_account=fee_account)

        errors: set[type[LedgerError]] = set()
        if fee_account is not None and fee_account not in self.books.accounts:
            errors.add(AccountNotFound)
        if fee > size:
            errors.add(InvalidAmount)
        legs = []
        if stake is not None:
            fee_to = SYSTEM if fee_account is None else fee_account
            legs = [
                self.escrow_leg(stake, to, units, reason)
                for to, units in ((stake.owner, stake.amount - fee), (fee_to, fee))
                if units > 0
            ]
        self.resolve(stake, legs, errors, "released", call)

    @staticmethod
    def escrow_leg(stake: StakeModel, to: str, units: int, reason: str) -> Leg:
        return Leg(
            ESCROW,
            to,
            units,
            reason,
            stake.reference_type,
            stake.reference_id,
            stake_id=stake.id,
            owner=stake.owner,
        )

    # Rules are drawn with equal weight: these two give the stake lifecycle,
    # which needs several steps to play out, twice the share.
    @rule(data=st.data())
    def stake_again(self, data: st.DataObject) -> None:
        self.stake(data)

    @precondition(lambda self: self.books.open_stakes())
    @rule(data=st.data(), settle=st.booleans())
    def resolve_again(self, data: st.DataObject, settle: bool) -> None:
        if settle:
            self.settle(data)
        else:
            self.release(data)

    @rule(data=st.data())
    def expire_stakes(self, data: st.DataObject) -> None:
        expiries = sorted(s.expires_at for s in self.books.open_stakes() if s.expires_at)
        choices: list[st.SearchStrategy[datetime | None]] = [
            st.none(),
            gen.expiry_offsets().map(lambda offset: self.start + offset),
        ]
        if expiries:
            # Exactly at an expiry (due) and just before it (not yet due).
            choices.append(st.sampled_from(expiries))
            choices.append(st.sampled_from(expiries).map(lambda m: m - timedelta(microseconds=1)))
        now = data.draw(st.one_of(*choices), label="now")
        argument = None if now is None else data.draw(_moment_forms(now), label="now_form")
        # Every expiry is at least a day after the start: none is due by the clock,
        # and a ``now`` can only look earlier than the clock (nothing is expired early).
        clock = datetime.now(UTC)
        moment = clock if now is None else min(now, clock)
        due = [s for s in self.books.open_stakes() if s.expires_at and s.expires_at <= moment]
        legs = [self.escrow_leg(s, s.owner, s.amount, EXPIRY_REASON) for s in due]
        assert not self.books.refusals(legs), "the model refuses to return a stake"
        count, _ = self.written(lambda: self.ledger.expire_stakes(argument), lambda _: legs)  # type: ignore[arg-type]
        assert count == len(due)
        for s in due:
            s.status = "expired"
            assert_stake(self.ledger.get_stake(s.id), s)

    # -- reversals --------------------------------------------------------------

    @precondition(lambda self: self.books.entries)
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        books = self.books
        ids = list(books.entries)
        candidates = [
            i for i in ids if i not in books.reversed and books.entries[i].leg.stake_id is None
        ]
        choices = [st.sampled_from(ids), st.integers(1, 5).map(lambda n: books.last_id + n)]
        choices += [st.sampled_from(candidates)] * 3 if candidates else []
        target = data.draw(st.one_of(*choices), label="entry_id")
        reason = data.draw(gen.reasons(), label="reason")
        memo = data.draw(gen.memos(), label="memo")

        def call() -> LedgerEntry:
            return self.ledger.reverse(target, reason, memo=memo)

        original = books.entries.get(target)
        if original is None:
            self.refused({EntryNotFound}, call)
            return
        if original.leg.stake_id is not None or target in books.reversed:
            self.refused({InvalidArgument}, call)
            return
        o = original.leg
        leg = Leg(
            o.to_account,
            o.from_account,
            o.amount,
            reason,
            o.reference_type,
            o.reference_id,
            memo,
            reverses_entry_id=target,
        )
        errors = books.refusals([leg])
        if errors:
            self.refused(errors, call)
            return
        record, (entry,) = self.written(call, lambda _: [leg])
        assert_entry(record, entry)
        books.reversed.add(target)

    # -- batches ----------------------------------------------------------------

    @precondition(lambda self: len(self.books.accounts) >= 2)
    @rule(data=st.data())
    def transfer_many(self, data: st.DataObject) -> None:
        names = sorted(self.books.accounts)
        plans: list[Plan] = []
        for _ in range(data.draw(st.sampled_from([1, 2, 3, 4, 0]), label="size")):
            sender = data.draw(st.sampled_from(self.payers()), label="from")
            receiver = data.draw(st.sampled_from([n for n in names if n != sender]), label="to")
            units, amount = self.amount(data, self.books.accounts[sender].balance)
            reason = data.draw(gen.reasons(), label="reason")
            memo = data.draw(gen.memos(), label="memo")
            key = data.draw(gen.idempotency_keys(), label="idempotency_key")
            plans.append(Plan(sender, receiver, units, amount, reason, memo, key))
        items: list[Any] = [
            data.draw(st.sampled_from([p.as_transfer(), p.as_mapping()]), label="item")
            for p in plans
        ]
        fault = None
        if plans and bool(data.draw(_SOMETIMES, label="faulty")):
            fault = data.draw(st.sampled_from(_BATCH_FAULTS), label="fault")
            index = data.draw(st.integers(0, len(plans) - 1), label="at")
            p = plans[index]
            if fault == "unknown":
                plans[index] = Plan(
                    p.sender, self.unknown_account(data, "to"), p.units, p.amount, p.reason
                )
                items[index] = plans[index].as_transfer()
            else:
                items[index] = _faulty_item(fault, p, data)
        self.batch(items, plans, fault)

    def batch(self, items: list[Any], plans: list[Plan], fault: str | None) -> None:
        books = self.books

        def call() -> list[LedgerEntry]:
            return self.ledger.transfer_many(items)

        if fault is not None and fault != "unknown":
            self.refused({InvalidAmount if fault == "amount" else InvalidArgument}, call)
            return
        if not items:
            assert self.unchanged(call) == []
            return
        keys = [p.key for p in plans if p.key is not None]
        if len(set(keys)) != len(keys):
            self.refused({InvalidArgument}, call)
            return
        if any(k in books.keys for k in keys):
            repeat = len(keys) == len(plans) and all(
                p.key in books.keys and p.request().same_as(books.keys[p.key].request)
                for p in plans
                if p.key is not None
            )
            if not repeat:
                self.refused({IdempotencyConflict}, call)
                return
            records = self.unchanged(call)
            assert len(records) == len(keys)
            for record, key in zip(records, keys, strict=True):
                assert_entry(record, books.entries[books.keys[key].entry_id])
            return
        if any(p.receiver not in books.accounts for p in plans):
            self.refused({AccountNotFound}, call)
            return
        legs = [p.leg() for p in plans]
        errors = books.refusals(legs)
        if errors:
            self.refused(errors, call)
            return
        records, entries = self.written(call, lambda _: legs)
        assert len(records) == len(plans)
        # Written in the given order: item i is the i-th new row.
        for record, entry, leg in zip(records, entries, legs, strict=True):
            assert entry.leg.columns() == leg.columns(), "the batch was written out of order"
            assert_entry(record, entry)
        for plan, entry in zip(plans, entries, strict=True):
            if plan.key is not None:
                books.keys[plan.key] = Keyed(plan.request(), entry.id)

    # -- malformed input ----------------------------------------------------------

    @rule(data=st.data())
    def malformed_call(self, data: st.DataObject) -> None:
        """One bad argument among good ones: its error class, and nothing written."""
        names = sorted(self.books.accounts)
        a = data.draw(st.sampled_from(names), label="a")
        b = data.draw(st.sampled_from([n for n in names if n != a]), label="b")
        stake_id = data.draw(st.sampled_from(sorted(self.books.stakes) or [1]), label="stake")
        entry_id = data.draw(st.sampled_from(list(self.books.entries) or [1]), label="entry")
        slot = data.draw(st.sampled_from(sorted(_MALFORMED)), label="slot")
        value = data.draw(_MALFORMED[slot](self.start), label="value")
        lg = self.ledger
        calls: dict[str, Callable[[Any], object]] = {
            "create id": lg.create_account,
            "create initial": lambda v: lg.create_account("newcomer", v),
            "transfer from": lambda v: lg.transfer(v, b, 1, "x"),
            "transfer to": lambda v: lg.transfer(a, v, 1, "x"),
            "transfer to self": lambda v: lg.transfer(a, a, v, "x"),
            "transfer amount": lambda v: lg.transfer(a, b, v, "x"),
            "transfer reason": lambda v: lg.transfer(a, b, 1, v),
            "transfer reference_type": lambda v: lg.transfer(a, b, 1, "x", v),
            "transfer reference_id": lambda v: lg.transfer(a, b, 1, "x", "t", v),
            "transfer memo": lambda v: lg.transfer(a, b, 1, "x", memo=v),
            "transfer key": lambda v: lg.transfer(a, b, 1, "x", idempotency_key=v),
            "mint to": lambda v: lg.mint(v, 1, "x"),
            "mint amount": lambda v: lg.mint(a, v, "x"),
            "mint reason": lambda v: lg.mint(a, 1, v),
            "burn from": lambda v: lg.burn(v, 1, "x"),
            "burn amount": lambda v: lg.burn(a, v, "x"),
            "burn memo": lambda v: lg.burn(a, 1, "x", memo=v),
            "stake owner": lambda v: lg.stake(v, 1, "x"),
            "stake amount": lambda v: lg.stake(a, v, "x"),
            "stake reason": lambda v: lg.stake(a, 1, v),
            "stake expiry": lambda v: lg.stake(a, 1, "x", expires_at=v),
            "stake key": lambda v: lg.stake(a, 1, "x", idempotency_key=v),
            "settle id": lambda v: lg.settle(v, b, "x"),
            "settle to": lambda v: lg.settle(stake_id, v, "x"),
            "settle reason": lambda v: lg.settle(stake_id, b, v),
            "settle amount": lambda v: lg.settle(stake_id, b, "x", amount=v),
            "release id": lambda v: lg.release(v, "x"),
            "release reason": lambda v: lg.release(stake_id, v),
            "release fee": lambda v: lg.release(stake_id, "x", fee=v),
            "release fee account": lambda v: lg.release(stake_id, "x", fee=1, fee_account=v),
            "release fee account, no fee": lambda v: lg.release(
                stake_id, "x", fee=v, fee_account=b
            ),
            "reverse id": lambda v: lg.reverse(v, "x"),
            "reverse reason": lambda v: lg.reverse(entry_id, v),
            "reverse memo": lambda v: lg.reverse(entry_id, "x", memo=v),
            "batch item": lambda v: lg.transfer_many([Transfer(a, b, 1, "ok"), v]),
            "batch amount": lambda v: lg.transfer_many(
                [Transfer(a, b, 1, "ok"), Transfer(b, a, v, "x")]
            ),
            "statement id": lg.get_statement,
            "statement limit": lambda v: lg.get_statement(a, limit=v),
            "statement since": lambda v: lg.get_statement(a, since=v),
            "balance as_of": lambda v: lg.get_balance(a, as_of=v),
            "expire now": lg.expire_stakes,
        }
        assert set(calls) == set(_MALFORMED)
        error = _NOT_FOUND_SLOTS.get(slot) or (
            InvalidAmount if slot in _AMOUNT_SLOTS else InvalidArgument
        )
        self.refused({error}, lambda: calls[slot](value))

    # -- the chain ----------------------------------------------------------------

    @rule(data=st.data())
    def seal_or_checkpoint(self, data: st.DataObject) -> None:
        books = self.books
        total = len(books.entries)
        last = books.last_id
        if data.draw(st.booleans(), label="checkpoint"):
            checkpoint = self.ledger.checkpoint()
            self.sealed(self.probe.fingerprint()[9])
            if books.sealed == books.checkpointed:
                assert checkpoint is None
            else:
                assert checkpoint is not None
                span = (checkpoint.first_seq, checkpoint.last_seq)
                assert span == (books.checkpointed + 1, books.sealed)
                books.checkpointed = books.sealed
                seq = data.draw(st.integers(*span), label="seq")
                entry_id = list(books.entries)[seq - 1]  # sealed in commit order: id order here
                proof = self.ledger.prove_inclusion(entry_id)
                assert (proof.entry_id, proof.seq, proof.checkpoint_id) == (
                    entry_id,
                    seq,
                    checkpoint.id,
                )
                assert verify_inclusion(
                    proof.entry_hash, proof.index, proof.size, proof.path, proof.merkle_root
                )
        else:
            self.sealed(books.sealed + self.ledger.seal())
        assert books.sealed <= total
        assert self.probe.rows_after(last) == [], "sealing wrote journal rows"

    def sealed(self, count: int) -> None:
        """Record that the chain now holds ``count`` entries.

        One writer, so every entry is committed and sealing takes them all;
        on a PostgreSQL server shared with other tests, a transaction open
        elsewhere may hold the commit horizon back, so there it may lag.
        """
        assert self.books.sealed <= count <= len(self.books.entries)
        if self.exact_sealing:
            assert count == len(self.books.entries), "seal() left committed entries out"
        self.books.sealed = count

    # -- what must hold after every step ------------------------------------------

    @invariant()
    def books_agree(self) -> None:
        self.steps += 1
        books = self.books
        for account_id, figures in books.accounts.items():
            assert_account(self.ledger.get_account(account_id), figures)
        assert books.supply == sum(f.balance + f.staked for f in books.accounts.values())
        assert units_of(self.ledger.get_total_supply()) == books.supply
        names = sorted(books.accounts)
        first = names[self.steps % len(names)]
        second = names[(self.steps * 7 + 3) % len(names)]
        assert units_of(self.ledger.get_balance(first)) == books.accounts[first].balance
        self.check_statement(first)
        self.check_stakes(first)
        if self.steps % 3 == 0:
            self.check_history(first)
        if second != first:
            self.check_statement(second, limit=1 + self.steps % 4)
            self.check_stakes(second)
        fingerprint = self.probe.fingerprint()
        assert fingerprint[0] == len(books.entries)
        assert fingerprint[3] == len(books.accounts)
        assert fingerprint[6] == len(books.stakes)
        assert fingerprint[8] == len(books.open_stakes())
        if self.steps % AUDIT_EVERY == 0:
            self.check_whole_books()

    def check_statement(self, account_id: str, limit: int | None = None) -> None:
        expected = self.books.statement(account_id)[:limit]
        records = self.ledger.get_statement(account_id, limit=limit)
        assert [r.id for r in records] == [e.id for e in expected], f"statement of {account_id!r}"
        for record, entry in zip(records, expected, strict=True):
            assert_entry(record, entry)
        stamps = [r.timestamp for r in records]
        assert stamps == sorted(stamps, reverse=True), "a statement is not newest first"

    def check_history(self, account_id: str) -> None:
        """``since`` and ``as_of`` at the moment of one of the account's entries."""
        entries = self.books.statement(account_id)  # timestamps known: the statement was read
        if not entries:
            return
        moment = entries[len(entries) // 2].timestamp
        assert moment is not None
        argument = moment.isoformat() if self.steps % 2 else moment
        later = [e.id for e in entries if e.timestamp and e.timestamp >= moment]
        records = self.ledger.get_statement(account_id, since=argument)
        assert [r.id for r in records] == later, f"statement of {account_id!r} since {moment}"
        # The balance then: after the newest entry at or before that moment.
        last = next(e for e in entries if e.timestamp and e.timestamp <= moment)
        then = last.after_from if last.leg.from_account == account_id else last.after_to
        assert units_of(self.ledger.get_balance(account_id, as_of=argument)) == then

    def check_stakes(self, account_id: str) -> None:
        expected = [s for s in self.books.stakes.values() if s.owner == account_id]
        records = self.ledger.get_stakes(account_id, open_only=False)
        assert [r.id for r in records] == [s.id for s in expected]
        for record, stake in zip(records, expected, strict=True):
            assert_stake(record, stake)
        still_open = [s.id for s in expected if s.status == "open"]
        assert [r.id for r in self.ledger.get_stakes(account_id)] == still_open
        staked = sum(s.amount for s in expected if s.status == "open")
        assert staked == self.books.accounts[account_id].staked

    def check_whole_books(self) -> None:
        report = self.ledger.verify()
        assert report.ok, report.problems[:5]
        replay = audit(self.engine)
        assert (replay["minted"], replay["burned"]) == (self.books.minted, self.books.burned)
        assert replay["accounts"] == {a: f.as_tuple() for a, f in self.books.accounts.items()}
        self.check_supply_report()

    def check_supply_report(self) -> None:
        """The supply report's totals and (all-time, so 24-hour) volumes against the model."""
        books = self.books
        figures = books.accounts.values()
        volumes = {"transfers": 0, "staked": 0}
        for entry in books.entries.values():
            leg = entry.leg
            if leg.to_account == ESCROW:
                volumes["staked"] += leg.amount
            elif SYSTEM not in (leg.from_account, leg.to_account) and leg.to_account != leg.owner:
                volumes["transfers"] += leg.amount  # agent to agent, or a payout to another
        expected = {
            "total_supply": books.supply,
            "minted": books.minted,
            "burned": books.burned,
            "circulating": sum(f.balance for f in figures),
            "staked": sum(f.staked for f in figures),
            "accounts": len(books.accounts),
            "holders": sum(1 for f in figures if f.balance + f.staked > 0),
            "velocity.minted": books.minted,
            "velocity.burned": books.burned,
            "velocity.staked": volumes["staked"],
            "velocity.transfer_volume": volumes["transfers"],
            "velocity.entries": len(books.entries),
        }
        report = self.ledger.supply_report()
        v = report.velocity
        got = {
            "total_supply": units_of(report.total_supply),
            "minted": units_of(report.minted),
            "burned": units_of(report.burned),
            "circulating": units_of(report.circulating),
            "staked": units_of(report.staked),
            "accounts": report.accounts,
            "holders": report.holders,
            "velocity.minted": units_of(v.minted),
            "velocity.burned": units_of(v.burned),
            "velocity.staked": units_of(v.staked),
            "velocity.transfer_volume": units_of(v.transfer_volume),
            "velocity.entries": v.entries,
        }
        assert got == expected

    def teardown(self) -> None:
        self.check_whole_books()


def _caller(
    ledger: Ledger, request: Request, amount: Any, key: str | None
) -> Callable[[], LedgerEntry]:
    r = request
    rest = (r.reason, r.reference_type, r.reference_id, r.memo)
    if r.kind == "transfer":
        return lambda: ledger.transfer(
            r.from_account, r.to_account, amount, *rest, idempotency_key=key
        )
    if r.kind == "mint":
        return lambda: ledger.mint(r.to_account, amount, *rest, idempotency_key=key)
    assert r.kind == "burn"
    return lambda: ledger.burn(r.from_account, amount, *rest, idempotency_key=key)


_RARELY = st.sampled_from([False] * 9 + [True])
_SOMETIMES = st.sampled_from([False] * 3 + [True])

# How repeat_a_key changes an earlier call ("none": it does not, twice as often).
_CHANGES = ["none", "none", "amount", "reason", "memo", "reference", "kind", "expiry"]

_BATCH_FAULTS = ["unknown", "self", "amount", "reason", "reserved", "tuple", "missing", "extra"]


def _faulty_item(fault: str, plan: Plan, data: st.DataObject) -> object:
    """``plan``'s item spoilt by ``fault``: each is refused before the database is touched."""
    p = plan
    if fault == "self":
        return Transfer(p.sender, p.sender, p.amount, p.reason)
    if fault == "amount":
        return Transfer(p.sender, p.receiver, data.draw(gen.bad_amounts(), label="bad"), p.reason)
    if fault == "reason":
        bad_reason = data.draw(gen.bad_reasons(), label="bad")
        return Transfer(p.sender, p.receiver, p.amount, bad_reason)  # type: ignore[arg-type]
    if fault == "reserved":
        bad_id = data.draw(gen.bad_account_ids(), label="bad")
        return Transfer(p.sender, bad_id, p.amount, p.reason)  # type: ignore[arg-type]
    if fault == "tuple":
        return (p.sender, p.receiver, p.amount, p.reason)
    if fault == "missing":
        return {"from_id": p.sender, "to_id": p.receiver, "amount": p.amount}
    assert fault == "extra"
    return {**p.as_mapping(), "note": "not a field"}


def _bad_batch_items(_: datetime) -> st.SearchStrategy[object]:
    return st.one_of(
        st.sampled_from(
            [
                ("alice", "bob", 1, "tuple"),
                "alice->bob",
                None,
                {"from_id": "alice", "to_id": "bob", "amount": 1},
                {"from_id": "alice", "to_id": "bob", "amount": 1, "reason": "x", "fee": 1},
                Transfer("alice", "alice", 1, "self"),
                Transfer("alice", "bob", 1, ""),
            ]
        ),
        gen.bad_account_ids().map(lambda bad: Transfer("alice", bad, 1, "x")),  # type: ignore[arg-type]
    )


def _not_none(value: object) -> bool:
    return value is not None


def _always(strategy: st.SearchStrategy[object]) -> Callable[[datetime], st.SearchStrategy[object]]:
    return lambda _: strategy


# Each malformed slot of malformed_call, and what it is drawn from (given the start time).
_MALFORMED: dict[str, Callable[[datetime], st.SearchStrategy[object]]] = {
    "create id": _always(gen.bad_account_ids()),
    "create initial": _always(gen.bad_amounts(allow_zero=True)),
    "transfer from": _always(gen.bad_account_ids()),
    "transfer to": _always(gen.bad_account_ids()),
    "transfer to self": _always(st.sampled_from([1, "0.5", Decimal("0.000001")])),
    "transfer amount": _always(gen.bad_amounts()),
    "transfer reason": _always(gen.bad_reasons()),
    "transfer reference_type": _always(gen.bad_optional_texts()),
    "transfer reference_id": _always(gen.bad_optional_texts()),
    "transfer memo": _always(gen.bad_optional_texts(gen.MAX_MEMO)),
    "transfer key": _always(gen.bad_optional_texts()),
    "mint to": _always(gen.bad_account_ids()),
    "mint amount": _always(gen.bad_amounts()),
    "mint reason": _always(gen.bad_reasons()),
    "burn from": _always(gen.bad_account_ids()),
    "burn amount": _always(gen.bad_amounts()),
    "burn memo": _always(gen.bad_optional_texts(gen.MAX_MEMO)),
    "stake owner": _always(gen.bad_account_ids()),
    "stake amount": _always(gen.bad_amounts()),
    "stake reason": _always(gen.bad_reasons()),
    "stake expiry": gen.bad_expiries,
    "stake key": _always(gen.bad_optional_texts()),
    "settle id": _always(gen.bad_entry_ids()),
    "settle to": _always(gen.malformed_ids() | gen.reserved_ids().filter(lambda r: r != SYSTEM)),
    "settle reason": _always(gen.bad_reasons()),
    "settle amount": _always(gen.bad_amounts().filter(_not_none)),  # None: settle it all
    "release id": _always(gen.bad_entry_ids()),
    "release reason": _always(gen.bad_reasons()),
    "release fee": _always(gen.bad_amounts(allow_zero=True).filter(_not_none)),  # None: no fee
    "release fee account": _always(  # None is no fee account: the fee is burned
        gen.bad_account_ids().filter(_not_none)
    ),
    "release fee account, no fee": _always(st.sampled_from([None, 0, "0", "0.000000", 0.0])),
    "reverse id": _always(gen.bad_entry_ids()),
    "reverse reason": _always(gen.bad_reasons()),
    "reverse memo": _always(gen.bad_optional_texts(gen.MAX_MEMO)),
    "batch item": _bad_batch_items,
    "batch amount": _always(gen.bad_amounts()),
    "statement id": _always(gen.malformed_ids()),
    "statement limit": _always(gen.bad_limits()),
    "statement since": _always(gen.bad_moments()),
    "balance as_of": _always(gen.bad_moments()),
    "expire now": _always(gen.bad_moments()),
}
# An id that cannot name a row names none: not found, not malformed (CONTRACT, 2026-12-01).
_NOT_FOUND_SLOTS: dict[str, type[LedgerError]] = {
    "settle id": StakeNotFound,
    "release id": StakeNotFound,
    "reverse id": EntryNotFound,
}
_AMOUNT_SLOTS = {
    "create initial",
    "transfer amount",
    "mint amount",
    "burn amount",
    "stake amount",
    "settle amount",
    "release fee",
    "batch amount",
}


# -- running it on both backends --------------------------------------------------------


@contextmanager
def ledger_factory(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], Ledger]]:
    """A function that returns a ledger on an empty database, once per example."""
    engines: list[Engine] = []
    if backend == "postgresql":
        shared = create_engine(request.getfixturevalue("postgres_url"))
        engines.append(shared)

        def fresh() -> Ledger:
            empty_postgres(shared)
            return Ledger(shared)

    else:
        template = request.getfixturevalue("sqlite_template")

        def fresh() -> Ledger:
            # The previous example's database is done with: keep the disk small.
            while engines:
                engines.pop().dispose()
            for old in tmp_path.glob("example-*"):
                old.unlink()
            path = tmp_path / f"example-{uuid4().hex[:8]}.db"
            shutil.copyfile(template, path)
            engine = create_engine(f"sqlite:///{path}")
            engines.append(engine)
            return Ledger(engine)

    try:
        yield fresh
    finally:
        for engine in engines:
            engine.dispose()


def test_the_ledger_keeps_the_books_of_the_model(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with ledger_factory(backend, request, tmp_path) as fresh:
        machine = type(
            f"LedgerModelOn{backend.capitalize()}",
            (LedgerModel,),
            # The sealer never waits on a transaction of another database, and the
            # model's own are all ended: on both backends a seal takes everything.
            {"new_ledger": staticmethod(fresh)},
        )
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                suppress_health_check=[
                    HealthCheck.too_slow,
                    HealthCheck.filter_too_much,
                    HealthCheck.data_too_large,
                ],
                report_multiple_bugs=False,
            ),
        )


def test_supply_report_is_exact_past_64_bits(ledger: Ledger) -> None:
    """Totals beyond 2**63 - 1 base units (9.2 trillion tokens) stay exact in the report.

    Each account holds at most 2**63 - 1 units, but the supply may hold more;
    SQLite's 64-bit integers must not turn the sum into a float.
    """
    ledger.create_account("whale", "9223372036854.775807")  # the storable maximum
    ledger.create_account("minnow", "1")
    supply = Decimal("9223372036855.775807")
    assert ledger.get_total_supply() == supply
    report = ledger.supply_report()
    assert (report.total_supply, report.minted, report.circulating) == (supply, supply, supply)
