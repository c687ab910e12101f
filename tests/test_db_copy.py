"""``tokenledger db copy``: a whole ledger between SQLite and PostgreSQL, row for row.

The source holds every kind of row the ledger writes: entries from before
digests existed (revision 0001, NULL digest), keyed entries, open and
settled stakes, a reversal, checkpoints, a consumer's position, and an
entry not yet sealed. A copy must keep every stored value, so that the
target verifies and its chain export is the source's, and the target's next
id continues after the copied ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, text

from conftest import PostgresServer
from tokenledger import Ledger, migrations
from tokenledger.storage import create_engine
from tokenledger.storage.models import Base, ChainRow
from tokenledger.storage.repository import receipts

Result = subprocess.CompletedProcess[str]


def run_cli(*args: str) -> Result:
    environment = {k: v for k, v in os.environ.items() if k != migrations.URL_ENV}
    return subprocess.run(
        [sys.executable, "-m", "tokenledger.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=120,
    )


@pytest.fixture
def new_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Makes empty, unmigrated databases: ``new_url("sqlite")`` or ``new_url("postgresql")``."""
    made: list[str] = []
    files = iter(range(1_000))

    def make(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'ledger{next(files)}.db'}"
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database("tokenledger_copy")
        made.append(url)
        return url

    yield make
    if made:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        for url in made:
            server.drop_database(url)


def _legacy_rows(url: str) -> None:
    """Two accounts and three entries as revision 0001 wrote them (no digest, no chain)."""
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    if url.startswith("sqlite"):
        stamp = stamp.replace(tzinfo=None)
    engine = create_engine(url)
    with engine.begin() as connection:
        for account, balance in (("alice", 70_000_000), ("bob", 130_000_000)):
            connection.execute(
                text(
                    "INSERT INTO token_accounts (account_id, balance, total_earned, total_spent, "
                    "total_staked, created_at, updated_at) VALUES (:a, :b, :e, :s, 0, :t, :t)"
                ),
                {
                    "a": account,
                    "b": balance,
                    "e": 100_000_000 if account == "alice" else 130_000_000,
                    "s": 30_000_000 if account == "alice" else 0,
                    "t": stamp,
                },
            )
        for sender, receiver, amount, after_from, after_to in (
            ("system", "alice", 100_000_000, None, 100_000_000),
            ("system", "bob", 100_000_000, None, 100_000_000),
            ("alice", "bob", 30_000_000, 70_000_000, 130_000_000),
        ):
            connection.execute(
                text(
                    "INSERT INTO token_ledger (timestamp, from_account, to_account, amount, "
                    "reason, balance_after_from, balance_after_to) "
                    "VALUES (:t, :f, :r, :a, 'seed', :af, :at)"
                ),
                {
                    "t": stamp,
                    "f": sender,
                    "r": receiver,
                    "a": amount,
                    "af": after_from,
                    "at": after_to,
                },
            )
    engine.dispose()


def build_source(url: str) -> None:
    """A ledger holding every kind of row, some of it from the first revision."""
    migrations.upgrade(url, "0001_core_ledger")
    _legacy_rows(url)
    migrations.upgrade(url)
    ledger = Ledger.from_url(url)
    ledger.create_account("carol", 50)
    for n in range(12):
        ledger.transfer("bob", "carol", "1.25", "pay", memo=f"n{n}", idempotency_key=f"k{n}")
    kept = ledger.stake("carol", 5, "bid", "artifact", "a1")
    won = ledger.stake("alice", 3, "bid", "artifact", "a2")
    ledger.settle(won.id, "carol", "won")
    mistake = ledger.transfer("carol", "alice", 1, "mistake")
    ledger.reverse(mistake.id, "undo")
    assert ledger.checkpoint() is not None
    ledger.consumer("mailer").commit(3)
    ledger.consumer("zeta").commit(2)  # after "mailer" in key order
    _receipts_of_the_sealed_entries(url)
    ledger.transfer("alice", "bob", 2, "last, not sealed yet")
    assert ledger.get_stake(kept.id).status == "open"
    ledger.dispose()


def _receipts_of_the_sealed_entries(url: str) -> None:
    """A deployed contract and a receipt per sealed entry, as `chain push` records them."""
    engine = create_engine(url)
    with engine.begin() as connection:
        deployment = receipts.add_deployment(
            connection,
            chain_id=31337,
            address="0x" + "ab" * 20,
            operator="0x" + "cd" * 20,
            tx_hash="0x" + "01" * 32,
            block_number=1,
        )
        sealed = connection.execute(select(ChainRow.seq, ChainRow.entry_id)).all()
        receipts.add_receipts(
            connection,
            [
                {
                    "deployment_id": deployment.id,
                    "seq": seq,
                    "entry_id": entry_id,
                    "tx_hash": f"0x{seq:064x}",
                    "block_number": 1 + seq,
                    "log_index": 0,
                    "status": 1,
                }
                for seq, entry_id in sealed
            ],
        )
    engine.dispose()


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every ledger table, as the models read them, in key order."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table.name: [
                    tuple(row)
                    for row in connection.execute(
                        select(table).order_by(*table.primary_key.columns)
                    )
                ]
                for table in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def _balance(url: str, account: str) -> Any:
    ledger = Ledger.from_url(url)
    try:
        return ledger.get_balance(account)
    finally:
        ledger.dispose()


