"""Several operations in one transaction, and operations inside the host's own transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, select, text
from sqlalchemy.orm import Session

from auditor import audit
from tokenledger import InsufficientFunds, InvalidArgument, Ledger

host_metadata = MetaData()
settlements = Table(
    "host_settlements",
    host_metadata,
    Column("id", Integer, primary_key=True),
    Column("market", String(50), nullable=False),
)


@pytest.fixture
def host_engine(engine: Engine) -> Iterator[Engine]:
    """The host's own table beside the ledger's, in the same database."""
    host_metadata.create_all(engine)
    yield engine
    host_metadata.drop_all(engine)


@pytest.fixture
def funded(ledger: Ledger) -> Ledger:
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    return ledger


def _markets(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(select(settlements.c.market)).scalars())


def test_ledger_transaction_commits_all_operations_together(funded: Ledger, engine: Engine) -> None:
    with funded.transaction() as tx:
        tx.transfer("alice", "bob", 10, "a")
        tx.transfer("bob", "alice", 4, "b")
        tx.mint("bob", 1, "c")
    assert funded.get_balance("alice") == 94
    assert funded.get_balance("bob") == 7
    audit(engine)


def test_an_error_in_the_block_rolls_everything_back(
    funded: Ledger, snapshot: Callable[[], object]
) -> None:
    before = snapshot()

    class Abort(Exception):
        pass

    def block() -> None:
        with funded.transaction() as tx:
            tx.transfer("alice", "bob", 10, "a")
            tx.mint("bob", 1, "c")
            raise Abort

    with pytest.raises(Abort):
        block()
    assert snapshot() == before


def test_a_refused_call_inside_the_block_leaves_the_rest_intact(
    funded: Ledger, engine: Engine
) -> None:
    with funded.transaction() as tx:
        tx.transfer("alice", "bob", 10, "a")
        with pytest.raises(InsufficientFunds):
            tx.transfer("bob", "alice", 11, "too much")
        tx.transfer("bob", "alice", 3, "fine")
    assert funded.get_balance("bob") == 7
    assert len(funded.get_statement("bob")) == 2
    audit(engine)


def test_operations_join_the_hosts_connection_transaction(
    funded: Ledger, host_engine: Engine
) -> None:
    with host_engine.connect() as connection:
        with connection.begin():
            connection.execute(settlements.insert().values(market="m1"))
            funded.using(connection).transfer("alice", "bob", 5, "settlement", "market", "m1")
        assert _markets(host_engine) == ["m1"]
        assert funded.get_balance("bob") == 5

        transaction = connection.begin()
        connection.execute(settlements.insert().values(market="m2"))
        funded.using(connection).transfer("alice", "bob", 5, "settlement", "market", "m2")
        transaction.rollback()  # the host changes its mind: both disappear
    assert _markets(host_engine) == ["m1"]
    assert funded.get_balance("bob") == 5
    audit(host_engine)


def test_the_ledger_never_commits_the_hosts_transaction(
    funded: Ledger, host_engine: Engine
) -> None:
    with host_engine.connect() as connection:
        connection.execute(settlements.insert().values(market="m1"))
        funded.using(connection).transfer("alice", "bob", 5, "settlement")
        funded.using(connection).mint("bob", 1, "bonus")
        connection.rollback()  # never committed by the ledger, so nothing stays
    assert _markets(host_engine) == []
    assert funded.get_balance("bob") == 0
    assert len(funded.get_statement("alice")) == 1


def test_a_refused_call_leaves_the_hosts_transaction_usable(
    funded: Ledger, host_engine: Engine
) -> None:
    with host_engine.connect() as connection, connection.begin():
        connection.execute(settlements.insert().values(market="m1"))
        with pytest.raises(InsufficientFunds):
            funded.using(connection).transfer("bob", "alice", 1, "nothing there")
        connection.execute(settlements.insert().values(market="m2"))
        funded.using(connection).transfer("alice", "bob", 2, "settlement")
    assert _markets(host_engine) == ["m1", "m2"]
    assert funded.get_balance("bob") == 2
    audit(host_engine)


def test_operations_join_the_hosts_orm_session(funded: Ledger, host_engine: Engine) -> None:
    with Session(host_engine) as session:
        session.execute(settlements.insert().values(market="s1"))
        funded.using(session).transfer("alice", "bob", 3, "settlement")
        assert funded.using(session).get_balance("bob") == 3  # sees its own write
        session.commit()
    assert _markets(host_engine) == ["s1"]
    with Session(host_engine) as session:
        funded.using(session).transfer("alice", "bob", 3, "settlement")
        session.rollback()
    assert funded.get_balance("bob") == 3
    audit(host_engine)


def test_using_refuses_an_engine(funded: Ledger, engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        funded.using(engine)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Ledger("sqlite://")  # type: ignore[arg-type]


def test_reads_inside_a_transaction_see_its_writes(funded: Ledger) -> None:
    with funded.transaction() as tx:
        tx.transfer("alice", "bob", 10, "a")
        assert tx.get_balance("bob") == 10
        assert funded.get_balance("bob") == 0  # others see nothing before the commit
    assert funded.get_balance("bob") == 10


@pytest.mark.parametrize("backend", [pytest.param("sqlite", marks=pytest.mark.sqlite)])
def test_sqlite_caller_transaction_holds_the_write_lock(
    funded: Ledger, host_engine: Engine
) -> None:
    # pysqlite begins transactions lazily; the ledger must begin one itself
    # rather than let its savepoint's RELEASE commit the work.
    with host_engine.connect() as connection:
        funded.using(connection).transfer("alice", "bob", 1, "inside")
        raw = connection.connection.driver_connection
        assert raw is not None
        assert raw.in_transaction
        connection.rollback()
    assert funded.get_balance("bob") == 0
    with host_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM token_ledger")).scalar_one() == 1
