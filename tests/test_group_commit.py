"""Group commit: concurrent one-entry calls share a commit, and each keeps its own answer.

The coordinator's rules (who leads, what a failed batch becomes for each
call) are tested on plain functions first; then the real thing, on both
backends: exact conservation and entry counts under many threads, one batch
holding every kind of refusal, a batch that fails as a whole on PostgreSQL.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from auditor import audit
from test_batch import TRICKY_TEXTS
from tokenledger import (
    AccountNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    Ledger,
    LedgerEntry,
    OutcomeUnknown,
    StorageError,
)
from tokenledger.domain.postings import Draft
from tokenledger.storage import create_engine
from tokenledger.storage.group_commit import GroupCommitter
from tokenledger.storage.posting import IdempotencyKeyTaken, Outcome

# -- the coordinator on plain functions --------------------------------------


def _draft(n: int, key: str | None = None) -> Draft:
    return Draft(f"a{n}", f"b{n}", n, "trade", None, None, None, key)


def _entry(draft: Draft) -> LedgerEntry:
    return LedgerEntry(
        id=draft.amount,
        timestamp=None,  # type: ignore[arg-type]
        from_account=draft.from_account,
        to_account=draft.to_account,
        amount=Decimal(draft.amount),
        reason=draft.reason,
        reference_type=None,
        reference_id=None,
        memo=None,
        balance_after_from=None,
        balance_after_to=None,
        idempotency_key=draft.idempotency_key,
    )


class Recorder:
    """A post_many and a post_alone that record their calls; the first can be held."""

    def __init__(self, many: Callable[[Sequence[Draft]], list[Outcome]] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.alone: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()
        self._many = many
        self._lock = threading.Lock()

    def post_many(self, drafts: Sequence[Draft]) -> list[Outcome]:
        with self._lock:
            self.batches.append([d.amount for d in drafts])
        if self._many is not None:
            return self._many(drafts)
        return [_entry(d) for d in drafts]

    def post_alone(self, draft: Draft) -> LedgerEntry:
        with self._lock:
            self.alone.append(draft.amount)
        if not self.gate.is_set():
            self.held.set()
            self.gate.wait(10)
        if draft.amount < 0:
            raise InsufficientFunds(draft.from_account, 0, 1)
        return _entry(draft)


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _queue_behind_a_held_call(
    committer: GroupCommitter, recorder: Recorder, drafts: list[Draft]
) -> dict[int, Any]:
    """The first draft leads alone and is held; the rest queue, then go. Outcome per amount."""
    results: dict[int, Any] = {}

    def call(draft: Draft) -> None:
        try:
            results[draft.amount] = committer.post(draft)
        except BaseException as exc:
            results[draft.amount] = exc

    recorder.gate.clear()
    threads = [threading.Thread(target=call, args=(drafts[0],))]
    threads[0].start()
    assert recorder.held.wait(10)
    for queued, draft in enumerate(drafts[1:], start=1):
        threads.append(threading.Thread(target=call, args=(draft,)))
        threads[-1].start()
        _wait_for(lambda n=queued: committer.waiting == n, "the call to queue")
    recorder.gate.set()
    for thread in threads:
        thread.join(10)
    assert committer.waiting == 0
    return results


def test_a_call_that_is_alone_goes_at_once_on_its_own() -> None:
    recorder = Recorder()
    committer = GroupCommitter(recorder.post_many, recorder.post_alone)
    assert committer.post(_draft(1)).id == 1
    assert committer.post(_draft(2)).id == 2
    assert recorder.alone == [1, 2]
    assert recorder.batches == []


def test_calls_queued_behind_a_batch_go_together_in_their_order() -> None:
    recorder = Recorder()
    committer = GroupCommitter(recorder.post_many, recorder.post_alone, max_batch=4)
    drafts = [_draft(n) for n in range(1, 8)]
    results = _queue_behind_a_held_call(committer, recorder, drafts)
    assert {n: r.id for n, r in results.items()} == {n: n for n in range(1, 8)}
    assert recorder.alone == [1]
    # Six queued, at most four a batch, each in the order the calls queued.
    assert recorder.batches == [[2, 3, 4, 5], [6, 7]]


def test_each_call_of_a_batch_gets_its_own_outcome() -> None:
    def many(drafts: Sequence[Draft]) -> list[Outcome]:
        return [
            InsufficientFunds(d.from_account, 0, d.amount)
            if d.amount == 3
            else IdempotencyKeyTaken(d.idempotency_key)
            if d.idempotency_key
            else _entry(d)
            for d in drafts
        ]

    recorder = Recorder(many)
    committer = GroupCommitter(recorder.post_many, recorder.post_alone)
    results = _queue_behind_a_held_call(
        committer, recorder, [_draft(1), _draft(2), _draft(3), _draft(4, "k")]
    )
    assert results[1].id == 1
    assert results[2].id == 2
    assert isinstance(results[3], InsufficientFunds)
    assert isinstance(results[4], IdempotencyKeyTaken)


def test_a_batch_that_commits_nothing_is_posted_again_call_by_call() -> None:
    def many(drafts: Sequence[Draft]) -> list[Outcome]:
        raise StorageError("the statement was refused")

    recorder = Recorder(many)
    committer = GroupCommitter(recorder.post_many, recorder.post_alone)
    drafts = [_draft(1), _draft(2), _draft(-3), _draft(4)]
    results = _queue_behind_a_held_call(committer, recorder, drafts)
    assert len(recorder.batches) == 1
    assert sorted(recorder.alone) == [-3, 1, 2, 4]  # the leader, then each of the batch
    assert results[2].id == 2
    assert results[4].id == 4
    assert isinstance(results[-3], InsufficientFunds)  # its own refusal, nobody else's


def test_an_unknown_outcome_retries_only_keyed_calls() -> None:
    def many(drafts: Sequence[Draft]) -> list[Outcome]:
        raise OutcomeUnknown("the connection died during the commit")

    recorder = Recorder(many)
    committer = GroupCommitter(recorder.post_many, recorder.post_alone)
    drafts = [_draft(1), _draft(2, "key-2"), _draft(3), _draft(4, "key-4")]
    results = _queue_behind_a_held_call(committer, recorder, drafts)
    assert sorted(recorder.alone) == [1, 2, 4]
    assert results[2].id == 2
    assert results[4].id == 4
    assert isinstance(results[3], OutcomeUnknown)  # unkeyed: only the journal can tell


def test_an_interrupted_leader_settles_every_call_and_hands_on() -> None:
    class Interrupted(BaseException):
        pass

    def many(drafts: Sequence[Draft]) -> list[Outcome]:
        raise Interrupted

    recorder = Recorder(many)
    committer = GroupCommitter(recorder.post_many, recorder.post_alone)
    results = _queue_behind_a_held_call(committer, recorder, [_draft(n) for n in (1, 2, 3, 4)])
    outcomes = Counter(type(results[n]).__name__ for n in (2, 3, 4))
    # The batch's leader sees its interrupt; the others an unknown outcome, none hangs.
    assert outcomes == {"Interrupted": 1, "OutcomeUnknown": 2}
    assert committer.post(_draft(5)).id == 5  # the committer is not stuck


def test_a_queued_call_interrupted_while_waiting_leaves_nothing_stuck() -> None:
    recorder = Recorder()
    committer = GroupCommitter(recorder.post_many, recorder.post_alone)
    recorder.gate.clear()
    leader = threading.Thread(target=committer.post, args=(_draft(1),))
    leader.start()
    assert recorder.held.wait(10)
    waiter_done = threading.Event()

    def interrupted_waiter() -> None:
        # The wait itself raises, as a signal handler's exception would.
        call_wait = threading.Event.wait

        def raising_wait(self: threading.Event, timeout: float | None = None) -> bool:
            if threading.current_thread() is waiter:
                raise KeyboardInterrupt
            return call_wait(self, timeout)

        threading.Event.wait = raising_wait  # type: ignore[method-assign]
        try:
            committer.post(_draft(2))
        except KeyboardInterrupt:
            waiter_done.set()
        finally:
            threading.Event.wait = call_wait  # type: ignore[method-assign]

    waiter = threading.Thread(target=interrupted_waiter)
    waiter.start()
    waiter.join(10)
    assert waiter_done.is_set()
    assert committer.waiting == 0  # the interrupted call left the queue
    recorder.gate.set()
    leader.join(10)
    assert committer.post(_draft(3)).id == 3
    assert 2 not in recorder.alone
    assert all(2 not in b for b in recorder.batches)


# -- the real thing, on both backends -----------------------------------------

ACCOUNTS = [f"agent-{i:02d}" for i in range(10)]


@pytest.fixture
def grouped(engine: Engine) -> Iterator[Ledger]:
    return Ledger(engine, group_commit=True)


@contextmanager
def writes_held(engine: Engine, accounts: list[str]) -> Iterator[None]:
    """Another transaction (on an engine of its own) holding what the ledger's writes need."""
    other = create_engine(engine.url)
    try:
        with other.connect() as connection:
            if engine.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                connection.execute(
                    text("SELECT 1 FROM token_accounts WHERE account_id = ANY(:ids) FOR UPDATE"),
                    {"ids": accounts},
                )
            try:
                yield
            finally:
                connection.rollback()
    finally:
        other.dispose()