def export(url: str) -> list[dict[str, Any]]:
    ledger = Ledger.from_url(url)
    try:
        return list(ledger.export_chain())
    finally:
        ledger.dispose()


@pytest.mark.parametrize(
    ("source_backend", "target_backend"),
    [
        pytest.param("sqlite", "postgresql", marks=pytest.mark.postgresql),
        pytest.param("postgresql", "sqlite", marks=pytest.mark.postgresql),
        pytest.param("postgresql", "postgresql", marks=pytest.mark.postgresql),
    ],
)
def test_a_copy_keeps_every_row_and_the_target_carries_on(
    source_backend: str, target_backend: str, new_url: Callable[[str], str]
) -> None:
    source, target = new_url(source_backend), new_url(target_backend)
    build_source(source)
    before = dump(source)
    host = create_engine(target)
    with host.begin() as connection:  # the host's own table: a target may hold it
        connection.execute(text("CREATE TABLE actor_reputation (id INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO actor_reputation VALUES (42)"))

    done = run_cli("db", "copy", "--from", source, "--to", target, "--page-size", "4")

    assert done.returncode == 0, done.stderr
    assert "chain heads agree" in done.stdout
    assert "the target verifies" in done.stdout
    assert migrations.current(target) == migrations.current(source)
    assert dump(target) == before  # every value, ids, digests (NULL ones too), chain
    assert dump(source) == before  # the source is only read
    assert export(target) == export(source)
    copied = ("token_checkpoints", "token_consumers", "token_stakes", "token_chain_receipts")
    assert all(before[name] for name in copied)
    with host.connect() as connection:
        assert connection.execute(text("SELECT id FROM actor_reputation")).scalar_one() == 42
    host.dispose()

    ledger = Ledger.from_url(target)
    try:
        report = ledger.verify()
        assert report.ok, report.problems
        top = max(row[0] for row in before["token_ledger"])
        entry = ledger.transfer("carol", "bob", 1, "on the new database")
        assert entry.id == top + 1  # the sequence continues after the copied ids
        stake = ledger.stake("bob", 1, "bid")
        assert stake.id == max(row[0] for row in before["token_stakes"]) + 1
        assert ledger.get_balance("bob") == _balance(source, "bob")  # +1 received, 1 staked
        # The chain goes on, in the order the source sealed in, then the new entries.
        assert ledger.seal() >= 2  # export_chain above sealed the copied, unsealed entry
        report = ledger.verify()
        assert report.ok, report.problems
    finally:
        ledger.dispose()


@pytest.mark.parametrize(
    "target_backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
)
def test_a_target_holding_ledger_rows_is_refused_and_left_alone(
    target_backend: str, new_url: Callable[[str], str]
) -> None:
    source, target = new_url("sqlite"), new_url(target_backend)
    build_source(source)
    migrations.upgrade(target)
    other = Ledger.from_url(target)
    other.create_account("zed", 7)
    other.dispose()
    before = dump(target)

    refused = run_cli("db", "copy", "--from", source, "--to", target)

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "not this source's" in refused.stderr
    assert dump(target) == before
    # --resume does not make it acceptable: the rows are not a prefix of the source's.
    assert run_cli("db", "copy", "--from", source, "--to", target, "--resume").returncode == 1
    assert dump(target) == before


def test_a_target_at_another_revision_is_refused(new_url: Callable[[str], str]) -> None:
    source, target = new_url("sqlite"), new_url("sqlite")
    build_source(source)
    migrations.upgrade(target, "0005_tamper_evidence")

    refused = run_cli("db", "copy", "--from", source, "--to", target)

    assert refused.returncode == 1
    assert "revision 0005_tamper_evidence" in refused.stderr
    assert migrations.current(target) == "0005_tamper_evidence"


_KILLED_COPY = textwrap.dedent(
    """
    import os, signal, sys
    from sqlalchemy import event
    from tokenledger.storage import create_engine
    from tokenledger.storage.copying import copy_ledger

    source, target = create_engine(sys.argv[1]), create_engine(sys.argv[2])
    inserts = 0

    @event.listens_for(target, "after_cursor_execute")
    def die(conn, cursor, statement, parameters, context, executemany):
        global inserts
        if statement.startswith("INSERT INTO token_ledger"):
            inserts += 1
            if inserts == 3:  # mid-page: this page's rows are sent, not committed
                os.kill(os.getpid(), signal.SIGKILL)

    copy_ledger(source, target, page_size=4)
    """
)


def _copy_killed_midway(source: str, target: str) -> None:
    """A copy process killed with SIGKILL in the middle of a journal page."""
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_COPY, source, target],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr


