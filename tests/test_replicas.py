"""The read engine, the commit deadline and ``require_synchronous``, on one server.

A second engine on the same database stands in for a replica, so the
routing is tested on both backends: writes reach only the primary engine,
reads the read engine, and every read after a write sees it. On PostgreSQL
the read engine is made read-only (``default_transaction_read_only``), so
any write or locking statement sent there would fail as on a hot standby.
The real standby, its replay lag, failover and a missing synchronous
standby are tested against a Patroni cluster in ``test_replication_cluster.py``.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError

from conftest import with_driver
from exercise import every_operation
from tokenledger import (
    InvalidArgument,
    Ledger,
    OutcomeUnknown,
    ReplicationUnavailable,
)
from tokenledger.storage import create_engine, replication

# What a hot standby refuses, and what a read has no business sending anyway.
REFUSED_ON_A_STANDBY = re.compile(
    r"\b(FOR UPDATE|FOR SHARE|nextval|txid_current\(\)|LISTEN|NOTIFY|TEMP|TEMPORARY|"
    r"SERIALIZABLE|INSERT|UPDATE|DELETE|pg_advisory|pg_current_wal)\b",
    re.IGNORECASE,
)


class Statements:
    """The statements an engine's connections executed, via the engine's events."""

    def __init__(self, engine: Engine) -> None:
        self.seen: list[str] = []
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        with self._lock:
            self.seen.append(" ".join(statement.split()))

    def clear(self) -> None:
        self.seen.clear()


@pytest.fixture
def read_engine(database_url: str, backend: str) -> Iterator[Engine]:
    options: dict[str, Any] = {}
    if backend == "postgresql":
        options["connect_args"] = {"options": "-c default_transaction_read_only=on"}
    engine = create_engine(database_url, **options)
    yield engine
    engine.dispose()


def test_reads_go_to_the_read_engine_and_see_the_callers_writes(
    engine: Engine, read_engine: Engine
) -> None:
    primary, replica = Statements(engine), Statements(read_engine)
    ledger = Ledger(engine, read_engine)
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    primary.clear()
    for i in range(1, 6):
        entry = ledger.transfer("alice", "bob", 1, "pay", idempotency_key=f"k{i}")
        # Each read right after the write sees it.
        assert ledger.get_balance("bob") == Decimal(i)
        assert ledger.get_statement("bob", limit=1)[0].id == entry.id
        assert ledger.get_balance("alice", as_of=entry.timestamp) == Decimal(100 - i)
        assert ledger.get_total_supply() == Decimal(100)
    # The reads were the replica's: the primary saw only writes (and their LSN).
    reads_on_primary = [s for s in primary.seen if s.startswith("SELECT token_")]
    assert reads_on_primary == [], reads_on_primary[:3]
    # The feed seals on the primary (a write) and reads the sealed chain on the replica.
    assert [e.seq for e in ledger.events(after=0, limit=3)] == [1, 2, 3]
    replica.clear()
    assert ledger.verify().ok
    assert any("token_chain" in s for s in replica.seen)
    assert any("token_accounts" in s for s in replica.seen)
    assert all(not REFUSED_ON_A_STANDBY.search(s) for s in replica.seen), [
        s for s in replica.seen if REFUSED_ON_A_STANDBY.search(s)
    ][:3]


def test_every_operation_sends_nothing_a_standby_refuses(
    engine: Engine, read_engine: Engine
) -> None:
    replica = Statements(read_engine)
    ledger = Ledger(engine, read_engine)
    every_operation(ledger, "rr")
    assert replica.seen, "no read reached the read engine"
    refused = [s for s in replica.seen if REFUSED_ON_A_STANDBY.search(s)]
    assert refused == []


@pytest.mark.postgresql
def test_a_replica_behind_the_write_is_waited_for_then_the_primary_answers(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica_engine = create_engine(pg_engine.url)
    try:
        ledger = Ledger(pg_engine, replica_engine, replica_wait=0.05)
        ledger.create_account("alice", 10)
        binding: Any = ledger._binding
        # The "replica" says it is in recovery and has replayed nothing.
        monkeypatch.setattr(replication, "_REPLAY_POSITION", "SELECT true, 0::bigint")
        started = time.monotonic()
        assert ledger.get_balance("alice") == Decimal(10)
        waited = time.monotonic() - started
        assert 0.05 <= waited < 1.0
        assert binding.counts["primary"] == 1
        monkeypatch.undo()
        assert ledger.get_balance("alice") == Decimal(10)
        assert binding.counts["replica"] >= 1
    finally:
        replica_engine.dispose()


@pytest.mark.postgresql
@pytest.mark.parametrize("group_commit", [False, True])
def test_a_connection_lost_right_after_the_commit_is_not_written_twice(
    pg_engine: Engine, group_commit: bool
) -> None:
    """The commit succeeded; the position query after it fails: nothing is retried."""
    replica_engine = create_engine(pg_engine.url)
    side = create_engine(pg_engine.url)
    armed = threading.Event()

    def end_the_session(_c: Any, cursor: Any, statement: str, *_: Any) -> None:
        if armed.is_set() and "pg_current_wal_insert_lsn" in statement:
            armed.clear()
            with side.connect() as connection:
                connection.execute(
                    text("SELECT pg_terminate_backend(:pid)"),
                    {"pid": cursor.connection.get_backend_pid()},
                )
                connection.commit()
            time.sleep(0.2)  # the backend is gone before the query is sent

    try:
        ledger = Ledger(pg_engine, replica_engine, group_commit=group_commit)
        ledger.create_account("alice", 100)
        ledger.create_account("bob", 0)
        event.listen(pg_engine, "before_cursor_execute", end_the_session)
        armed.set()
        entry = ledger.transfer("alice", "bob", 10, "once")
        armed.set()
        stake = ledger.stake("alice", 5, "once")
        event.remove(pg_engine, "before_cursor_execute", end_the_session)

        with side.connect() as connection:
            written = connection.execute(
                text("SELECT count(*) FROM token_ledger WHERE reason = 'once'")
            ).scalar_one()
            stakes = connection.execute(text("SELECT count(*) FROM token_stakes")).scalar_one()
        assert (written, stakes) == (2, 1)  # the transfer and the stake's lock entry, once each
        assert ledger.get_balance("alice") == Decimal(85)
        assert ledger.get_balance("bob") == Decimal(10)
        assert ledger.get_entry(entry.id).amount == Decimal(10)
        assert ledger.get_stake(stake.id).amount == Decimal(5)
        assert ledger.verify().ok
    finally:
        side.dispose()
        replica_engine.dispose()


def _recovery_conflict(backend: str) -> OperationalError:
    orig: Exception
    if backend == "postgresql":
        orig = psycopg2.errors.SerializationFailure(
            "canceling statement due to conflict with recovery"
        )
    else:
        orig = sqlite3.OperationalError("disk I/O error")
    return OperationalError("SELECT", {}, orig)


def test_a_read_cancelled_on_the_replica_runs_again_on_the_primary(
    engine: Engine, read_engine: Engine, backend: str
) -> None:
    ledger = Ledger(engine, read_engine)
    ledger.create_account("alice", 7)
    failures = [_recovery_conflict(backend)]

    @event.listens_for(read_engine, "before_cursor_execute")
    def cancel(*_: Any) -> None:
        if failures and not _[2].startswith("SELECT pg_is_in_recovery"):
            raise failures.pop()

    assert ledger.get_balance("alice") == Decimal(7)
    assert failures == []  # the replica's read was cancelled, the primary answered
    assert ledger._binding.counts["primary"] >= 1  # type: ignore[attr-defined]


def test_an_unreachable_replica_leaves_the_reads_to_the_primary(
    engine: Engine, backend: str, tmp_path: Any
) -> None:
    if backend == "postgresql":
        # A port nothing listens on (a free one was found, then let go).
        gone = create_engine(engine.url.set(host="127.0.0.1", port=_free_port()))
    else:
        gone = create_engine(f"sqlite:///{tmp_path}/no/such/dir/ledger.db")
    try:
        ledger = Ledger(engine, gone)
        ledger.create_account("alice", 3)
        assert ledger.get_balance("alice") == Decimal(3)
        assert ledger.get_statement("alice")[0].amount == Decimal(3)
        assert ledger.verify().ok
    finally:
        gone.dispose()


def test_bad_replica_settings_are_refused(engine: Engine, backend: str, tmp_path: Any) -> None:
    other = (
        create_engine(f"sqlite:///{tmp_path}/other.db")
        if backend == "postgresql"
        else create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none")
    )
    try:
        with pytest.raises(InvalidArgument, match="same database"):
            Ledger(engine, other)
        with pytest.raises(InvalidArgument, match="replica_wait"):
            Ledger(engine, engine, replica_wait=-1)
        with pytest.raises(InvalidArgument, match="failover_wait"):
            Ledger(engine, failover_wait=-0.5)
        with pytest.raises(InvalidArgument, match="commit_deadline"):
            Ledger(engine, commit_deadline=float("nan"))
        if backend == "sqlite":
            with pytest.raises(InvalidArgument, match="no synchronous standby"):
                Ledger(engine, require_synchronous=True)
        with (
            engine.connect() as connection,
            connection.begin(),
            pytest.raises(InvalidArgument, match="read engine"),
        ):
            Ledger(connection, engine)
    finally:
        other.dispose()


@pytest.mark.postgresql
def test_require_synchronous_without_a_standby_refuses_the_write(pg_engine: Engine) -> None:
    Ledger(pg_engine).create_account("alice", 5)
    ledger = Ledger(pg_engine, require_synchronous=True)
    with pytest.raises(ReplicationUnavailable, match="synchronous_standby_names is empty"):
        ledger.mint("alice", 1, "reward")
    with pytest.raises(ReplicationUnavailable):
        ledger.create_account("bob", 0)
    assert ledger.get_balance("alice") == Decimal(5)
    assert len(ledger.get_statement("alice")) == 1
    assert [a.account_id for a in ledger.list_accounts()] == ["alice"]


@pytest.mark.postgresql
def test_a_commit_past_the_deadline_is_in_doubt_and_never_hangs(pg_engine: Engine) -> None:
    """A one-statement write stuck past the deadline is ended: OutcomeUnknown, bounded.

    A missing synchronous standby needs a cluster (test_replication_cluster);
    here a row lock held elsewhere keeps the statement from finishing, which
    the deadline covers the same way (statement and commit are one).
    """
    ledger = Ledger(pg_engine, commit_deadline=0.3)
    ledger.create_account("alice", 10)
    ledger.create_account("bob", 0)
    with pg_engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM token_accounts WHERE account_id = 'bob' FOR UPDATE"))
        started = time.monotonic()
        with pytest.raises(OutcomeUnknown, match=r"deadline of 0\.3 s"):
            ledger.transfer("alice", "bob", 1, "pay", idempotency_key="stuck")
        assert 0.3 <= time.monotonic() - started < 3.0
        holder.rollback()
    # Ended before it committed: nothing was written; the key then writes once.
    assert ledger.get_balance("bob") == Decimal(0)
    entry = ledger.transfer("alice", "bob", 1, "pay", idempotency_key="stuck")
    assert ledger.transfer("alice", "bob", 1, "pay", idempotency_key="stuck") == entry
    assert ledger.get_balance("bob") == Decimal(1)
    assert ledger.verify().ok
    # The pool is healthy afterwards: the ended connection was not handed out again.
    for _ in range(5):
        ledger.transfer("alice", "bob", 1, "pay")
    assert ledger.get_balance("alice") == Decimal(4)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.postgresql
@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
@pytest.mark.parametrize("key", [None, "ended-1"])
def test_a_one_statement_write_ended_by_the_server_is_in_doubt_unless_keyed(
    pg_engine: Engine, driver: str, key: str | None
) -> None:
    """A session ended mid-statement (57P01) may have been ended in its commit.

    Ended while waiting for a synchronous standby, the entry is committed
    although the client sees an error; so an unkeyed write is never retried
    (``OutcomeUnknown``), and a keyed one is retried and written once.
    (psycopg 3 reports the 57P01; psycopg2 only a closed connection.)
    """
    engine = create_engine(with_driver(pg_engine.url.render_as_string(False), driver))
    try:
        _ended_mid_statement(engine, key)
    finally:
        engine.dispose()


def _ended_mid_statement(pg_engine: Engine, key: str | None) -> None:
    ledger = Ledger(pg_engine, commit_deadline=None)
    ledger.create_account("alice", 10)
    ledger.create_account("bob", 0)
    outcome: list[object] = []

    def write() -> None:
        try:
            outcome.append(ledger.transfer("alice", "bob", 1, "pay", idempotency_key=key))
        except Exception as exc:
            outcome.append(exc)

    with (
        pg_engine.connect() as holder,
        pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher,
    ):
        holder.execute(text("SELECT 1 FROM token_accounts WHERE account_id = 'bob' FOR UPDATE"))
        writer = threading.Thread(target=write)
        writer.start()
        pid = None
        for _ in range(200):
            # Its own connection, in autocommit: pg_stat_activity is a snapshot per transaction.
            pid = watcher.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%post_entry%' AND pid <> pg_backend_pid()"
                )
            ).scalar()
            if pid is not None:
                break
            time.sleep(0.02)
        assert pid is not None
        watcher.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        time.sleep(0.2)
        holder.rollback()
    writer.join(timeout=30)
    if key is None:
        assert len(outcome) == 1
        assert isinstance(outcome[0], OutcomeUnknown)
        assert ledger.get_balance("bob") == Decimal(0)  # ended before its commit, this time
    else:
        assert [type(o).__name__ for o in outcome] == ["LedgerEntry"]
        assert ledger.get_balance("bob") == Decimal(1)
        assert len(ledger.get_statement("bob")) == 1