def _write_transactions(engine: Engine, entry_ids: list[int]) -> int:
    """How many transactions wrote these entries (PostgreSQL: distinct writer txids)."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(DISTINCT writer_txid) FROM token_ledger WHERE id = ANY(:ids)"),
                {"ids": entry_ids},
            ).scalar_one()
        )


@contextmanager
def counted_write_transactions(engine: Engine) -> Iterator[list[int]]:
    """Counts the write transactions the ledger opens on SQLite (its BEGIN IMMEDIATEs)."""
    counter = [0]

    def before(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if statement == "BEGIN IMMEDIATE":
            counter[0] += 1

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _spent_by_threads(
    ledger: Ledger, threads: int, operations: int
) -> tuple[Counter[str], list[LedgerEntry], list[list[int]]]:
    """Random transfers, mints, burns and keyed repeats from many threads at once."""

    def worker(seed: int) -> tuple[Counter[str], list[LedgerEntry], list[int]]:
        rng = random.Random(seed)
        outcomes: Counter[str] = Counter()
        entries: list[LedgerEntry] = []
        ids: list[int] = []
        for n in range(operations):
            sender, receiver = rng.sample(ACCOUNTS, 2)
            amount = f"{rng.randint(1, 60_000_000) / 1_000_000:.6f}"
            roll = rng.random()
            key = f"t{seed}-{n}" if roll > 0.7 else None
            if roll < 0.05:
                call = partial(ledger.mint, receiver, amount, "reward", idempotency_key=key)
            elif roll < 0.10:
                call = partial(ledger.burn, sender, amount, "fee", idempotency_key=key)
            else:
                call = partial(
                    ledger.transfer, sender, receiver, amount, "trade", idempotency_key=key
                )
            try:
                entry = call()
                if key is not None:  # the same call again answers with the same entry
                    assert call().id == entry.id
                outcomes["ok"] += 1
                entries.append(entry)
                ids.append(entry.id)
            except InsufficientFunds:
                outcomes["InsufficientFunds"] += 1
        return outcomes, entries, ids

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(worker, range(threads)))
    outcomes = sum((r[0] for r in results), Counter())
    entries = [e for r in results for e in r[1]]
    return outcomes, entries, [r[2] for r in results]


def test_many_threads_conserve_exactly_and_share_commits(grouped: Ledger, engine: Engine) -> None:
    for account_id in ACCOUNTS:
        grouped.create_account(account_id, 100)
    with counted_write_transactions(engine) as begun:
        outcomes, entries, ids_per_thread = _spent_by_threads(grouped, threads=12, operations=40)
    assert set(outcomes) <= {"ok", "InsufficientFunds"}
    assert outcomes["ok"] > 0
    assert outcomes["InsufficientFunds"] > 0
    figures = audit(engine)  # conservation, replay, no negative balance
    report = grouped.verify()
    assert report.ok, report.problems[:5]
    assert report.counts["entries"] == outcomes["ok"] + len(ACCOUNTS)  # nothing lost or extra
    assert figures["supply"] == figures["minted"] - figures["burned"]
    # Each balance is exactly what the returned entries say happened to it.
    expected = dict.fromkeys(ACCOUNTS, Decimal(100))
    for entry in entries:
        if entry.from_account in expected:
            expected[entry.from_account] -= entry.amount
        if entry.to_account in expected:
            expected[entry.to_account] += entry.amount
    assert {a: grouped.get_balance(a) for a in ACCOUNTS} == expected
    # A thread's calls are in the journal in the order it made them.
    for ids in ids_per_thread:
        assert ids == sorted(ids)
    # Fewer write transactions than entries: calls did share commits.
    ids = [e.id for e in entries]
    shared = _write_transactions(engine, ids) if engine.dialect.name != "sqlite" else begun[0]
    assert shared < len(ids)


def _one_batch(
    ledger: Ledger,
    engine: Engine,
    calls: dict[str, Callable[[], LedgerEntry]],
    held: list[str],
    meanwhile: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run ``calls`` at once while another transaction holds ``held``; outcome by name.

    The first call to arrive leads alone and waits for the held accounts;
    every other queues behind it and goes in the next batch. ``meanwhile``
    runs once the hold is let go, while the calls are still running.
    """
    results: dict[str, Any] = {}
    committer = ledger._group
    assert committer is not None

    def run(name: str) -> None:
        try:
            results[name] = calls[name]()
        except Exception as exc:
            results[name] = exc

    threads = [threading.Thread(target=run, args=(name,)) for name in calls]
    with writes_held(engine, held):
        for thread in threads:
            thread.start()
        _wait_for(lambda: committer.waiting == len(calls) - 1, "every call to queue")
    if meanwhile is not None:
        meanwhile()
    for thread in threads:
        thread.join(30)
    return results


