"""The ``tokenledger`` command, run as a real subprocess on both backends.

Every test starts ``python -m tokenledger.cli`` the way an operator's shell
or a deploy pipeline would, and checks exit codes, what is printed, and what
the database holds afterwards. Starting an interpreter costs most of a
command's time, so calls that do not depend on each other run side by side
(``run_many``); setup that is not under test goes through the library.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tokenledger import Ledger, migrations
from tokenledger.chain import ZERO_ADDRESS, address_for, balances_from_transfers, verify_inclusion
from tokenledger.cli.demo import DemoConfig, run_demo
from tokenledger.storage import create_engine

HEAD = migrations.head()
TOKEN = 10**18  # one token in the chain export's 18-decimal integers

Result = subprocess.CompletedProcess[str]


def run_cli(
    *args: str,
    url: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str = "",
) -> Result:
    """Run ``tokenledger ARGS [--url URL]`` in a fresh interpreter."""
    command = [sys.executable, "-m", "tokenledger.cli", *args]
    if url is not None:
        command += ["--url", url]
    environment = {k: v for k, v in os.environ.items() if k != migrations.URL_ENV}
    environment.pop("TOKENLEDGER_DEBUG", None)
    environment["COLUMNS"] = "200"  # keep rich tables to one line per row
    environment.update(env or {})
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        input=stdin,
        timeout=120,
        check=False,
    )


def run_many(*calls: Sequence[str], url: str | None = None) -> list[Result]:
    """Run independent commands side by side; results in the order given."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: run_cli(*args, url=url), calls))


