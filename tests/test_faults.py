"""Fault injection: what a crash, a restart, a dropped connection or a timeout leaves behind.

After every fault the suite checks the same things: no partial entry, books
that balance (the independent ``audit`` and ``Ledger.verify``), a caller that
got a typed ``LedgerError`` or a result from a bounded retry, exactly-once
writes under idempotency keys, and a ledger that keeps working afterwards.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from auditor import audit
from conftest import PostgresServer
from tokenledger import (
    AccountNotFound,
    ConcurrencyConflict,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    Ledger,
    StorageError,
    migrations,
)
from tokenledger.storage import create_engine
from workers import keyed_transfer_loop

STREAM_ACCOUNTS = ["acct-a", "acct-b", "acct-c"]
OPENING = 1_000_000  # tokens per account: the fault streams never overdraw


# -- helpers -------------------------------------------------------------------


def _wait_for(
    condition: Callable[[], bool], timeout: float, what: str, *, every: float = 0.02
) -> None:
    """Poll ``condition`` until it holds; fail (never hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def _check_books(engine: Engine) -> dict[str, Any]:
    """The independent replay and the library's own verification must both pass."""
    figures = audit(engine)
    report = Ledger(engine).verify()
    assert report.ok, report.problems[:5]
    return figures


def _rows_by_key(engine: Engine, pattern: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every journal row whose idempotency key matches ``pattern`` (SQL LIKE), by key."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as connection:
        for row in connection.execute(
            text(
                "SELECT idempotency_key, id, from_account, to_account, amount, reason "
                "FROM token_ledger WHERE idempotency_key LIKE :pattern"
            ),
            {"pattern": pattern},
        ):
            rows.setdefault(row[0], []).append(tuple(row[1:]))
    return rows


def _entry_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM token_ledger")).scalar_one())


def _units(amount: str) -> int:
    whole, _, fraction = amount.partition(".")
    return int(whole) * 1_000_000 + int(fraction.ljust(6, "0"))


def _keeps_working(engine: Engine, accounts: list[str], rounds: int = 5) -> None:
    """A few more transfers succeed and the books still balance."""
    ledger = Ledger(engine)
    before = _entry_count(engine)
    for i in range(rounds):
        ledger.transfer(accounts[i % 2], accounts[1 - i % 2], "0.5", "after the fault")
    assert _entry_count(engine) == before + rounds
    _check_books(engine)


# -- 1. a writer process killed with SIGKILL -------------------------------------


def _events(path: Path) -> list[dict[str, Any]]:
    """The worker's log, one event a line; a line cut short by the kill is ignored."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]  # the last piece is "" or a partial line
    return [json.loads(line) for line in lines]


def _done(path: Path) -> int:
    return sum(1 for event in _events(path) if event["ev"] == "done")


@pytest.mark.parametrize("mode", ["mid-stream", "holding-locks"])
def test_sigkill_of_a_writer_process(
    database_url: str, engine: Engine, backend: str, tmp_path: Path, mode: str
) -> None:
    """kill -9 a process that writes keyed transfers, while another one keeps writing.

    ``mid-stream``: killed at an arbitrary point of its stream of calls.
    ``holding-locks``: killed inside ``ledger.transaction()`` after two writes,
    while it holds the SQLite write lock / the PostgreSQL row locks of every
    account. Either way: the killed transaction leaves nothing, every call
    that returned is in the journal exactly once, a retry of the in-flight
    keys writes each once, the survivor and a fresh process can write at
    once, and the books balance.
    """
    ledger = Ledger(engine)
    for account_id in STREAM_ACCOUNTS:
        ledger.create_account(account_id, OPENING)
    victim_log, survivor_log = tmp_path / "victim.jsonl", tmp_path / "survivor.jsonl"
    stop = tmp_path / "stop"
    context = multiprocessing.get_context("spawn")
    victim = context.Process(
        target=keyed_transfer_loop,
        args=(database_url, STREAM_ACCOUNTS, str(victim_log), "victim", 1),
        kwargs={"hold_after": 15 if mode == "holding-locks" else None},
    )
    survivor = context.Process(
        target=keyed_transfer_loop,
        args=(database_url, STREAM_ACCOUNTS, str(survivor_log), "survivor", 2),
        kwargs={"stop_path": str(stop)},
    )
    victim.start()
    survivor.start()
    try:
        if mode == "mid-stream":
            _wait_for(lambda: _done(victim_log) >= 40, 60, "the victim's first 40 transfers")
        else:
            _wait_for(
                lambda: any(e["ev"] == "holding" for e in _events(victim_log)),
                60,
                "the victim to hold its locks",
            )
        os.kill(victim.pid or 0, signal.SIGKILL)
        victim.join(10)
        assert victim.exitcode == -signal.SIGKILL

        # Another process writes right away: no lock outlives its holder. The
        # short busy timeout (SQLite) and lock timeout (PostgreSQL) turn a
        # stuck lock into an error instead of a wait.
        quick = create_engine(
            database_url,
            **(
                {"busy_timeout": 2.0}
                if backend == "sqlite"
                else {"connect_args": {"options": "-c lock_timeout=2000"}}
            ),
        )
        try:
            Ledger(quick).transfer(STREAM_ACCOUNTS[0], STREAM_ACCOUNTS[1], 1, "right after")
        finally:
            quick.dispose()
        progress = _done(survivor_log)
        _wait_for(lambda: _done(survivor_log) >= progress + 20, 60, "the survivor to go on")
    finally:
        stop.touch()
        survivor.join(30)
        for process in (victim, survivor):
            if process.is_alive():
                process.kill()
                process.join(5)
    assert survivor.exitcode == 0

    if backend == "sqlite":
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
    _check_books(engine)

    for name, log in (("victim", victim_log), ("survivor", survivor_log)):
        events = _events(log)
        errors = [e for e in events if e["ev"] == "error"]
        assert not errors, errors[:3]
        started = {e["key"]: e["args"] for e in events if e["ev"] == "start"}
        returned = {e["key"]: e["id"] for e in events if e["ev"] == "done"}
        held = {e["key"] for e in events if e["ev"] == "start" and e.get("held")}
        rows = _rows_by_key(engine, f"{name}-%")
        assert set(rows) <= set(started), "an entry under a key nobody sent"
        for key, entry_id in returned.items():
            sender, receiver, amount, reason = started[key]
            assert rows[key] == [(entry_id, sender, receiver, _units(amount), reason)]
        in_flight = set(started) - set(returned) - held
        if name == "survivor":
            assert not in_flight
            assert not held
            continue
        assert len(in_flight) <= 1  # the one call the kill interrupted, if any
        if mode == "holding-locks":
            assert len(held) == 2
            assert not held & set(rows), "the killed transaction left an entry"
        assert len(returned) >= 15
        # The caller retries what it never saw return: each key ends up written once.
        for key in sorted(in_flight | held):
            earlier = rows.get(key, [])
            entry = ledger.transfer(*started[key], idempotency_key=key)
            again = ledger.transfer(*started[key], idempotency_key=key)
            assert entry.id == again.id
            if earlier:
                assert entry.id == earlier[0][0]
            assert len(_rows_by_key(engine, key)[key]) == 1

    # Nothing but the openings, the quick write and keyed transfers is in the journal.
    keyed = sum(len(v) for v in _rows_by_key(engine, "%").values())
    assert _entry_count(engine) == len(STREAM_ACCOUNTS) + 1 + keyed
    _keeps_working(engine, STREAM_ACCOUNTS)


# -- 2. the PostgreSQL server restarted, and crashed, under writers -------------

FAULT_CLUSTER = ("15", "tokenledger_fault")
_PG_TOOLS = ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters")


class ThrowawayCluster:
    """A PostgreSQL 15 cluster of its own, so that restarting it disturbs nobody."""

    def __init__(self) -> None:
        self.version, self.name = FAULT_CLUSTER
        self.port = _free_port()

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed: {done.stderr.strip()}", pytrace=False)
        return done

    def _ctl(self, *action: str) -> None:
        self._run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *action)

    def exists(self) -> bool:
        listing = self._run("pg_lsclusters", "--no-header").stdout.split("\n")
        return any(line.split()[:2] == [self.version, self.name] for line in listing if line)

    def drop(self) -> None:
        if self.exists():
            self._run("pg_dropcluster", "--stop", self.version, self.name)

    def create(self) -> None:
        self.drop()  # a leftover of an interrupted run
        self._run(
            "pg_createcluster", self.version, self.name, "--port", str(self.port),
            "--start-conf", "manual",
            "-o", "max_connections=40",
            "--", "--auth-local=trust", "--auth-host=trust",
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart")  # a clean (fast) shutdown, then a start

    def crash(self) -> None:
        self._ctl("stop", "-m", "immediate")  # no shutdown checkpoint: crash recovery at start

    def url(self, database: str) -> str:
        driver = os.environ.get("TOKENLEDGER_TEST_PG_DRIVER", "psycopg2")
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def fault_cluster() -> Iterator[ThrowawayCluster]:
    missing = [tool for tool in _PG_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs the postgresql-common tools, missing: {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("creating and restarting a throwaway PostgreSQL cluster needs root")
    if not Path(f"/usr/lib/postgresql/{FAULT_CLUSTER[0]}/bin/postgres").exists():
        pytest.skip(f"PostgreSQL {FAULT_CLUSTER[0]} server binaries are not installed")
    # Two test runs on one machine take turns instead of dropping each other's cluster.
    with open(Path(tempfile.gettempdir()) / "tokenledger_fault_cluster.lock", "w") as lock:
        _wait_for(lambda: _try_lock(lock.fileno()), 120, "another run's fault cluster", every=0.2)
        cluster = ThrowawayCluster()
        try:
            cluster.create()
            yield cluster
        finally:
            cluster.drop()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class _Writers:
    """Writer threads that record every outcome; none may hang or raise a non-ledger error."""

    KINDS = ("keyed", "keyed", "keyed", "plain", "batch", "block")

    def __init__(self, ledger: Ledger, accounts: list[str], threads: int) -> None:
        self.ledger = ledger
        self.accounts = accounts
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.plain_ok = 0
        self.plain_failed = 0
        self.keyed: dict[str, tuple[list[str], int | None]] = {}  # key -> (args, id or None)
        self.failures: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.slowest = 0.0
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def __enter__(self) -> _Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self, number: int) -> None:
        rng = random.Random(number)
        for step in itertools.count():
            if self.stop.is_set():
                return
            kind = rng.choice(self.KINDS)
            key = f"w{number}-{step}"
            args = [
                *rng.sample(self.accounts, 2),
                f"{rng.randint(1, 2_000_000) / 1_000_000:.6f}",
                kind,
            ]
            planned = {key: args} if kind == "keyed" else {}
            if kind in ("batch", "block"):
                second = [args[1], args[0], args[2], kind]
                planned = {f"{key}-0": args, f"{key}-1": second}
            started = time.monotonic()
            try:
                ids = self._call(kind, args, planned)
            except StorageError as exc:  # ConcurrencyConflict included
                with self.lock:
                    self.failures[type(exc).__name__] += 1
                    self.plain_failed += kind == "plain"
                    for planned_key, planned_args in planned.items():
                        self.keyed[planned_key] = (planned_args, None)
                time.sleep(0.02)  # the server is away: do not spin
            except BaseException as exc:
                with self.lock:
                    self.unexpected.append(f"{kind}: {type(exc).__module__}.{exc!r}")
            else:
                with self.lock:
                    self.ok += 1
                    self.plain_ok += kind == "plain"
                    for (planned_key, planned_args), entry_id in zip(
                        planned.items(), ids, strict=True
                    ):
                        self.keyed[planned_key] = (planned_args, entry_id)
            with self.lock:
                self.slowest = max(self.slowest, time.monotonic() - started)

    def _call(self, kind: str, args: list[str], planned: dict[str, list[str]]) -> list[int]:
        ledger = self.ledger
        if kind == "plain":
            ledger.transfer(*args)
            return []
        if kind == "keyed":
            (key,) = planned
            return [ledger.transfer(*args, idempotency_key=key).id]
        if kind == "batch":
            items = [
                {
                    "from_id": a[0],
                    "to_id": a[1],
                    "amount": a[2],
                    "reason": a[3],
                    "idempotency_key": k,
                }
                for k, a in planned.items()
            ]
            return [entry.id for entry in ledger.transfer_many(items)]
        with ledger.transaction() as tx:
            entries = [tx.transfer(*a, idempotency_key=k) for k, a in planned.items()]
        return [entry.id for entry in entries]

    def progress(self) -> int:
        with self.lock:
            return self.ok


@pytest.mark.postgresql
@pytest.mark.pg_restart
def test_server_restart_and_crash_under_writers(fault_cluster: ThrowawayCluster) -> None:
    """Writers keep running through a clean restart and an immediate-mode stop (a crash).

    Every call returns or raises ``StorageError``/``ConcurrencyConflict`` within
    a bound; keyed calls that failed are retried afterwards and each key ends
    up written exactly once; unkeyed calls that failed with an unknown outcome
    are at most once in the journal; the books balance and the ledger works.
    """
    admin = create_engine(fault_cluster.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text('CREATE DATABASE "tokenledger_fault"'))
    admin.dispose()
    url = fault_cluster.url("tokenledger_fault")
    migrations.upgrade(url)
    engine = create_engine(
        url, pool_size=8, max_overflow=0, pool_timeout=10, connect_args={"connect_timeout": 5}
    )
    accounts = [f"agent-{i}" for i in range(6)]
    ledger = Ledger(engine)
    for account_id in accounts:
        ledger.create_account(account_id, OPENING)
    try:
        with _Writers(ledger, accounts, threads=6) as writers:
            _wait_for(lambda: writers.progress() >= 100, 20, "writers to warm up")
            for fault in (fault_cluster.restart, fault_cluster.crash):
                fault()
                if fault == fault_cluster.crash:
                    time.sleep(0.5)  # the server stays down for a moment: refused connections
                    fault_cluster.start()
                reached = writers.progress()
                _wait_for(
                    lambda reached=reached: writers.progress() >= reached + 100,
                    20,
                    f"writers to recover after {fault.__name__}",
                )
        assert not any(thread.is_alive() for thread in writers.threads), "a writer hangs"
        assert not writers.unexpected, sorted(set(writers.unexpected))[:8]
        assert writers.failures, "the faults never reached a writer"
        assert writers.slowest < 20

        # Retry what failed (same key, same arguments); check what returned.
        retried = 0
        for key, (args, entry_id) in sorted(writers.keyed.items()):
            answer = ledger.transfer(*args, idempotency_key=key).id
            assert answer == (entry_id or answer)  # a key that returned keeps its entry
            retried += entry_id is None
            writers.keyed[key] = (args, answer)
        assert retried > 0, "no keyed write failed: the retry path went untested"
        rows = _rows_by_key(engine, "w%")
        assert set(rows) == set(writers.keyed)
        for key, (args, entry_id) in writers.keyed.items():
            sender, receiver, amount, reason = args
            assert rows[key] == [(entry_id, sender, receiver, _units(amount), reason)], key

        with engine.connect() as connection:
            unkeyed = connection.execute(
                text("SELECT count(*) FROM token_ledger WHERE idempotency_key IS NULL")
            ).scalar_one()
        plain = unkeyed - len(accounts)  # less the opening mints
        assert writers.plain_ok <= plain <= writers.plain_ok + writers.plain_failed
        _check_books(engine)
        _keeps_working(engine, accounts)
    finally:
        engine.dispose()


@pytest.mark.parametrize("database", ["postgresql+psycopg2", "postgresql+psycopg", "sqlite"])
@pytest.mark.parametrize(
    "operation", ["transfer", "mint", "transfer_many", "create_account", "block", "get_balance"]
)
def test_an_unreachable_database_is_a_storage_error(
    tmp_path: Path, database: str, operation: str
) -> None:
    """No server listens (or the SQLite file cannot be opened): a StorageError, on every path.

    The one-statement hot path (transfer, mint) included: never the driver's own error.
    """
    if database == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'no-such-directory' / 'ledger.db'}")
    else:  # a free port: nobody listens there
        pytest.importorskip(database.split("+")[1])
        engine = create_engine(f"{database}://postgres@127.0.0.1:{_free_port()}/nowhere")
    ledger = Ledger(engine)
    try:
        with pytest.raises(StorageError):  # noqa: PT012
            if operation == "transfer":
                ledger.transfer("alice", "bob", 1, "r", idempotency_key="k")
            elif operation == "mint":
                ledger.mint("alice", 1, "r")
            elif operation == "transfer_many":
                ledger.transfer_many([{"from_id": "a", "to_id": "b", "amount": 1, "reason": "r"}])
            elif operation == "create_account":
                ledger.create_account("alice", 1)
            elif operation == "block":
                with ledger.transaction() as tx:
                    tx.transfer("alice", "bob", 1, "r")
            else:
                ledger.get_balance("alice")
    finally:
        engine.dispose()


# -- 3. a connection dropped with pg_terminate_backend -------------------------

_TABLES = (
    "token_accounts",
    "token_ledger",
    "token_stakes",
    "token_chain",
    "token_chain_head",
    "token_checkpoints",
)


def _snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the ledger's tables: equal snapshots mean nothing was written."""
    with engine.connect() as connection:
        return {
            table: sorted(
                (tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}"))),
                key=repr,
            )
            for table in _TABLES
        }


def _backends(admin: Engine, application: str, state: str) -> list[int]:
    with admin.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = :app "
                    "AND state = :state"
                ),
                {"app": application, "state": state},
            ).scalars()
        )