def test_one_batch_answers_each_call_as_if_it_were_alone(grouped: Ledger, engine: Engine) -> None:
    for account_id in ACCOUNTS[:4]:
        grouped.create_account(account_id, 100)
    a, b, c, d = ACCOUNTS[:4]
    calls: dict[str, Callable[[], LedgerEntry]] = {
        "a->b": lambda: grouped.transfer(a, b, 10, "trade"),
        "b->c": lambda: grouped.transfer(b, c, "0.000001", "trade"),
        "overdraft": lambda: grouped.transfer(c, d, 1_000, "trade"),
        "unknown": lambda: grouped.transfer(d, "nobody", 1, "trade"),
        "mint": lambda: grouped.mint(d, 5, "reward"),
        "burn": lambda: grouped.burn(c, 7, "fee"),
        "key once": lambda: grouped.transfer(a, c, 3, "trade", idempotency_key="k1"),
        "key twice": lambda: grouped.transfer(a, c, 3, "trade", idempotency_key="k1"),
        "key x": lambda: grouped.transfer(d, a, 1, "trade", idempotency_key="k2"),
        "key y": lambda: grouped.transfer(d, a, 2, "trade", idempotency_key="k2"),
    }
    with counted_write_transactions(engine) as begun:
        results = _one_batch(grouped, engine, calls, ACCOUNTS[:4])

    assert isinstance(results["overdraft"], InsufficientFunds)
    assert isinstance(results["unknown"], AccountNotFound)
    assert results["key once"].id == results["key twice"].id  # one entry, two answers
    keyed = [results["key x"], results["key y"]]
    written = [r for r in keyed if isinstance(r, LedgerEntry)]
    assert len(written) == 1
    assert isinstance(next(r for r in keyed if r not in written), IdempotencyConflict)
    entries = [results[n] for n in ("a->b", "b->c", "mint", "burn", "key once")] + written
    assert all(isinstance(e, LedgerEntry) for e in entries), results
    x = written[0].amount
    assert grouped.get_balance(a) == Decimal(100) - 10 - 3 + x
    assert grouped.get_balance(b) == Decimal(100) + 10 - Decimal("0.000001")
    assert grouped.get_balance(c) == Decimal(100) + Decimal("0.000001") - 7 + 3
    assert grouped.get_balance(d) == Decimal(100) + 5 - x
    assert grouped.verify().counts["entries"] == 4 + len(entries)
    audit(engine)
    # The leader alone, then the rest in one transaction.
    ids = [e.id for e in entries]
    transactions = _write_transactions(engine, ids) if engine.dialect.name != "sqlite" else begun[0]
    assert transactions == 2


