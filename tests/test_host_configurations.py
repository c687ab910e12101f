"""Correct under every configuration a host can give the ledger.

The matrix: isolation level x who owns the transaction x backend x driver,
with concurrent writers and a concurrent sealer, on the host's own engine
(SQLAlchemy's ``create_engine``, not the ledger's). Each cell asserts the
exact entry count, conservation (the independent auditor), ``verify().ok``,
a chain with no committed entry left out after a final seal, and that the
host's pooled connections came back with the settings they had.

Then the reproductions of the 2026-12-01 review (``../shared/reviews``):
atomicity on an AUTOCOMMIT engine, the sealer under REPEATABLE READ, a
caller's snapshot that cannot see a concurrent key, the host's engine never
disposed, many processes opening a fresh SQLite file.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import create_engine as sqlalchemy_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from auditor import audit
from conftest import with_driver
from tokenledger import (
    ConcurrencyConflict,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    Ledger,
    LedgerError,
    StakeClosed,
    Transfer,
    migrations,
    token_ledger,
)
from tokenledger.storage.repository import chain as chain_repository

PG_ISOLATIONS = ("READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE", "AUTOCOMMIT")
SQLITE_ISOLATIONS = ("SERIALIZABLE", "READ UNCOMMITTED", "AUTOCOMMIT")
ACCOUNTS = [f"agent-{i}" for i in range(5)]
WORKERS = 4
OPERATIONS = 24


def host_engine(url: str, isolation: str) -> Engine:
    """The host's engine: plain SQLAlchemy, with the host's isolation level."""
    if url.startswith("sqlite"):
        return sqlalchemy_engine(url, isolation_level=isolation, connect_args={"timeout": 30})
    return sqlalchemy_engine(url, isolation_level=isolation, pool_size=WORKERS + 2)


def matrix() -> Iterator[Any]:
    for isolation in PG_ISOLATIONS:
        for driver in ("psycopg2", "psycopg"):
            for owner in ("ledger", "caller"):
                if isolation == "AUTOCOMMIT" and owner == "caller":
                    continue  # refused: see test_using_refuses_a_connection_in_autocommit
                yield pytest.param(
                    "postgresql", driver, isolation, owner, marks=pytest.mark.postgresql
                )
    for isolation in SQLITE_ISOLATIONS:
        for owner in ("ledger", "caller"):
            if isolation == "AUTOCOMMIT" and owner == "caller":
                continue
            yield pytest.param("sqlite", "pysqlite", isolation, owner, marks=pytest.mark.sqlite)


@pytest.fixture
def matrix_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    backend, driver = (
        request.node.callspec.params["backend"],
        request.node.callspec.params["driver"],
    )
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "ledger.db"
        path.write_bytes(template.read_bytes())
        yield f"sqlite:///{path}"
        return
    server = request.getfixturevalue("postgres_server")
    url = server.create_database("tokenledger_matrix")
    migrations.upgrade(url)
    yield with_driver(url, driver)
    server.drop_database(url)


class Books:
    """What the workers did: entries the ledger must hold, counted from its answers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries = 0

    def add(self, n: int) -> None:
        with self.lock:
            self.entries += n


def one_operation(ledger: Ledger, rng: random.Random, tag: str) -> int:
    """A random write; how many entries it wrote (0 when refused)."""
    a, b = rng.sample(ACCOUNTS, 2)
    roll = rng.random()
    try:
        if roll < 0.3:
            ledger.transfer(a, b, rng.randint(1, 40), "pay", idempotency_key=f"{tag}-t")
            return 1
        if roll < 0.4:
            ledger.mint(a, 3, "reward")
            return 1
        if roll < 0.5:
            ledger.burn(a, 1, "fee")
            return 1
        if roll < 0.65:
            ledger.transfer_many([Transfer(a, b, 2, "x"), Transfer(b, a, 1, "y")])
            return 2
        if roll < 0.85:
            stake = ledger.stake(a, 10, "bid", idempotency_key=f"{tag}-s")
            if rng.random() < 0.5:
                ledger.settle(stake.id, b, "won", amount=4)  # 4 to b, 6 back: two legs
            else:
                ledger.release(stake.id, "lost", fee=1)  # 9 back, 1 burned: two legs
            return 3
        entry = ledger.transfer(a, b, 1, "to undo")
        ledger.reverse(entry.id, "undone")
        return 2
    except InsufficientFunds:
        return 0


@contextmanager
def callers_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection, connection.begin():
        yield connection


def run_as_caller(engine: Engine, ledger: Ledger, work: Callable[[Ledger], int]) -> int:
    """``work`` in a transaction of the host's; retried whole on a conflict, as a host must.

    A conflict is the ledger's ``ConcurrencyConflict`` inside the block, or a
    serialization failure of the host's own COMMIT (SERIALIZABLE).
    """
    for _ in range(50):
        try:
            with callers_transaction(engine) as connection:
                return work(ledger.using(connection))
        except ConcurrencyConflict:
            continue
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
            if code != "40001":
                raise
    pytest.fail("a caller's transaction conflicted 50 times in a row")