def _terminate(admin: Engine, pid: int) -> None:
    """Kill one server backend and wait until it is gone."""
    with admin.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()

    def gone() -> bool:
        with admin.connect() as connection:
            return not connection.execute(
                text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).first()

    _wait_for(gone, 10, f"backend {pid} to exit")


@dataclass
class Named:
    """An engine whose server backends can be found by their application name."""

    engine: Engine
    application: str
    observer: Engine  # another pool on the same database, for checking from outside


@pytest.fixture
def named(pg_engine: Engine, postgres_url: str) -> Iterator[Named]:
    """A one-connection pool on emptied tables, so its backend is easy to find and kill."""
    application = f"tokenledger-fault-{uuid.uuid4().hex[:12]}"
    engine = create_engine(
        postgres_url,
        pool_size=1,
        max_overflow=0,
        connect_args={"application_name": application},
    )
    yield Named(engine, application, pg_engine)
    engine.dispose()


@pytest.mark.postgresql
@pytest.mark.parametrize("then", ["next-call", "commit", "error-swallowed"])
def test_backend_terminated_inside_ledger_transaction(
    named: Named, postgres_server: PostgresServer, then: str
) -> None:
    """The transaction's backend is killed mid-block: a StorageError, and nothing committed.

    ``next-call``: the next call in the block fails. ``commit``: the block
    ends normally and its COMMIT fails. ``error-swallowed``: the caller
    catches the next call's error and ends the block normally anyway.
    """
    admin, application, engine = postgres_server.admin, named.application, named.engine
    ledger = Ledger(engine)
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    before = _snapshot(named.observer)

    with pytest.raises(StorageError), ledger.transaction() as tx:  # noqa: PT012
        tx.transfer("alice", "bob", 10, "in the block", idempotency_key="block-1")
        tx.mint("bob", 5, "in the block")
        (pid,) = _backends(admin, application, "idle in transaction")
        _terminate(admin, pid)
        if then == "next-call":
            tx.transfer("bob", "alice", 1, "after the kill")
        elif then == "error-swallowed":
            with pytest.raises(StorageError):
                tx.transfer("bob", "alice", 1, "after the kill")

    assert _snapshot(named.observer) == before
    # The one pooled connection died; the ledger gets a new one and goes on.
    entry = ledger.transfer("alice", "bob", 10, "in the block", idempotency_key="block-1")
    assert ledger.transfer("alice", "bob", 10, "in the block", idempotency_key="block-1") == entry
    assert ledger.get_balance("bob") == 10
    _check_books(named.observer)
    _keeps_working(engine, ["alice", "bob"])