@pytest.mark.postgresql
def test_a_batch_refused_as_a_whole_settles_every_call_alone(
    pg_engine: Engine,
) -> None:
    """A key committed by another transaction mid-batch fails the batch's statement.

    Nothing of the batch is committed; each call then goes alone and gets
    what it would have got alone: the key's call a conflict, the others entries.
    """
    engine = pg_engine
    ledger = Ledger(engine, group_commit=True)
    for account_id in ACCOUNTS[:6]:
        ledger.create_account(account_id, 100)
    a, b, c, d, e, f = ACCOUNTS[:6]
    host = engine.connect()
    host_entry = ledger.using(host).transfer(e, f, 1, "trade", idempotency_key="contested")
    calls: dict[str, Callable[[], LedgerEntry]] = {
        "first": lambda: ledger.transfer(a, b, 1, "trade"),
        "contested": lambda: ledger.transfer(c, d, 2, "trade", idempotency_key="contested"),
        "after": lambda: ledger.transfer(b, c, 3, "trade"),
        "last": lambda: ledger.mint(d, 4, "reward"),
    }

    def commit_the_host_key() -> None:
        # The batch now waits on the host's uncommitted key; the host commits it.
        _wait_for(lambda: _waiting_on_a_lock(engine) > 0, "the batch to wait on the key")
        host.commit()
        host.close()

    results = _one_batch(ledger, engine, calls, [a, b, c, d], commit_the_host_key)
    assert isinstance(results["contested"], IdempotencyConflict), results
    for name in ("first", "after", "last"):
        assert isinstance(results[name], LedgerEntry), results
    assert ledger.get_balance(c) == Decimal(100) + 3
    assert ledger.get_balance(d) == Decimal(100) + 4
    assert ledger.get_balance(f) == Decimal(101)
    assert ledger.verify().counts["entries"] == 6 + 1 + 3
    assert host_entry.idempotency_key == "contested"
    audit(engine)