@pytest.mark.parametrize(("backend", "driver", "isolation", "owner"), list(matrix()))
def test_concurrent_writers_and_a_sealer_on_every_configuration(
    matrix_url: str, backend: str, driver: str, isolation: str, owner: str
) -> None:
    engine = host_engine(matrix_url, isolation)
    ledger = Ledger(engine)
    books = Books()
    try:
        for account in ACCOUNTS:
            ledger.create_account(account, 500)
        books.add(len(ACCOUNTS))
        stop = threading.Event()
        failures: list[BaseException] = []

        def writer(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for n in range(OPERATIONS):
                    tag = f"{seed}-{n}"
                    if owner == "ledger":
                        books.add(one_operation(ledger, rng, tag))
                    else:
                        state = rng.getstate()

                        def work(bound: Ledger, state: Any = state, tag: str = tag) -> int:
                            rng.setstate(state)  # a retried block makes the same calls
                            return one_operation(bound, rng, tag)

                        books.add(run_as_caller(engine, ledger, work))
            except BaseException as exc:
                failures.append(exc)

        def sealer() -> None:
            try:
                while not stop.is_set():
                    if owner == "ledger":
                        ledger.seal()
                    else:
                        run_as_caller(engine, ledger, lambda bound: bound.seal())
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(WORKERS)]
        seal_thread = threading.Thread(target=sealer)
        seal_thread.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        seal_thread.join()
        assert not failures, failures
        ledger.seal()
        report = ledger.verify()
        assert report.ok, report.problems[:5]
        assert report.counts["entries"] == books.entries
        assert report.counts["sealed"] == books.entries  # nothing committed left out
        assert report.counts["unsealed_pending"] == 0
        figures = audit(engine)
        assert figures["supply"] == int(ledger.get_total_supply() * 10**6)
        assert_connections_as_configured(engine, isolation)
    finally:
        engine.dispose()


def assert_connections_as_configured(engine: Engine, isolation: str) -> None:
    """Every pooled connection the ledger used still has the host's settings."""
    held = []
    try:
        for _ in range(min(engine.pool.size(), WORKERS + 2)):
            connection = engine.connect()
            held.append(connection)
            driver = connection.connection.driver_connection
            if engine.dialect.name == "sqlite":
                expect_none = isolation == "AUTOCOMMIT"
                assert (driver.isolation_level is None) is expect_none  # type: ignore[union-attr]
                if not expect_none:
                    assert connection.get_isolation_level() == isolation
                continue
            assert bool(driver.autocommit) is (isolation == "AUTOCOMMIT")  # type: ignore[union-attr]
            if isolation != "AUTOCOMMIT":
                assert connection.get_isolation_level() == isolation
    finally:
        for connection in held:
            connection.close()


# -- using() and a caller in autocommit ------------------------------------------


def test_using_refuses_a_connection_in_autocommit(
    database_url: str, snapshot: Callable[[], object], ledger: Ledger
) -> None:
    ledger.create_account("alice", 10)
    before = snapshot()
    engine = sqlalchemy_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection, pytest.raises(InvalidArgument, match="autocommit"):
            ledger.using(connection).mint("alice", 1, "x")
        plain = sqlalchemy_engine(database_url)
        try:
            with plain.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT")
                with pytest.raises(InvalidArgument, match="autocommit"):
                    ledger.using(connection)
            with Session(engine) as session, pytest.raises(InvalidArgument, match="autocommit"):
                ledger.using(session).mint("alice", 1, "x")
        finally:
            plain.dispose()
    finally:
        engine.dispose()
    assert snapshot() == before


def test_a_session_kept_across_commits_follows_its_connection(
    engine: Engine, ledger: Ledger
) -> None:
    ledger.create_account("alice", 10)
    ledger.create_account("bob", 0)
    with Session(engine) as session:
        bound = ledger.using(session)
        bound.transfer("alice", "bob", 1, "first")
        session.commit()
        bound.transfer("alice", "bob", 2, "second")  # the session's next transaction
        session.commit()
    assert ledger.get_balance("bob") == 3


# -- H1: atomicity on an AUTOCOMMIT engine ---------------------------------------


