"""``tokenledger db check``: each kind of schema drift is found and named, on both backends.

Each test gets a database at head made from one migrated template (a file
copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL), changes one
thing behind the migrations' back, as an operator's hand-made fix would, and
asks the check.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from conftest import PostgresServer
from tokenledger import migrations
from tokenledger.schema.check import Drift, check_schema
from tokenledger.storage import create_engine


@pytest.fixture(scope="module")
def pg_template(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database("tokenledger_check_template")
    migrations.upgrade(url)
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(scope="module")
def sqlite_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("check") / "head.db"
    migrations.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def head_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A private database at head, free to be damaged."""
    if backend == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copyfile(request.getfixturevalue("sqlite_head"), path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template = make_url(request.getfixturevalue("pg_template")).database
    url = server.create_database("tokenledger_check")
    name = make_url(url).database
    with server.admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield url
    server.drop_database(url)


def _drifts(url: str) -> list[Drift]:
    engine = create_engine(url)
    try:
        return check_schema(engine)
    finally:
        engine.dispose()


def _postgres(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    engine.dispose()


def _sqlite_schema_edit(url: str, table: str, old: str, new: str) -> None:
    """Rewrite a table's stored definition, as only editing the file directly can."""
    path = make_url(url).database
    assert path is not None
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA writable_schema = ON")
        stored = connection.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()[0]
        assert old in stored
        connection.execute(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
            (stored.replace(old, new), table),
        )
        connection.commit()
    finally:
        connection.close()


def _sqlite(url: str, *statements: str) -> None:
    path = make_url(url).database
    assert path is not None
    connection = sqlite3.connect(path)
    try:
        for statement in statements:
            connection.execute(statement)
        connection.commit()
    finally:
        connection.close()


def test_a_clean_schema_passes(head_url: str) -> None:
    assert _drifts(head_url) == []


# (kind, object named, PostgreSQL damage, SQLite damage: statements or a table edit)
DAMAGE = {
    "server_default": (
        "column",
        "token_accounts.balance",
        ["ALTER TABLE token_accounts ALTER COLUMN balance SET DEFAULT 5"],
        ("token_accounts", "balance BIGINT DEFAULT 0", "balance BIGINT DEFAULT 5"),
    ),
    "check_dropped": (
        "constraint",
        "token_consumers.ck_token_consumers_name_not_empty",
        ["ALTER TABLE token_consumers DROP CONSTRAINT ck_token_consumers_name_not_empty"],
        (
            "token_consumers",
            ", \n\tCONSTRAINT ck_token_consumers_name_not_empty CHECK (name <> '')",
            "",
        ),
    ),
    "check_changed": (
        "constraint",
        "token_accounts.ck_token_accounts_balance_nonnegative",
        [
            "ALTER TABLE token_accounts DROP CONSTRAINT ck_token_accounts_balance_nonnegative",
            "ALTER TABLE token_accounts ADD CONSTRAINT ck_token_accounts_balance_nonnegative "
            "CHECK (balance >= -100)",
        ],
        ("token_accounts", "CHECK (balance >= 0)", "CHECK (balance >= -100)"),
    ),
    "trigger_dropped": (
        "trigger",
        "token_ledger.token_ledger_append_only|token_ledger.token_ledger_no_update",
        ["DROP TRIGGER token_ledger_append_only ON token_ledger"],
        ["DROP TRIGGER token_ledger_no_update"],
    ),
    "trigger_disabled_or_rewritten": (
        "trigger",
        "token_stakes.token_stakes_digest|token_ledger.token_ledger_no_delete",
        ["ALTER TABLE token_stakes DISABLE TRIGGER token_stakes_digest"],
        [
            "DROP TRIGGER token_ledger_no_delete",
            "CREATE TRIGGER token_ledger_no_delete BEFORE DELETE ON token_ledger "
            "BEGIN SELECT 1; END",
        ],
    ),
    "function_body": (
        "function",
        "tokenledger_refuse_change()",
        [
            "CREATE OR REPLACE FUNCTION tokenledger_refuse_change() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"
        ],
        None,  # SQLite has no server functions: its triggers hold the logic
    ),
    "sql_file_function_body": (
        "function",
        "tokenledger_digest_field(p_text text)",
        [
            "CREATE OR REPLACE FUNCTION tokenledger_digest_field(p_text text) RETURNS text "
            "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT coalesce(p_text, '-') $$"
        ],
        None,
    ),
    "index_dropped": (
        "index",
        "idx_ledger_reason",
        ["DROP INDEX idx_ledger_reason"],
        ["DROP INDEX idx_ledger_reason"],
    ),
    "function_added": (
        "function",
        "tokenledger_shortcut()",
        ["CREATE FUNCTION tokenledger_shortcut() RETURNS int LANGUAGE sql AS 'SELECT 1'"],
        None,
    ),
    "function_security_definer": (
        "function",
        "tokenledger_refuse_change()",
        ["ALTER FUNCTION tokenledger_refuse_change() SECURITY DEFINER"],
        None,
    ),
    "rule_added": (
        "rule",
        "token_accounts.frozen_books",
        ["CREATE RULE frozen_books AS ON UPDATE TO token_accounts DO INSTEAD NOTHING"],
        None,
    ),
    "table_unlogged": (
        "table options",
        "token_consumers",
        ["ALTER TABLE token_consumers SET UNLOGGED"],
        None,
    ),
    "sequence_changed": (
        "sequence",
        "token_ledger_id_seq",
        ["ALTER SEQUENCE token_ledger_id_seq INCREMENT 1000"],
        None,
    ),
    "check_not_valid": (
        "constraint validity",
        "token_accounts.ck_token_accounts_balance_nonnegative",
        [
            "ALTER TABLE token_accounts DROP CONSTRAINT ck_token_accounts_balance_nonnegative",
            "ALTER TABLE token_accounts ADD CONSTRAINT ck_token_accounts_balance_nonnegative "
            "CHECK (balance >= 0) NOT VALID",
        ],
        None,
    ),
    "collation": (
        "column|table definition",
        "token_accounts.account_id|token_accounts",
        ['ALTER TABLE token_accounts ALTER COLUMN account_id TYPE varchar(255) COLLATE "C"'],
        (
            "token_accounts",
            "account_id VARCHAR(255) NOT NULL",
            "account_id VARCHAR(255) COLLATE NOCASE NOT NULL",
        ),
    ),
}


# Each damage on each backend that has the object (SQLite has no server functions).
DAMAGE_CASES = [
    pytest.param(damage, backend, marks=getattr(pytest.mark, backend), id=f"{damage}-{backend}")
    for damage in sorted(DAMAGE)
    for backend in ("sqlite", "postgresql")
    if backend == "postgresql" or DAMAGE[damage][3] is not None
]


@pytest.mark.parametrize(("damage", "backend"), DAMAGE_CASES, indirect=["backend"])
def test_each_kind_of_drift_is_named(damage: str, head_url: str, backend: str) -> None:
    kind, name, on_postgres, on_sqlite = DAMAGE[damage]
    if backend == "postgresql":
        _postgres(head_url, *on_postgres)
    elif isinstance(on_sqlite, tuple):
        _sqlite_schema_edit(head_url, *on_sqlite)
    else:
        _sqlite(head_url, *on_sqlite)
    # "postgresql name|sqlite name" where the two backends' objects differ.
    name = name.split("|")[-1] if backend == "sqlite" else name.split("|")[0]
    kind = kind.split("|")[-1] if backend == "sqlite" else kind.split("|")[0]

    drifts = _drifts(head_url)

    assert any(d.kind == kind and d.name == name for d in drifts), drifts
    # Only what was damaged is reported (an index dropped is also a model difference).
    # (On SQLite a table's constraints and collations are in its own text, named too.)
    assert {d.name for d in drifts} <= {name, name.split(".")[-1], name.split(".")[0]}, drifts


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)
def test_triggers_switched_off_for_every_session_are_named(
    head_url: str, postgres_server: PostgresServer
) -> None:
    database = make_url(head_url).database
    with postgres_server.admin.connect() as connection:
        connection.execute(
            text(f'ALTER DATABASE "{database}" SET session_replication_role = replica')
        )
    drifts = _drifts(head_url)
    assert [(d.kind, d.name) for d in drifts] == [("setting", "session_replication_role")]
    assert "'replica'" in drifts[0].detail


def test_a_model_mismatch_is_named(head_url: str, backend: str) -> None:
    """The drift the review found (L2), now caught: a server default the model disagrees with."""
    statement = {
        "postgresql": "ALTER TABLE token_ledger ALTER COLUMN writer_txid SET DEFAULT 0",
        "sqlite": None,
    }[backend]
    if statement is None:
        _sqlite_schema_edit(
            head_url, "token_ledger", "writer_txid BIGINT DEFAULT 0", "writer_txid BIGINT DEFAULT 7"
        )
    else:
        _postgres(head_url, statement)

    drifts = _drifts(head_url)

    expected = {("model", "token_ledger.writer_txid"), ("column", "token_ledger.writer_txid")}
    if backend == "sqlite":  # the default is in the table's own text too
        expected.add(("table definition", "token_ledger"))
    assert {(d.kind, d.name) for d in drifts} == expected, drifts


def test_an_old_revision_is_reported_and_compared_with_its_own_revisions(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database("tokenledger_check_old")
        request.addfinalizer(lambda: server.drop_database(url))
    migrations.upgrade(url, "0005_tamper_evidence")

    assert [(d.kind, d.name) for d in _drifts(url)] == [("revision", "0005_tamper_evidence")]


def test_the_command_exits_3_and_names_the_drift(head_url: str, backend: str) -> None:
    command = [sys.executable, "-m", "tokenledger.cli", "db", "check", "--url", head_url]
    clean = subprocess.run(command, capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stderr
    assert "schema matches revision" in clean.stdout

    if backend == "postgresql":
        _postgres(head_url, "DROP TRIGGER token_ledger_no_truncate ON token_ledger")
        named = "trigger token_ledger.token_ledger_no_truncate: missing"
    else:
        _sqlite(head_url, "DROP TRIGGER token_ledger_no_update")
        named = "trigger token_ledger.token_ledger_no_update: missing"
    drifted = subprocess.run(command, capture_output=True, text=True, check=False)
    assert drifted.returncode == 3, drifted.stderr
    assert named in drifted.stdout
