"""One engine fixture over both backends, each test on freshly emptied tables.

PostgreSQL comes from ``TOKENLEDGER_TEST_POSTGRES_URL`` (an admin URL: the
suite creates and drops its own databases), else from a testcontainers
container where Docker works, else its half of the suite is skipped with a
message. ``TOKENLEDGER_TEST_REQUIRE_POSTGRES=1`` turns that skip into a
failure (CI sets it).

``TOKENLEDGER_TEST_PG_DRIVER`` picks the PostgreSQL driver for the whole
suite: ``psycopg2`` (default) or ``psycopg`` (psycopg 3).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tokenledger import Ledger, migrations
from tokenledger.storage import create_engine
from tokenledger.storage.models import Base

PG_URL_ENV = "TOKENLEDGER_TEST_POSTGRES_URL"
REQUIRE_PG_ENV = "TOKENLEDGER_TEST_REQUIRE_POSTGRES"
PG_DRIVER_ENV = "TOKENLEDGER_TEST_PG_DRIVER"

# Every table the ledger appends to or updates, children first (the chain's
# one-row head is reset, not emptied).
LEDGER_TABLES = tuple(
    table.name
    for table in reversed(Base.metadata.sorted_tables)
    if table.name != "token_chain_head"
)

_containers: list[Any] = []  # a testcontainers PostgreSQL, started at most once


def _admin_url() -> str | None:
    url = os.environ.get(PG_URL_ENV)
    if url:
        return url
    try:
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

        if not _containers:
            _containers.append(PostgresContainer("postgres:15-alpine", driver="psycopg2").start())
        return str(_containers[0].get_connection_url())
    except Exception:
        return None


def with_driver(url: str, driver: str | None = None) -> str:
    """``url`` with its PostgreSQL driver set to ``driver`` (or the suite's choice)."""
    driver = driver or os.environ.get(PG_DRIVER_ENV, "psycopg2")
    return (
        make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
    )


class PostgresServer:
    """Creates throwaway databases on the test server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = with_driver(admin_url, "psycopg2")
        self.admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create_database(self, prefix: str = "tokenledger_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return with_driver(
            make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)
        )

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with self.admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        if name in self.created:
            self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            self.drop_database(make_url(self.admin_url).set(database=name).render_as_string())
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    url = _admin_url()
    if url is None:
        message = (
            f"PostgreSQL tests need {PG_URL_ENV} (an admin URL such as "
            "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres) or a working Docker"
        )
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(message + f"; {REQUIRE_PG_ENV}=1 requires it", pytrace=False)
        pytest.skip(message)
    try:
        server = PostgresServer(url)
        with server.admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        message = f"PostgreSQL at {PG_URL_ENV} is unreachable: {exc}"
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """A database migrated to head, shared by the session's tests (emptied between them)."""
    url = postgres_server.create_database()
    migrations.upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    migrations.upgrade(f"sqlite:///{path}")
    return path


def empty_postgres(engine: Engine) -> None:
    with engine.begin() as connection:
        # The append-only triggers refuse TRUNCATE; a superuser may bypass
        # them for the session, which is what a test reset needs.
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(f"TRUNCATE {', '.join(LEDGER_TABLES)} RESTART IDENTITY CASCADE"))
        connection.execute(
            text(
                "UPDATE token_chain_head SET seq = 0, hash = :genesis, last_txid = 0, "
                "last_entry_id = 0"
            ),
            {"genesis": "0" * 64},
        )


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database at head, on the test's backend."""
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "ledger.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    try:
        empty_postgres(engine)
    finally:
        engine.dispose()
    yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """PostgreSQL only (for lock and concurrency tests): an emptied database, a large pool."""
    engine = create_engine(postgres_url, pool_size=20, max_overflow=0)
    empty_postgres(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def ledger(engine: Engine) -> Ledger:
    return Ledger(engine)


@pytest.fixture
def snapshot(engine: Engine) -> Callable[[], dict[str, list[tuple[Any, ...]]]]:
    """Every row of every ledger table, to prove that a rejected call wrote nothing."""

    def take() -> dict[str, list[tuple[Any, ...]]]:
        with engine.connect() as connection:
            return {
                table: sorted(
                    (tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}"))),
                    key=repr,
                )
                for table in (*LEDGER_TABLES, "token_chain_head")
            }

    return take


@pytest.fixture
def tamper(engine: Engine, backend: str) -> Callable[..., None]:
    """Run raw SQL past the database's guards, as an attacker with database access would.

    PostgreSQL: a superuser's ``session_replication_role = replica`` switches
    triggers (the append-only guards, the digest triggers) and foreign keys off.
    SQLite: whoever holds the file drops the triggers and foreign keys.
    """

    def run(statement: str, **params: Any) -> None:
        with engine.connect() as connection:
            if backend == "postgresql":
                # A superuser can switch triggers (and foreign keys) off.
                connection.execute(text("SET session_replication_role = replica"))
            else:
                connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
                for table in ("token_ledger", "token_chain", "token_checkpoints"):
                    for event in ("update", "delete"):
                        connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_{event}")
            connection.execute(text(statement), params)
            connection.commit()
            if backend == "postgresql":
                connection.execute(text("SET session_replication_role = origin"))
                connection.commit()

    return run