@pytest.mark.parametrize("isolation", [None, "AUTOCOMMIT"])
def test_a_crash_between_append_and_save_leaves_nothing_on_any_engine(
    database_url: str, isolation: str | None, snapshot: Callable[[], object], ledger: Ledger
) -> None:
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    stake = ledger.stake("alice", 10, "bid")
    original = ledger.transfer("alice", "bob", 5, "x")
    options = {} if isolation is None else {"isolation_level": isolation}
    engine = sqlalchemy_engine(database_url, **options)

    @event.listens_for(engine, "before_cursor_execute")
    def crash_at_save(*args: Any) -> None:
        statement = args[2]
        if statement.lstrip().upper().startswith("UPDATE TOKEN_ACCOUNTS"):
            raise RuntimeError("crash between append and save")

    host = Ledger(engine)
    before = snapshot()
    try:
        for call in (
            lambda: host.transfer_many([Transfer("alice", "bob", 1, "a")] * 3),
            lambda: host.stake("alice", 1, "bid"),
            lambda: host.settle(stake.id, "bob", "won"),
            lambda: host.reverse(original.id, "undo"),
            lambda: host.create_account("carol", 5),
        ):
            with pytest.raises(RuntimeError, match="crash"):
                call()
            assert snapshot() == before
        if engine.dialect.name == "postgresql":
            # The one-entry server call is a single statement: atomic by itself.
            host.transfer("alice", "bob", 1, "hot")
            with engine.connect() as connection:
                autocommit = bool(connection.connection.driver_connection.autocommit)  # type: ignore[union-attr]
            assert autocommit is (isolation == "AUTOCOMMIT")
    finally:
        engine.dispose()


# -- H2: the sealer and a snapshot that cannot see a commit ----------------------