def ok(result: Result) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def failed(result: Result, exit_code: int, *phrases: str) -> str:
    """The one-line error of a command that must have failed with ``exit_code``."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def seal_everything(ledger: Ledger, timeout: float = 20.0) -> None:
    """Seal until no entry is left out of the chain.

    On PostgreSQL the sealer waits for every transaction open on the server
    (in any database), so another client can hold new entries back briefly.
    """
    deadline = time.monotonic() + timeout
    while True:
        ledger.seal()
        if ledger.verify().counts.get("unsealed_pending", 0) == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail("entries stayed unsealed: a transaction on the server stays open")
        time.sleep(0.05)


# -- accounts, writes and reads ------------------------------------------------


def test_operator_session(database_url: str, ledger: Ledger) -> None:
    alice, bob = run_many(
        ("account", "create", "alice"),
        ("account", "create", "bob", "--initial", "50", "--json"),
        url=database_url,
    )
    assert "created account alice with 1000.000000" in ok(alice)
    assert (json.loads(ok(bob))["account_id"], json.loads(ok(bob))["balance"]) == (
        "bob",
        "50.000000",
    )

    mint_args = ("mint", "alice", "10.5", "--reason", "grant", "--reference-type", "debate")
    mint_args += ("--reference-id", "d-1", "--memo", "[bold]not markup[/bold]")
    mint_args += ("--idempotency-key", "grant-1", "--json")
    minted = json.loads(ok(run_cli(*mint_args, url=database_url)))
    assert (minted["from_account"], minted["to_account"]) == ("system", "alice")
    assert (minted["amount"], minted["balance_after_to"]) == ("10.500000", "1010.500000")
    assert (minted["reference_type"], minted["memo"]) == ("debate", "[bold]not markup[/bold]")

    retry, transfer, burn = run_many(
        mint_args,  # the same call again, as after a timeout: answered, not written
        ("transfer", "alice", "bob", "12.25", "--reason", "review"),
        ("burn", "bob", "2", "--reason", "fee"),
        url=database_url,
    )
    assert json.loads(ok(retry))["id"] == minted["id"]
    assert "transferred 12.250000 from alice to bob (entry " in ok(transfer)
    assert "alice now has 998.250000" in ok(transfer)
    assert "burned 2.000000 from bob (entry " in ok(burn)

    (balance, statement, short, supply, nobody, reserved, bad_amount, overdraft, twice) = run_many(
        ("balance", "alice"),
        ("statement", "alice", "--json"),
        ("statement", "alice", "--limit", "2"),
        ("supply", "--window-hours", "1", "--json"),
        ("balance", "nobody"),
        ("account", "create", "system"),
        ("mint", "alice", "abc", "--reason", "r"),
        ("transfer", "alice", "bob", "5000", "--reason", "r"),
        ("account", "create", "alice"),
        url=database_url,
    )
    assert ok(balance) == "998.250000\n"
    entries = json.loads(ok(statement))
    assert [(e["reason"], e["amount"]) for e in entries] == [
        ("review", "12.250000"),
        ("grant", "10.500000"),
        ("initial_balance", "1000.000000"),
    ]
    assert entries[0]["balance_after_from"] == "998.250000"
    assert entries[0]["timestamp"].endswith("+00:00")
    table = ok(short)
    assert "Statement of alice" in table
    assert re.search(r"-12\.250000\s.*998\.250000", table)
    assert "+10.500000" in table
    assert "initial_balance" not in table  # cut off by --limit 2
    report = json.loads(ok(supply))
    assert report["total_supply"] == "1058.500000"  # 1000 + 50 + 10.5 - 2
    assert (report["minted"], report["burned"], report["accounts"]) == (
        "1060.500000",
        "2.000000",
        2,
    )
    assert report["velocity"]["transfer_volume"] == "12.250000"
    assert [(h["account_id"], h["holdings"]) for h in report["distribution"]["top_holders"]] == [
        ("alice", "998.250000"),
        ("bob", "60.250000"),
    ]
    failed(nobody, 1, "account not found", "nobody")
    failed(reserved, 1, "reserved")
    failed(bad_amount, 1, "not a decimal amount")
    failed(overdraft, 1, "insufficient funds in 'alice'", "998.250000")
    failed(twice, 1, "already exists")

    # The balance just after the mint, from the journal rather than the account row.
    as_of = run_cli("balance", "alice", "--as-of", entries[1]["timestamp"], url=database_url)
    assert ok(as_of) == "1010.500000\n"
    # The rejections wrote nothing.
    assert ledger.get_balance("alice") == Decimal("998.250000")
    assert ledger.get_balance("bob") == Decimal("60.250000")
    assert len(ledger.list_entries()) == 5


def test_input_errors_are_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrations.upgrade(url)
    ledger = Ledger(create_engine(url))
    ledger.create_account("alice")
    ledger.dispose()
    not_json = tmp_path / "not.json"
    not_json.write_text("{balances")
    results = run_many(
        ("mint", "alice", "0.0000001", "--reason", "r"),
        ("account", "create", ""),
        ("transfer", "alice", "alice", "1", "--reason", "r"),
        ("balance", "alice", "--as-of", "yesterday-ish"),
        ("mint", "alice", "5"),
        ("statement", "alice", "--limit", "many"),
        ("chain", "reconcile", str(not_json)),
        ("stakes", "expire", "--now", "soon"),
        url=url,
    )
    decimals, empty_id, to_self, as_of, no_reason, limit, snapshot, now = results
    failed(decimals, 1, "more than 6 decimal places")
    failed(empty_id, 1, "must not be empty")
    failed(to_self, 1, "to itself")
    failed(as_of, 1, "ISO-8601")
    failed(now, 1, "ISO-8601")
    failed(no_reason, 2, "--reason", "tokenledger mint --help")
    failed(limit, 2, "--limit")
    failed(snapshot, 2, "not JSON")


def test_unusable_databases_fail_in_one_line(tmp_path: Path) -> None:
    missing_dir = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'ledger.db'}"
    bad, refused, dialect, missing, empty, unknown = run_many(
        ("balance", "alice", "--url", "not a url"),
        ("balance", "alice", "--url", "postgresql+psycopg2://app:s3cret@127.0.0.1:1/ledger"),
        ("verify", "--url", "nosuchdb://host/x"),
        ("balance", "alice", "--url", missing_dir),
        ("balance", "alice", "--url", ""),
        ("no-such-command",),
    )
    failed(bad, 4, "bad database URL")
    assert "s3cret" not in failed(refused, 4, "cannot use the database", "127.0.0.1")
    failed(dialect, 4, "nosuchdb")
    failed(missing, 4, "unable to open")
    failed(empty, 2, "--url", "must not be empty")  # never the default file by accident
    failed(unknown, 2, "no-such-command")


def test_missing_cli_extra_names_the_extra(tmp_path: Path) -> None:
    # A fresh interpreter in which click cannot be imported, as without the extra.
    program = (
        "import sys; sys.modules['click'] = None\n"
        "from tokenledger.cli import main\n"
        "sys.exit(main(['balance', 'alice']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    failed(result, 5, "pip install 'tokenledger[cli]'")
    assert not (tmp_path / "tokenledger.db").exists()


# -- where the database is ---------------------------------------------------


def test_default_database_is_a_sqlite_file_in_the_working_directory(tmp_path: Path) -> None:
    assert "created account alice" in ok(run_cli("account", "create", "alice", cwd=tmp_path))
    assert (tmp_path / "tokenledger.db").is_file()
    elsewhere = tmp_path / "elsewhere.db"
    with ThreadPoolExecutor() as pool:
        balance = pool.submit(run_cli, "balance", "alice", cwd=tmp_path)
        # The environment variable wins over the default file.
        env = {migrations.URL_ENV: f"sqlite:///{elsewhere}"}
        other = pool.submit(run_cli, "balance", "alice", cwd=tmp_path, env=env)
    assert ok(balance.result()) == "1000.000000\n"
    failed(other.result(), 1, "account not found")
    assert elsewhere.is_file()


def test_db_commands_migrate_only_when_asked(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
        check = run_cli("db", "current", "--check", url=url)
        assert not (tmp_path / "fresh.db").exists()  # reading the revision created nothing
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create_database("tokenledger_cli")
        request.addfinalizer(lambda: server.drop_database(url))
        check, refused = run_many(("db", "current", "--check"), ("balance", "alice"), url=url)
        # PostgreSQL is never migrated implicitly: other commands refuse it.
        failed(refused, 4, "has no tokenledger schema", "tokenledger db upgrade")
    assert check.returncode == 3
    assert check.stdout.startswith("none (no tokenledger schema")

    assert f"upgraded from base to {HEAD}" in ok(run_cli("db", "upgrade", url=url))
    previous = migrations.history()[-2][0]
    history, unconfirmed = run_many(("db", "history"), ("db", "downgrade", previous), url=url)
    assert [line.split(":")[0] for line in ok(history).splitlines()] == [
        f"{parent or '<base>'} -> {name}" + (" (head, current)" if name == HEAD else "")
        for name, parent, _ in migrations.history()
    ]
    # Without --yes the downgrade asks first; no answer keeps the schema.
    failed(unconfirmed, 1, "aborted")

    downgraded = run_cli("db", "downgrade", previous, "--yes", url=url)
    assert f"downgraded from {HEAD} to {previous}" in ok(downgraded)
    # One after the other: on SQLite, verify brings the file to head first.
    current = run_cli("db", "current", "--check", url=url)
    refused = run_cli("verify", url=url)
    assert current.returncode == 3
    assert current.stdout.startswith(f"{previous} (head is {HEAD}")
    if backend == "postgresql":
        failed(refused, 4, f"is at revision {previous}, not {HEAD}")
    else:  # an embedded SQLite file is brought to head on first use
        assert ok(refused).startswith("OK")
    upgraded = ok(run_cli("db", "upgrade", url=url))
    if backend == "postgresql":
        assert f"upgraded from {previous} to {HEAD}" in upgraded
    else:
        assert f"already at {HEAD}" in upgraded
    assert ok(run_cli("db", "current", url=url)) == f"{HEAD} (head)\n"


# -- stakes --------------------------------------------------------------------


def test_stakes_list_and_expire(database_url: str, ledger: Ledger) -> None:
    ledger.create_account("carol", 500)
    soon = datetime.now(UTC) + timedelta(seconds=2)
    expiring = ledger.stake("carol", "120.5", "artifact_bid", "artifact", "a-1", expires_at=soon)
    released = ledger.stake("carol", 30, "bond")
    ledger.release(released.id, "bond_returned")
    while datetime.now(UTC) <= soon + timedelta(milliseconds=10):
        time.sleep(0.05)

    # --now can only look earlier: nothing was due a minute before the expiry.
    earlier = (soon - timedelta(minutes=1)).isoformat()
    open_only, every, nothing_due = run_many(
        ("stakes", "list", "carol", "--json"),
        ("stakes", "list", "carol", "--all"),
        ("stakes", "expire", "--now", earlier),
        url=database_url,
    )
    assert [(s["id"], s["amount"], s["status"]) for s in json.loads(ok(open_only))] == [
        (expiring.id, "120.500000", "open")
    ]
    table = ok(every)
    assert "artifact/a-1" in table
    assert re.search(rf"\b{expiring.id}\b.*120\.500000.*open", table)
    assert re.search(rf"\b{released.id}\b.*30\.000000.*released", table)
    assert ok(nothing_due) == "expired 0 stakes\n"

    assert ok(run_cli("stakes", "expire", url=database_url)) == "expired 1 stake\n"
    assert ledger.get_stake(expiring.id).status == "expired"
    assert ledger.get_balance("carol") == 500


# -- audit and chain -----------------------------------------------------------


def test_chain_export_reconcile_proofs_and_verify(
    database_url: str, ledger: Ledger, backend: str, tmp_path: Path
) -> None:
    ledger.create_account("alice", 0)
    ledger.create_account("bob", 0)
    mint = ledger.mint("alice", 5, "grant")
    transfer = ledger.transfer("alice", "bob", "2.5", "pay")
    assert re.fullmatch(r"sealed [0-2] entr(y|ies)\n", ok(run_cli("seal", url=database_url)))
    seal_everything(ledger)

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    export, nothing, early, healthy = run_many(
        ("chain", "export"),
        ("chain", "export", "--since", future),
        ("chain", "prove", str(transfer.id)),
        ("verify",),
        url=database_url,
    )
    records = [json.loads(line) for line in ok(export).splitlines()]
    assert [(r["entry_id"], r["seq"]) for r in records] == [(mint.id, 1), (transfer.id, 2)]
    alice, bob = address_for("alice"), address_for("bob")
    assert (records[0]["from"], records[0]["to"], records[0]["value"]) == (
        ZERO_ADDRESS,
        alice,
        5 * TOKEN,
    )
    assert (records[1]["from"], records[1]["to"], records[1]["value"]) == (
        alice,
        bob,
        5 * TOKEN // 2,
    )
    for record in records:
        assert isinstance(record["value"], int)
        assert record["timestamp"].endswith("Z")
        assert re.fullmatch(r"0x[0-9a-f]{64}", record["hash"])
    assert ok(nothing) == ""
    failed(early, 1, "not under a checkpoint", "tokenledger checkpoint")
    assert ok(healthy).startswith("OK: the books are whole (2 entries, 2 accounts")

    snapshot = balances_from_transfers(records)
    assert snapshot == {alice: 5 * TOKEN // 2, bob: 5 * TOKEN // 2}
    good = tmp_path / "snapshot.json"
    good.write_text(json.dumps(snapshot))
    snapshot[bob] += 1
    drifted = tmp_path / "drifted.json"
    drifted.write_text(json.dumps(snapshot))
    agrees, differs, made = run_many(
        ("chain", "reconcile", str(good)),
        ("chain", "reconcile", str(drifted)),
        ("checkpoint",),
        url=database_url,
    )
    assert "no mismatches" in ok(agrees)
    assert differs.returncode == 3, (differs.stdout, differs.stderr)
    reported = [line for line in differs.stdout.splitlines() if line.startswith("0x")]
    assert len(reported) == 1
    assert reported[0].startswith(f"{bob} (bob): ledger {5 * TOKEN // 2}, chain")
    assert reported[0].endswith("difference +1")
    assert ok(made).startswith("checkpoint 1: chain positions 1..2 (2 entries)")

    again, proof_json, proof_text = run_many(
        ("checkpoint",),
        ("chain", "prove", str(transfer.id), "--json"),
        ("chain", "prove", str(mint.id)),
        url=database_url,
    )
    assert ok(again) == "nothing new since the last checkpoint\n"
    proof = json.loads(ok(proof_json))
    assert proof["verified"] is True
    assert (proof["entry_id"], proof["index"], proof["size"]) == (transfer.id, 1, 2)
    assert "0x" + proof["entry_hash"] == records[1]["hash"]
    assert verify_inclusion(
        proof["entry_hash"], proof["index"], proof["size"], proof["path"], proof["merkle_root"]
    )
    assert "tokenledger.chain.verify_inclusion" in ok(proof_text)
    assert "verified here: yes" in proof_text.stdout

    _tamper_with_amount(database_url, backend, transfer.id)
    broken, broken_json = run_many(("verify",), ("verify", "--json"), url=database_url)
    assert broken.returncode == 3, (broken.stdout, broken.stderr)
    assert broken.stdout.startswith("FAILED: ")
    assert f"entry {transfer.id} " in broken.stdout
    assert broken_json.returncode == 3
    report = json.loads(broken_json.stdout)
    assert report["ok"] is False
    kinds = {p["kind"] for p in report["problems"] if p.get("entry_id") == transfer.id}
    assert {"chain_hash_mismatch", "balance_after_mismatch"} <= kinds


def _tamper_with_amount(url: str, backend: str, entry_id: int) -> None:
    """Add one token to an entry's amount behind the ledger's back."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            if backend == "postgresql":
                # Enabled again in the same transaction: the guard is back at commit.
                connection.execute(
                    text("ALTER TABLE token_ledger DISABLE TRIGGER token_ledger_append_only")
                )
            else:
                connection.execute(text("DROP TRIGGER token_ledger_no_update"))
            connection.execute(
                text("UPDATE token_ledger SET amount = amount + 1000000 WHERE id = :id"),
                {"id": entry_id},
            )
            if backend == "postgresql":
                connection.execute(
                    text("ALTER TABLE token_ledger ENABLE TRIGGER token_ledger_append_only")
                )
    finally:
        engine.dispose()


