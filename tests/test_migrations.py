"""Alembic owns the schema: both backends, beside a host's own Alembic, from a wheel."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

import tokenledger.storage.posting
from conftest import PostgresServer
from tokenledger import Ledger, migrations
from tokenledger.storage import create_engine
from tokenledger.storage.models import Base

REPO = Path(__file__).resolve().parent.parent
LEDGER_TABLES = set(Base.metadata.tables)


@pytest.fixture
def fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database with nothing migrated."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database("tokenledger_migrate")
    yield url
    server.drop_database(url)


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_and_downgrade_leave_the_hosts_alembic_alone(fresh_url: str) -> None:
    engine = create_engine(fresh_url)
    with engine.begin() as connection:  # the host's own Alembic state
        connection.execute(
            text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        )
        connection.execute(text("INSERT INTO alembic_version VALUES ('host_rev_42')"))
        connection.execute(text("CREATE TABLE actor_reputation (id INTEGER PRIMARY KEY)"))

    assert migrations.current(fresh_url) is None
    migrations.upgrade(fresh_url)
    assert migrations.current(fresh_url) == migrations.head()
    assert LEDGER_TABLES | {"tokenledger_alembic_version"} <= _tables(fresh_url)

    migrations.downgrade(fresh_url, "base")
    assert _tables(fresh_url) == {
        "alembic_version",
        "actor_reputation",
        "tokenledger_alembic_version",
    }
    migrations.upgrade(fresh_url)  # and back up again
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == (
            "host_rev_42"
        )
    engine.dispose()


def test_models_and_migrations_agree(fresh_url: str) -> None:
    migrations.upgrade(fresh_url)
    engine = create_engine(fresh_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_object": migrations.include_object,
                "compare_type": True,
                "compare_server_default": True,  # review L2: writer_txid's default
            },
        )
        drift = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert drift == []


def test_history_lists_the_revisions_in_order() -> None:
    revisions = [revision for revision, _, _ in migrations.history()]
    assert revisions == [
        "0001_core_ledger",
        "0002_stakes",
        "0003_audit_chain",
        "0004_post_entry_function",
        "0005_tamper_evidence",
        "0006_event_consumers",
        "0007_group_commit",
        "0008_chain_bridge",
    ]
    assert migrations.head() == "0008_chain_bridge"


def test_alembic_command_line_from_the_repository_root(fresh_url: str) -> None:
    env = {**os.environ, "TOKENLEDGER_DATABASE_URL": fresh_url}
    alembic = [sys.executable, "-m", "alembic"]
    for args in (["upgrade", "head"], ["current"], ["downgrade", "base"], ["upgrade", "head"]):
        done = subprocess.run(
            [*alembic, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    assert migrations.current(fresh_url) == migrations.head()


def test_the_append_only_guard_refuses_update_and_delete(fresh_url: str) -> None:
    migrations.upgrade(fresh_url)
    engine = create_engine(fresh_url)
    ledger = Ledger(engine)
    ledger.create_account("alice", 5)
    for statement in ("UPDATE token_ledger SET amount = 1", "DELETE FROM token_ledger"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT amount FROM token_ledger")).scalar_one() == 5_000_000
    engine.dispose()


def _fill_at_revision_0001(url: str) -> None:
    """Ledger data as the 0001 schema held it, written with plain SQL."""
    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    stamp = now if url.startswith("postgresql") else now.replace(tzinfo=None)
    engine = create_engine(url)
    with engine.begin() as connection:
        for account_id, balance, earned, spent in (
            ("alice", 70_000_000, 100_000_000, 30_000_000),
            ("bob", 130_000_000, 130_000_000, 0),
        ):
            connection.execute(
                text(
                    "INSERT INTO token_accounts (account_id, balance, total_earned, total_spent, "
                    "total_staked, created_at, updated_at) VALUES (:a, :b, :e, :s, 0, :t, :t)"
                ),
                {"a": account_id, "b": balance, "e": earned, "s": spent, "t": stamp},
            )
        rows = [
            ("system", "alice", 100_000_000, None, 100_000_000, "k1"),
            ("system", "bob", 100_000_000, None, 100_000_000, None),
            ("alice", "bob", 30_000_000, 70_000_000, 130_000_000, None),
        ]
        for sender, receiver, amount, after_from, after_to, key in rows:
            connection.execute(
                text(
                    "INSERT INTO token_ledger (timestamp, from_account, to_account, amount, "
                    "reason, balance_after_from, balance_after_to, idempotency_key) "
                    "VALUES (:t, :f, :r, :a, 'seed', :af, :at, :k)"
                ),
                {
                    "t": stamp,
                    "f": sender,
                    "r": receiver,
                    "a": amount,
                    "af": after_from,
                    "at": after_to,
                    "k": key,
                },
            )
    engine.dispose()


def _dump(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = create_engine(url)
    columns = {
        "token_accounts": "account_id, balance, total_earned, total_spent, total_staked, "
        "created_at, updated_at",
        "token_ledger": "id, timestamp, from_account, to_account, amount, reason, reference_type, "
        "reference_id, memo, balance_after_from, balance_after_to, idempotency_key",
    }
    with engine.connect() as connection:
        dump = {
            table: [
                tuple(r) for r in connection.execute(text(f"SELECT {cols} FROM {table} ORDER BY 1"))
            ]
            for table, cols in columns.items()
        }
    engine.dispose()
    return dump


def test_upgrading_a_database_with_data_keeps_every_row(fresh_url: str) -> None:
    migrations.upgrade(fresh_url, "0001_core_ledger")
    _fill_at_revision_0001(fresh_url)
    before = _dump(fresh_url)

    migrations.upgrade(fresh_url, "0002_stakes")
    assert _dump(fresh_url) == before
    migrations.upgrade(fresh_url)
    assert _dump(fresh_url) == before

    ledger = Ledger.from_url(fresh_url)
    report = ledger.verify()
    assert report.ok, report.problems
    # The old rows are chained like new ones, and new writes work beside them.
    stake = ledger.stake("alice", 10, "bid", "artifact", "a1")
    ledger.settle(stake.id, "bob", "won")
    assert ledger.seal() == 5
    assert ledger.verify().ok
    assert ledger.get_balance("bob") == 140
    ledger.dispose()


def test_migrations_run_from_an_installed_wheel_without_a_checkout(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "wheel"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheel_dir.glob("tokenledger-*.whl")
    target = tmp_path / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    # -S: no site-packages processing, so the editable checkout is invisible;
    # the dependencies come from this environment's site-packages directly.
    deps = sysconfig.get_paths()["purelib"]
    script = (
        "import tokenledger, tokenledger.migrations as m\n"
        f"assert tokenledger.__file__.startswith({str(target)!r}), tokenledger.__file__\n"
        f"m.upgrade('sqlite:///{tmp_path / 'from_wheel.db'}')\n"
        f"print(m.current('sqlite:///{tmp_path / 'from_wheel.db'}'))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), deps])}
    ran = subprocess.run(
        [sys.executable, "-S", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == migrations.head()


# Every server function text a released revision installs, by file: never edited.
# A changed function is a new file, a new function name and a new revision.
RELEASED_FUNCTIONS = {
    "post_entry_v1.sql": "c06459690e6d1d9dff17a184edf878c96be496717cde0e4c0b7964795054dca3",
    "post_entry_v2.sql": "b2b6882d90433da3f720f6a068afa6a87417f1513f02b5d79ff950c4570adbe6",
    "digests_v2.sql": "fb13ad137e0804dfb1f9aaa34f37ba0c19fe722e135d57a2c2f09482cad6f23d",
    "digests_v2_flat.sql": "e9bc4bd81116b42356cc389df438408562371cfdc202c9e80bb04bc67dfd2d2b",
    "post_entry_v3.sql": "adc7ae4710b86c43d9af631f673ee78970df630dbd05d8b51298ed1ebb967242",
    "post_entries_v1.sql": "91370672c443edeae835496579614cec2f3c3c8a2d8f02d71e18ab4265e45057",
}


def test_released_server_functions_never_change() -> None:
    directory = Path(tokenledger.storage.posting.__file__).parent / "sql"
    shipped = {path.name: path for path in directory.glob("*.sql")}
    assert set(shipped) == set(RELEASED_FUNCTIONS), "pin every new .sql file here"
    for name, digest in RELEASED_FUNCTIONS.items():
        assert hashlib.sha256(shipped[name].read_bytes()).hexdigest() == digest, name


def test_a_hosts_autogenerate_filter_keeps_off_the_ledgers_tables() -> None:
    """``exclude_ledger_tables`` in a host's env.py: its tables in, the ledger's out."""
    from sqlalchemy import Column, Integer, MetaData, Table  # noqa: PLC0415

    host = Table("actor_reputation", MetaData(), Column("id", Integer, primary_key=True))
    for name in migrations.LEDGER_TABLES:
        assert migrations.exclude_ledger_tables(None, name, "table", True, None) is False
        table = Base.metadata.tables.get(name)
        if table is not None:  # an index or column of a ledger table is the ledger's too
            for index in table.indexes:
                assert not migrations.exclude_ledger_tables(index, index.name, "index", True, None)
    assert migrations.exclude_ledger_tables(None, "actor_reputation", "table", True, None)
    assert migrations.exclude_ledger_tables(host.c.id, "id", "column", True, None)
    assert "alembic_version" not in migrations.LEDGER_TABLES  # the host's own version table