@pytest.mark.postgresql
def test_backend_terminated_inside_a_callers_transaction(
    named: Named, postgres_server: PostgresServer
) -> None:
    """The host's connection is killed between two ledger calls in the host's transaction."""
    engine = named.engine
    ledger = Ledger(engine)
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    before = _snapshot(named.observer)
    with engine.connect() as connection:
        connection.begin()
        inside = ledger.using(connection)
        inside.transfer("alice", "bob", 7, "host step 1")
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        _terminate(postgres_server.admin, pid)
        with pytest.raises(StorageError):
            inside.transfer("alice", "bob", 3, "host step 2")
        connection.rollback()
        assert _snapshot(named.observer) == before
        # The same Connection reconnects for the host's next transaction.
        with connection.begin():
            ledger.using(connection).transfer("alice", "bob", 3, "host, again")
    assert ledger.get_balance("bob") == 3
    _check_books(named.observer)
    _keeps_working(engine, ["alice", "bob"])


@pytest.mark.postgresql
@pytest.mark.parametrize(
    "operation", ["transfer", "keyed-transfer", "mint", "transfer_many", "create_account"]
)
def test_a_write_on_a_pooled_connection_killed_while_idle_is_retried(
    named: Named, postgres_server: PostgresServer, operation: str
) -> None:
    """The pool hands out a connection whose backend is gone: the write is retried, once."""
    admin, application, engine = postgres_server.admin, named.application, named.engine
    ledger = Ledger(engine)
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    (pid,) = _backends(admin, application, "idle")  # the pool's one connection, idle
    _terminate(admin, pid)
    entries = _entry_count(named.observer)

    if operation == "transfer":
        ledger.transfer("alice", "bob", 4, "after the kill")
    elif operation == "keyed-transfer":
        entry = ledger.transfer("alice", "bob", 4, "after the kill", idempotency_key="idle-1")
        assert (
            ledger.transfer("alice", "bob", 4, "after the kill", idempotency_key="idle-1") == entry
        )
    elif operation == "mint":
        ledger.mint("bob", 4, "after the kill")
    elif operation == "transfer_many":
        ledger.transfer_many([{"from_id": "alice", "to_id": "bob", "amount": 4, "reason": "x"}])
    else:
        ledger.create_account("carol", 4)
    assert _entry_count(named.observer) == entries + 1  # written exactly once
    assert _backends(admin, application, "idle") != [pid]  # on a new connection
    assert ledger.get_balance("bob") == 4 * (operation != "create_account")
    _check_books(named.observer)
    _keeps_working(engine, ["alice", "bob"])