def _waiting_on_a_lock(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%tokenledger_post_entries_v1%'"
                )
            ).scalar_one()
        )


def test_one_key_from_many_threads_is_one_entry(grouped: Ledger, engine: Engine) -> None:
    grouped.create_account("payer", 100)
    grouped.create_account("payee", 0)
    with ThreadPoolExecutor(max_workers=12) as pool:
        entries = list(
            pool.map(
                lambda _: grouped.transfer("payer", "payee", 1, "trade", idempotency_key="once"),
                range(48),
            )
        )
    assert {e.id for e in entries} == {entries[0].id}
    assert grouped.get_balance("payee") == Decimal(1)
    assert grouped.verify().counts["entries"] == 2  # the opening mint and the one transfer


def test_group_commit_needs_an_engine(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.create_account("alice", 5)
    with (
        engine.connect() as connection,
        pytest.raises(InvalidArgument, match="group_commit needs an Engine"),
    ):
        Ledger(connection, group_commit=True)
    assert ledger.verify().counts["entries"] == 1
    assert ledger.get_balance("alice") == Decimal(5)


def check_texts_survive_one_batch(ledger: Ledger, engine: Engine) -> None:
    """Texts an array literal must quote and escape, in every text field of a grouped call."""
    ledger.create_account("payer", 100)
    for name in TRICKY_TEXTS:
        ledger.create_account(name, 0)
    calls: dict[str, Callable[[], LedgerEntry]] = {
        name: partial(
            ledger.transfer,
            "payer",
            name,
            1,
            reason=name,
            reference_type=name,
            reference_id=name,
            memo=name,
            idempotency_key=name,
        )
        for name in TRICKY_TEXTS
    }
    results = _one_batch(ledger, engine, calls, ["payer", *TRICKY_TEXTS])
    for name, entry in results.items():
        stored = ledger.get_entry(entry.id)
        texts = (stored.to_account, stored.reason, stored.reference_type, stored.reference_id)
        assert texts == (name,) * 4
        assert (stored.memo, stored.idempotency_key) == (name, name)
    assert [ledger.get_balance(name) for name in TRICKY_TEXTS] == [Decimal(1)] * len(TRICKY_TEXTS)
    audit(engine)


def test_texts_survive_one_batch(grouped: Ledger, engine: Engine) -> None:
    check_texts_survive_one_batch(grouped, engine)
