"""Behind a real PgBouncer, in session and in transaction pooling mode, on both drivers.

In transaction mode consecutive transactions of one client connection may
run on different server connections: nothing may rely on session state, and
psycopg 3 must not prepare statements on the server (the next execution
would go to a connection where the statement does not exist).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine as sqlalchemy_engine

from auditor import audit
from conftest import PostgresServer, with_driver
from exercise import every_operation
from services import pgbouncer, through
from tokenledger import InsufficientFunds, Ledger, migrations
from tokenledger.storage import create_engine

pytestmark = pytest.mark.postgresql

MODES = ("session", "transaction")
DRIVERS = ("psycopg2", "psycopg")


@pytest.fixture
def fresh_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database("tokenledger_bouncer")
    yield url
    postgres_server.drop_database(url)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("mode", MODES)
def test_every_operation_and_concurrent_writers(fresh_url: str, mode: str, driver: str) -> None:
    migrations.upgrade(fresh_url)
    # Transaction mode multiplexes 12 client connections over 4 server ones;
    # session mode pins one server connection to each client connection.
    servers = 4 if mode == "transaction" else 16
    with pgbouncer(fresh_url, mode, server_connections=servers) as port:
        ledger = Ledger.from_url(through(fresh_url, port, driver), pool_size=12)
        try:
            every_operation(ledger, "one")
            accounts = [f"w-{i}" for i in range(4)]
            for account in accounts:
                ledger.create_account(account, 100)
            done: list[int] = []

            def worker(n: int) -> None:
                for i in range(25):
                    source, target = accounts[(n + i) % 4], accounts[(n + i + 1) % 4]
                    try:
                        ledger.transfer(source, target, (i % 7) + 1, "w")
                        done.append(1)
                    except InsufficientFunds:
                        pass

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sum(ledger.get_balance(a) for a in accounts) == 400
            assert ledger.seal() >= len(done)
            report = ledger.verify()
            assert report.ok, report.problems[:5]
        finally:
            ledger.dispose()
    direct = create_engine(fresh_url)
    try:
        audit(direct)  # the independent replay of what went through the bouncer
    finally:
        direct.dispose()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_hosts_psycopg_engine_configured_for_transaction_pooling(
    fresh_url: str, driver: str
) -> None:
    """A host's own engine (SQLAlchemy's create_engine, not the ledger's) behind the bouncer.

    psycopg 3 behind transaction pooling needs ``prepare_threshold=None``
    for the host's own statements as much as for the ledger's; with it, every
    operation works on the host's engine as it is.
    """
    migrations.upgrade(fresh_url)
    with pgbouncer(fresh_url, "transaction") as port:
        options = {"connect_args": {"prepare_threshold": None}} if driver == "psycopg" else {}
        engine = sqlalchemy_engine(through(fresh_url, port, driver), **options)
        try:
            every_operation(Ledger(engine), "host")
        finally:
            engine.dispose()


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("mode", MODES)
def test_db_upgrade_through_the_bouncer_is_whole(fresh_url: str, mode: str, driver: str) -> None:
    """Every revision runs in the one migration transaction, so pooling cannot split it."""
    with pgbouncer(fresh_url, mode) as port:
        bounced = through(fresh_url, port, driver)
        result = subprocess.run(
            [sys.executable, "-m", "tokenledger.cli", "db", "upgrade", "--url", bounced],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert f"upgraded from base to {migrations.head()}" in result.stdout
    assert migrations.current(with_driver(fresh_url)) == migrations.head()
    ledger = Ledger.from_url(fresh_url)
    try:
        every_operation(ledger, "after")
    finally:
        ledger.dispose()