# -- 4. a statement or lock timeout while another transaction holds a row --------


@pytest.mark.postgresql
@pytest.mark.parametrize("setting", ["statement_timeout=300", "lock_timeout=150"])
@pytest.mark.parametrize("operation", ["transfer", "transfer_many", "block", "caller-transaction"])
def test_a_write_blocked_by_a_row_lock_times_out_cleanly(
    pg_engine: Engine, postgres_url: str, setting: str, operation: str
) -> None:
    """A host transaction holds alice's row; the ledger's timeout turns the wait into an error.

    The error is typed (``StorageError``; ``ConcurrencyConflict`` for a lock
    timeout, which is retried a bounded number of times first), nothing is
    written, and once the blocker commits the same call succeeds once.
    """
    Ledger(pg_engine).create_account("alice", 100)
    Ledger(pg_engine).create_account("bob", 0)
    Ledger(pg_engine).create_account("carol", 50)
    timed = create_engine(postgres_url, connect_args={"options": f"-c {setting}"})
    ledger = Ledger(timed)

    def attempt() -> None:
        args = ("alice", "bob", 10, "blocked", None, None, None)
        if operation == "transfer":
            ledger.transfer(*args, idempotency_key="timeout-1")
        elif operation == "transfer_many":
            ledger.transfer_many(
                [
                    {"from_id": "carol", "to_id": "bob", "amount": 1, "reason": "free"},
                    {"from_id": "alice", "to_id": "bob", "amount": 10, "reason": "blocked"},
                ]
            )
        elif operation == "block":
            with ledger.transaction() as tx:
                tx.transfer("carol", "bob", 1, "free")  # not blocked, rolled back with the rest
                tx.transfer(*args, idempotency_key="timeout-1")
        else:
            with timed.connect() as connection, connection.begin():
                inside = ledger.using(connection)
                inside.transfer("carol", "bob", 1, "free")
                with pytest.raises(StorageError):
                    inside.transfer(*args, idempotency_key="timeout-1")
                # The refused call rolled back to its savepoint: the host goes on.
                inside.transfer("carol", "bob", 2, "free, after the timeout")
                raise _Blocked

    try:
        before = _snapshot(pg_engine)
        with pg_engine.connect() as blocker:
            blocker.begin()
            blocker.execute(
                text("SELECT 1 FROM token_accounts WHERE account_id = 'alice' FOR UPDATE")
            )
            started = time.monotonic()
            expected = _Blocked if operation == "caller-transaction" else StorageError
            with pytest.raises(expected) as caught:
                attempt()
            assert time.monotonic() - started < 10  # bounded: no hang
            if setting.startswith("lock_timeout") and expected is StorageError:
                assert isinstance(caught.value, ConcurrencyConflict)
            assert _snapshot(pg_engine) == before  # read while the row is still locked
            blocker.commit()

        if operation == "caller-transaction":
            with timed.connect() as connection, connection.begin():
                inside = ledger.using(connection)
                inside.transfer("carol", "bob", 2, "free, after the timeout")
                inside.transfer("alice", "bob", 10, "blocked", idempotency_key="timeout-1")
            expected_entries = 2
        else:
            attempt()
            expected_entries = 2 if operation in ("transfer_many", "block") else 1
        assert _entry_count(pg_engine) == 2 + expected_entries  # bob opened with 0: no entry
        assert Ledger(pg_engine).get_balance("alice") == 90
        _check_books(pg_engine)
        _keeps_working(pg_engine, ["alice", "bob"])
    finally:
        timed.dispose()