@pytest.mark.parametrize(
    ("source_backend", "target_backend"),
    [
        pytest.param("sqlite", "postgresql", marks=pytest.mark.postgresql),
        pytest.param("postgresql", "sqlite", marks=pytest.mark.postgresql),
    ],
)
def test_a_copy_killed_midway_is_refused_then_resumed(
    source_backend: str, target_backend: str, new_url: Callable[[str], str]
) -> None:
    source, target = new_url(source_backend), new_url(target_backend)
    build_source(source)
    before = dump(source)

    _copy_killed_midway(source, target)
    partial = dump(target)
    assert 0 < len(partial["token_ledger"]) < len(before["token_ledger"])
    assert partial["token_ledger"] == before["token_ledger"][: len(partial["token_ledger"])]
    assert partial["token_chain_head"][0][1] == 0  # the head, written last, is still genesis

    again = run_cli("db", "copy", "--from", source, "--to", target)
    assert again.returncode == 1
    assert "interrupted" in again.stderr
    assert "--resume" in again.stderr
    assert dump(target) == partial

    resumed = run_cli("db", "copy", "--from", source, "--to", target, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed and finished" in resumed.stdout
    assert dump(target) == before
    assert export(target) == export(source)


@pytest.mark.postgresql
def test_a_resume_after_the_source_moved_on_is_refused(new_url: Callable[[str], str]) -> None:
    """A row that changed in place since the interrupted copy (a consumer's position)."""
    source, target = new_url("sqlite"), new_url("postgresql")
    build_source(source)
    _copy_killed_midway(source, target)
    partial = dump(target)
    assert partial["token_consumers"], "the consumers are copied before the journal"
    ledger = Ledger.from_url(source)
    try:
        ledger.consumer("mailer").commit(5)  # was 3 when the copy read it; not the last row
    finally:
        ledger.dispose()

    refused = run_cli("db", "copy", "--from", source, "--to", target, "--resume")

    assert refused.returncode == 1
    assert "token_consumers that are not this source's" in refused.stderr
    assert dump(target) == partial


@pytest.mark.postgresql
def test_a_chain_the_target_server_could_not_extend_is_refused(
    new_url: Callable[[str], str],
) -> None:
    """Entries carrying txids the target server has not reached would sort after its own."""
    source, target = new_url("sqlite"), new_url("postgresql")
    build_source(source)
    engine = create_engine(source)
    with engine.begin() as connection:  # as if written on a busier PostgreSQL server
        connection.exec_driver_sql("DROP TRIGGER token_ledger_no_update")
        connection.exec_driver_sql(
            "UPDATE token_ledger SET writer_txid = 1000000000000 "
            "WHERE id = (SELECT max(id) FROM token_ledger)"
        )
    engine.dispose()

    refused = run_cli("db", "copy", "--from", source, "--to", target)

    assert refused.returncode == 1
    assert "transaction ids up to 1000000000000" in refused.stderr
    assert migrations.current(target) is None  # refused before anything was written


@pytest.mark.postgresql
def test_a_round_trip_through_sqlite_comes_back_only_unwritten(
    new_url: Callable[[str], str],
) -> None:
    """PostgreSQL -> SQLite -> PostgreSQL: whole if SQLite only read it; refused if it wrote."""
    first, local, back = new_url("postgresql"), new_url("sqlite"), new_url("postgresql")
    build_source(first)
    assert run_cli("db", "copy", "--from", first, "--to", local).returncode == 0

    returned = run_cli("db", "copy", "--from", local, "--to", back)
    assert returned.returncode == 0, returned.stderr
    ledger = Ledger.from_url(back)
    try:
        ledger.transfer("carol", "bob", 1, "home again")
        assert ledger.seal() >= 1
        report = ledger.verify()
        assert report.ok, report.problems
        assert report.counts["unsealed_pending"] == 0
    finally:
        ledger.dispose()

    ledger = Ledger.from_url(local)
    try:
        ledger.transfer("carol", "bob", 1, "written during the investigation")
    finally:
        ledger.dispose()
    again = new_url("postgresql")
    refused = run_cli("db", "copy", "--from", local, "--to", again)
    assert refused.returncode == 1
    assert "written on SQLite after it was copied from PostgreSQL" in refused.stderr
    assert migrations.current(again) is None  # refused before anything was written


def test_a_source_at_an_older_revision_is_copied_at_that_revision(
    new_url: Callable[[str], str],
) -> None:
    source, target = new_url("sqlite"), new_url("sqlite")
    migrations.upgrade(source, "0002_stakes")
    _legacy_rows(source)
    before = dump_present(source)

    done = run_cli("db", "copy", "--from", source, "--to", target)

    assert done.returncode == 0, done.stderr
    assert "not verified: upgrade both to head" in done.stdout
    assert migrations.current(target) == "0002_stakes"
    assert dump_present(target) == before
    migrations.upgrade(target)  # and the copy upgrades like the source would
    ledger = Ledger.from_url(target)
    try:
        assert ledger.seal() == 3
        assert ledger.verify().ok
    finally:
        ledger.dispose()


def dump_present(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables a database has, with the columns it has."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            tables = inspect(connection).get_table_names()
            return {
                name: [
                    tuple(r) for r in connection.execute(text(f"SELECT * FROM {name} ORDER BY 1"))
                ]
                for name in sorted(tables)
                if name in Base.metadata.tables
            }
    finally:
        engine.dispose()