# -- the demonstration economy ---------------------------------------------------


def test_demo_balances_its_books_and_reruns_safely(database_url: str, ledger: Ledger) -> None:
    args = ("demo", "--agents", "6", "--rounds", "4", "--seed", "7")
    first = ok(run_cli(*args, url=database_url))
    assert "the books balance" in first
    assert "verify(): 0 problems" in first
    assert "accounts created 7, reused 0" in first  # six agents and the treasury
    assert "Top holders" in first
    assert "FAILED" not in first

    second = ok(run_cli(*args, url=database_url))
    assert "accounts created 0, reused 7" in second
    assert "the books balance" in second
    assert ledger.verify().ok

    # A ledger with somebody else's accounts is not played in without --force.
    ledger.create_account("alice")
    failed(run_cli(*args, url=database_url), 1, "not the demo's", "--force")


def _journal(url: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT from_account, to_account, amount, reason FROM token_ledger ORDER BY id"
                )
            )
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


@pytest.fixture
def two_fresh_urls(tmp_path: Path) -> tuple[str, str]:
    urls = (f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}")
    for url in urls:
        migrations.upgrade(url)
    return urls


def test_one_seed_writes_one_economy(two_fresh_urls: tuple[str, str]) -> None:
    config = DemoConfig(agents=5, rounds=3, seed=11)
    results = []
    for url in two_fresh_urls:
        ledger = Ledger(create_engine(url))
        try:
            results.append(run_demo(ledger, config))
        finally:
            ledger.dispose()
    first, second = results
    assert first.integrity.ok
    assert second.integrity.ok
    assert first.run_id != second.run_id
    assert _journal(two_fresh_urls[0]) == _journal(two_fresh_urls[1])
    assert first.supply.total_supply == second.supply.total_supply