class _Blocked(Exception):
    """The host gives up its transaction after the ledger's timeout."""


# -- 5. the caller's own failures in the middle of a transaction (both backends) ---


class _Abort(Exception):
    pass


class _Cancelled(BaseException):
    """Like asyncio.CancelledError or KeyboardInterrupt: not an Exception."""


@pytest.fixture
def funded(engine: Engine) -> Ledger:
    ledger = Ledger(engine)
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    return ledger


@pytest.mark.parametrize("owner", ["session", "connection"])
def test_an_exception_between_two_hot_path_writes_of_a_caller_transaction(
    funded: Ledger, engine: Engine, owner: str
) -> None:
    before = _snapshot(engine)
    with pytest.raises(_Abort):  # noqa: PT012
        if owner == "session":
            with Session(engine) as session, session.begin():
                funded.using(session).transfer("alice", "bob", 10, "first")
                funded.using(session).mint("bob", 1, "second")
                raise _Abort
        else:
            with engine.connect() as connection, connection.begin():
                funded.using(connection).transfer("alice", "bob", 10, "first")
                funded.using(connection).burn("alice", 1, "second")
                raise _Abort
    assert _snapshot(engine) == before
    _keeps_working(engine, ["alice", "bob"])


def test_rejected_calls_between_writes_of_a_caller_session_leave_only_the_good_ones(
    funded: Ledger, engine: Engine
) -> None:
    funded.transfer("alice", "bob", 1, "keyed earlier", idempotency_key="k-1")
    entries = _entry_count(engine)
    with Session(engine) as session:
        inside = funded.using(session)
        inside.transfer("alice", "bob", 10, "good 1")
        with pytest.raises(InsufficientFunds):
            inside.transfer("bob", "alice", 1_000, "too much")
        with pytest.raises(AccountNotFound):
            inside.transfer("alice", "nobody", 1, "unknown")
        with pytest.raises(IdempotencyConflict):
            inside.transfer("alice", "bob", 2, "keyed earlier", idempotency_key="k-1")
        with pytest.raises(InvalidAmount):
            inside.mint("bob", "0.0000001", "too fine")
        inside.transfer("bob", "alice", 4, "good 2")
        session.commit()
    assert _entry_count(engine) == entries + 2
    assert funded.get_balance("alice") == 93
    assert funded.get_balance("bob") == 7
    _check_books(engine)