@pytest.mark.postgresql
@pytest.mark.parametrize("owner", ["ledger", "caller"])
def test_a_commit_landing_behind_the_sealers_snapshot_is_never_skipped(
    postgres_url: str, pg_engine: Engine, owner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's probe p3: writer T commits between the sealer's snapshot and its next step."""
    engine = sqlalchemy_engine(postgres_url, isolation_level="REPEATABLE READ")
    ledger = Ledger(engine)
    try:
        ledger.create_account("alice", 100)
        ledger.create_account("bob", 0)
        ledger.seal()
        writer = engine.connect()
        writer.begin()
        ledger.using(writer).transfer("alice", "bob", 1, "slow writer")  # T holds an xid
        ledger.create_account("carol", 1)  # a later transaction commits: T is in the xip
        original = chain_repository._parse_snapshot

        def commit_in_between(snapshot: str) -> tuple[int, int, list[int]]:
            if writer.in_transaction():
                writer.commit()  # T ends after the sealer's snapshot was taken
            return original(snapshot)

        monkeypatch.setattr(chain_repository, "_parse_snapshot", commit_in_between)
        if owner == "ledger":
            ledger.seal()
        else:
            with callers_transaction(engine) as connection:
                ledger.using(connection).seal()
        monkeypatch.setattr(chain_repository, "_parse_snapshot", original)
        writer.close()
        ledger.mint("bob", 1, "later")
        ledger.seal()
        report = Ledger(pg_engine).verify()
        assert report.ok, report.problems
        # alice's opening mint, T's transfer, carol's opening mint, the later mint
        assert report.counts["sealed"] == report.counts["entries"] == 4
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_a_callers_snapshot_that_cannot_see_a_concurrent_key_is_a_conflict(
    postgres_url: str, pg_engine: Engine
) -> None:
    """A replay must never raise IndexError: the key's entry exists but is invisible here.

    Another transaction commits the same key on other accounts after this
    transaction's snapshot: the insert meets the unique key, and the replay
    cannot read the winner. A retried transaction then sees it and answers.
    """
    ledger = Ledger(pg_engine)
    for account, opening in (("alice", 100), ("bob", 0), ("carol", 100), ("dave", 0)):
        ledger.create_account(account, opening)
    engine = sqlalchemy_engine(postgres_url, isolation_level="REPEATABLE READ")
    try:
        with callers_transaction(engine) as connection:
            ledger.using(connection).get_balance("alice")  # the snapshot is taken here
            ledger.transfer("carol", "dave", 1, "elsewhere", idempotency_key="shared")
            with pytest.raises(ConcurrencyConflict, match="snapshot"):
                ledger.using(connection).transfer("alice", "bob", 1, "x", idempotency_key="shared")
        with callers_transaction(engine) as connection:  # retried, it sees the first entry
            with pytest.raises(IdempotencyConflict):
                ledger.using(connection).transfer("alice", "bob", 1, "x", idempotency_key="shared")
            again = ledger.using(connection).transfer(
                "carol", "dave", 1, "elsewhere", idempotency_key="shared"
            )
        assert again.from_account == "carol"
        assert (ledger.get_balance("bob"), ledger.get_balance("dave")) == (0, 1)
        # The same accounts changed after the snapshot: the row lock says so first.
        with callers_transaction(engine) as connection:
            ledger.using(connection).get_balance("alice")
            ledger.transfer("alice", "bob", 1, "first", idempotency_key="other")
            with pytest.raises(ConcurrencyConflict):
                ledger.using(connection).transfer("alice", "bob", 1, "y")
    finally:
        engine.dispose()


@pytest.mark.postgresql
@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_ledger_owned_writes_on_a_strict_engine_wait_for_locks_instead_of_failing(
    postgres_url: str, pg_engine: Engine, isolation: str
) -> None:
    """On a REPEATABLE READ or SERIALIZABLE engine the ledger still writes at READ COMMITTED."""
    engine = sqlalchemy_engine(postgres_url, isolation_level=isolation, pool_size=12)
    ledger = Ledger(engine)
    try:
        ledger.create_account("hot-a", 10_000)
        ledger.create_account("hot-b", 10_000)
        errors: list[LedgerError] = []

        def hammer(n: int) -> None:
            for i in range(30):
                try:
                    if i % 3 == 0:
                        stake = ledger.stake("hot-a", 1, "bid")
                        ledger.release(stake.id, "back")
                    elif n % 2:
                        ledger.transfer_many([Transfer("hot-a", "hot-b", 1, "x")])
                    else:
                        ledger.transfer("hot-b", "hot-a", 1, "y")
                except (ConcurrencyConflict, StakeClosed) as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert ledger.get_total_supply() == Decimal(20_000)
        audit(engine)
    finally:
        engine.dispose()


# -- M4: the host's engine is the host's -------------------------------------------


def test_the_ledger_never_disposes_an_engine_it_did_not_create(engine: Engine) -> None:
    closed: list[int] = []
    event.listen(engine, "close", lambda *_: closed.append(1))
    with engine.connect():
        pass  # one pooled connection
    pool = engine.pool
    Ledger(engine).dispose()
    token_ledger.configure(engine)
    token_ledger.configure(engine)  # a second configure forgets the first, keeps the engine
    token_ledger.reset()
    assert engine.pool is pool
    assert closed == []
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar_one() == 1


def test_a_ledger_from_a_url_disposes_its_own_engine(tmp_path: Path) -> None:
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'own.db'}")
    ledger.create_account("alice", 1)
    engine = ledger.engine
    assert engine is not None
    pool = engine.pool
    ledger.dispose()
    assert engine.pool is not pool  # SQLAlchemy's dispose() replaces the pool


# -- M3: many processes open one fresh SQLite file -------------------------------


def _open_and_write(url: str, name: str, results: Any) -> None:
    try:
        ledger = token_ledger.configure(url)
        ledger.create_account(name, 1)
        results.put("ok")
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")


@pytest.mark.sqlite
def test_many_processes_open_a_fresh_sqlite_file_at_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    for trial in range(3):
        url = f"sqlite:///{tmp_path / f'fresh-{trial}.db'}"
        results = context.Queue()
        processes = [
            context.Process(target=_open_and_write, args=(url, f"p{n}", results)) for n in range(8)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        assert outcomes == ["ok"] * len(processes)
        engine = sqlalchemy_engine(url)
        try:
            with engine.connect() as connection:
                versions = connection.execute(
                    text(f"SELECT version_num FROM {migrations.VERSION_TABLE}")
                ).scalars()
                assert list(versions) == [migrations.head()]  # migrated once, to head
            ledger = Ledger(engine)
            assert len(ledger.list_accounts()) == len(processes)
            assert ledger.verify().ok
        finally:
            engine.dispose()


# -- M7: nothing escapes the error tree -------------------------------------------


def test_bad_input_and_faults_stay_inside_the_error_tree(
    ledger: Ledger, engine: Engine, snapshot: Callable[[], object]
) -> None:
    from datetime import datetime  # noqa: PLC0415

    ledger.create_account("alice", 10)
    before = snapshot()
    naive = datetime(2026, 1, 1, 12)  # noqa: DTZ001  (naive means UTC: what a host may pass)
    assert ledger.supply_report(now=naive).velocity.window_end.tzinfo is not None
    assert ledger.supply_report(now="2026-01-01T12:00:00").total_supply == 10
    for bad in ("yesterday", 12, object()):
        with pytest.raises(InvalidArgument):
            ledger.supply_report(now=bad)  # type: ignore[arg-type]
    for snapshot_value in ({"0xabc": 1.9}, {"0xabc": "12"}, {"0xabc": True}, {1: 5}, [1]):
        with pytest.raises(InvalidArgument):
            ledger.reconcile(snapshot_value)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        ledger.transfer_many(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Ledger.from_url("not a url")
    ledger.mint("alice", 1, "x", idempotency_key="k")
    with pytest.raises(IdempotencyConflict):
        ledger.mint("alice", 2, "x", idempotency_key="k")
    ledger.seal()
    exported = ledger.export_chain()
    next(exported)
    del exported  # abandoned half way: its connection goes back to the pool
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert len(snapshot()["token_ledger"]) == len(before["token_ledger"]) + 1  # type: ignore[index]