def test_a_base_exception_in_a_ledger_transaction_rolls_back_every_kind_of_write(
    funded: Ledger, engine: Engine
) -> None:
    before = _snapshot(engine)
    with pytest.raises(_Cancelled), funded.transaction() as tx:  # noqa: PT012
        tx.transfer("alice", "bob", 10, "hot path", idempotency_key="cancel-1")
        tx.transfer_many([{"from_id": "alice", "to_id": "bob", "amount": 5, "reason": "batch"}])
        tx.stake("alice", 20, "position")
        tx.create_account("carol", 3)
        raise _Cancelled
    assert _snapshot(engine) == before
    funded.transfer("alice", "bob", 10, "hot path", idempotency_key="cancel-1")  # the key is free
    assert _entry_count(engine) == 2  # alice's opening and this
    _keeps_working(engine, ["alice", "bob"])


def test_a_failed_host_statement_mid_transaction(
    funded: Ledger, engine: Engine, backend: str
) -> None:
    """The host's own SQL fails between ledger calls; the ledger never leaks a driver error.

    On PostgreSQL the failed statement aborts the transaction, so the next
    ledger call is a StorageError; SQLite keeps the transaction going. Either
    way the host's rollback leaves nothing behind.
    """
    before = _snapshot(engine)
    with engine.connect() as connection:
        connection.begin()
        funded.using(connection).transfer("alice", "bob", 10, "before the host fails")
        with pytest.raises(DBAPIError):
            connection.execute(text("INSERT INTO no_such_host_table VALUES (1)"))
        if backend == "postgresql":
            with pytest.raises(StorageError):
                funded.using(connection).transfer("alice", "bob", 5, "after the host failed")
        else:
            funded.using(connection).transfer("alice", "bob", 5, "after the host failed")
        connection.rollback()
    assert _snapshot(engine) == before
    _keeps_working(engine, ["alice", "bob"])
