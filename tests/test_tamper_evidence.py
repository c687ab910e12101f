"""Tamper evidence from the moment of commit, and against an anchor kept elsewhere.

Every attack runs with the database's guards off (PostgreSQL's
``session_replication_role = replica``, SQLite's triggers dropped), as the
database's owner could: the change must be reported by ``verify()`` and name
what it touched, whether the entry was sealed into the chain or not yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tokenledger import Checkpoint, InvalidArgument, Ledger
from tokenledger.domain.hashing import ENTRY_DIGEST_COLUMNS, STAKE_DIGEST_COLUMNS, entry_digest
from tokenledger.storage.models import journal_table


def _books(ledger: Ledger) -> dict[str, int]:
    """Entries of every kind, some sealed and checkpointed, the last ones not."""
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 50)
    ledger.create_account("carol", 0)
    sealed = ledger.transfer("alice", "bob", "12.5", "sealed", "ref", "r-1", memo="first")
    settled = ledger.stake("bob", 20, "position", "market", "m1", memo="bid")
    ledger.settle(settled.id, "carol", "won", amount=15)
    ledger.checkpoint()
    fresh = ledger.transfer("bob", "carol", 2, "fresh", "ref", "r-2", "not sealed yet")
    opened = ledger.stake("carol", 3, "open position", expires_at="2099-01-01T00:00:00Z")
    undo = ledger.transfer("alice", "carol", 1, "oops", idempotency_key="k-oops")
    reversal = ledger.reverse(undo.id, "undo", memo="sorry")
    assert ledger.verify().ok
    return {
        "sealed": sealed.id,
        "fresh": fresh.id,
        "reversal": reversal.id,
        "settled": settled.id,
        "opened": opened.id,
    }


def _problems(ledger: Ledger, anchor: Any = None) -> list[Any]:
    report = ledger.verify(anchor=anchor)
    assert not report.ok
    return report.problems


def _value_changed(column: str, value: Any, backend: str) -> Any:
    """Another value of the same type for a stored column (as raw SQL would write it)."""
    if column in {"timestamp", "expires_at", "created_at", "closed_at"}:
        if value is None:
            return "2098-01-01 00:00:00.000000" if backend == "sqlite" else "2098-01-01T00:00:00Z"
        moved = value + timedelta(microseconds=1) if not isinstance(value, str) else None
        if moved is None:  # SQLite hands back text
            return value[:-1] + ("1" if value[-1] != "1" else "2")
        return moved
    if column == "id":
        return value + 1000  # an id nothing else has
    if isinstance(value, int) and not isinstance(value, bool):
        return value + 1
    if value is None:
        return "planted" if column not in {"stake_id", "reverses_entry_id"} else 1
    if column == "digest":
        return ("0" if value[0] != "0" else "1") + value[1:]
    return value + "!"


def _row(engine: Engine, table: str, key: str, value: int) -> dict[str, Any]:
    with engine.connect() as connection:
        return dict(
            connection.execute(text(f"SELECT * FROM {table} WHERE {key} = :v"), {"v": value})
            .one()
            ._mapping
        )


ENTRY_COLUMNS_TO_ATTACK = (*ENTRY_DIGEST_COLUMNS, "digest")


@pytest.mark.parametrize("which", ["sealed", "fresh", "reversal"])
@pytest.mark.parametrize("column", ENTRY_COLUMNS_TO_ATTACK)
def test_any_stored_column_of_any_entry_changed_is_named(
    ledger: Ledger,
    engine: Engine,
    tamper: Callable[..., None],
    backend: str,
    which: str,
    column: str,
) -> None:
    targets = _books(ledger)
    target = targets[which]
    before = _row(engine, "token_ledger", "id", target)
    changed = _value_changed(column, before[column], backend)
    tamper(f"UPDATE token_ledger SET {column} = :v WHERE id = :id", v=changed, id=target)
    named = {p.entry_id for p in _problems(ledger)}
    now_id = changed if column == "id" else target
    assert named & {target, now_id}, (column, which, named)


def test_a_digest_removed_from_a_fresh_entry_is_named(
    ledger: Ledger, tamper: Callable[..., None]
) -> None:
    targets = _books(ledger)
    tamper("UPDATE token_ledger SET digest = NULL WHERE id = :id", id=targets["fresh"])
    kinds = {(p.kind, p.entry_id) for p in _problems(ledger)}
    assert ("entry_digest_missing", targets["fresh"]) in kinds


def test_a_digest_recomputed_by_the_attacker_still_breaks_the_chain(
    ledger: Ledger, engine: Engine, tamper: Callable[..., None]
) -> None:
    """An edit with a correct new digest passes the digest check, never the sealed link."""
    targets = _books(ledger)
    row = _row(engine, "token_ledger", "id", targets["sealed"])
    forged = {**row, "memo": "rewritten"}
    forged["timestamp"] = journal_table.c.timestamp.type.process_result_value(  # type: ignore[attr-defined]
        row["timestamp"], engine.dialect
    )
    tamper(
        "UPDATE token_ledger SET memo = :m, digest = :d WHERE id = :id",
        m="rewritten",
        d=entry_digest(forged),
        id=targets["sealed"],
    )
    kinds = {(p.kind, p.entry_id) for p in _problems(ledger)}
    assert ("chain_hash_mismatch", targets["sealed"]) in kinds
    assert not any(kind == "entry_digest_mismatch" for kind, _ in kinds)


@pytest.mark.parametrize("which", ["settled", "opened"])
@pytest.mark.parametrize("column", [*STAKE_DIGEST_COLUMNS, "digest"])
def test_any_column_of_any_stake_changed_is_named(
    ledger: Ledger,
    engine: Engine,
    tamper: Callable[..., None],
    backend: str,
    which: str,
    column: str,
) -> None:
    targets = _books(ledger)
    target = targets[which]
    before = _row(engine, "token_stakes", "id", target)
    also = ""
    if column == "status":
        changed = "released" if before["status"] != "released" else "settled"
    elif column == "account_id":
        changed = "alice" if before["account_id"] != "alice" else "bob"
    else:
        changed = _value_changed(column, before[column], backend)
    if before["status"] == "open" and column in {"status", "closed_at"}:
        # A CHECK (not a trigger) ties them: open exactly when not closed.
        also = ", closed_at = created_at" if column == "status" else ", status = 'expired'"
    tamper(f"UPDATE token_stakes SET {column} = :v{also} WHERE id = :id", v=changed, id=target)
    named = {p.stake_id for p in _problems(ledger)}
    assert named & {target, changed if column == "id" else target}, (column, which, named)


def test_deleted_inserted_and_swapped_entries_are_found(
    ledger: Ledger, engine: Engine, tamper: Callable[..., None]
) -> None:
    targets = _books(ledger)
    fresh, reversal = targets["fresh"], targets["reversal"]
    # Swapped: two unsealed entries exchange their contents.
    first, second = (
        _row(engine, "token_ledger", "id", fresh),
        _row(engine, "token_ledger", "id", reversal),
    )
    for target, source in ((fresh, second), (reversal, first)):
        tamper(
            "UPDATE token_ledger SET from_account = :f, to_account = :t, amount = :a, "
            "reason = :r WHERE id = :id",
            f=source["from_account"],
            t=source["to_account"],
            a=source["amount"],
            r=source["reason"],
            id=target,
        )
    swapped = {(p.kind, p.entry_id) for p in _problems(ledger)}
    assert {("entry_digest_mismatch", fresh), ("entry_digest_mismatch", reversal)} <= swapped

    # Inserted by hand, with no digest, after the others.
    tamper(
        "INSERT INTO token_ledger (id, timestamp, from_account, to_account, amount, reason, "
        "balance_after_from, balance_after_to, writer_txid) "
        "SELECT max(id) + 100, max(timestamp), 'system', 'carol', 5000000, 'forged', NULL, "
        "5000000, 0 FROM token_ledger"
    )
    kinds = {p.kind for p in _problems(ledger)}
    assert {"entry_digest_missing", "account_mismatch", "supply_mismatch"} <= kinds

    # Deleted: an entry between others of the same accounts.
    tamper("DELETE FROM token_ledger WHERE id = :id", id=fresh)
    kinds = {p.kind for p in _problems(ledger)}
    assert "balance_after_mismatch" in kinds or "account_mismatch" in kinds


# -- anchors kept outside the database ---------------------------------------------


def _anchor_of(checkpoint: Checkpoint | None) -> dict[str, Any]:
    assert checkpoint is not None
    return {
        "last_seq": checkpoint.last_seq,
        "chain_hash": checkpoint.chain_hash,
        "merkle_root": checkpoint.merkle_root,
    }


def test_the_books_extend_their_own_anchors(ledger: Ledger) -> None:
    _books(ledger)
    first = ledger.latest_checkpoint()
    ledger.mint("carol", 1, "later")
    second = ledger.checkpoint()
    assert second is not None
    assert first is not None
    for anchor in (first, _anchor_of(first), [first, _anchor_of(second)]):
        report = ledger.verify(anchor=anchor)
        assert report.ok, report.problems
    assert ledger.verify(anchor=[first, second]).counts["anchors"] == 2


def test_an_anchor_ahead_of_the_books_is_a_problem(ledger: Ledger) -> None:
    _books(ledger)
    anchor = _anchor_of(ledger.latest_checkpoint())
    ahead = {**anchor, "last_seq": anchor["last_seq"] + 50}
    assert [p.kind for p in _problems(ledger, ahead)] == ["anchor_ahead"]
    wrong = {**anchor, "merkle_root": "ab" * 32}
    assert [p.kind for p in _problems(ledger, wrong)] == ["anchor_mismatch"]


@pytest.mark.parametrize(
    "bad",
    [
        {"last_seq": 1, "chain_hash": "00" * 32},
        {"last_seq": 0, "chain_hash": "00" * 32, "merkle_root": "00" * 32},
        {"last_seq": "1", "chain_hash": "00" * 32, "merkle_root": "00" * 32},
        {"last_seq": 1, "chain_hash": "zz" * 32, "merkle_root": "00" * 32},
        {"last_seq": 1, "chain_hash": "00" * 31, "merkle_root": "00" * 32},
        "not an anchor",
        5,
    ],
)
def test_a_malformed_anchor_is_refused(ledger: Ledger, bad: object) -> None:
    with pytest.raises(InvalidArgument):
        ledger.verify(anchor=bad)


def test_a_history_rewritten_and_resealed_is_caught_only_by_the_anchor(
    ledger: Ledger, engine: Engine, tamper: Callable[..., None]
) -> None:
    """The owner edits a sealed entry, fixes its digest, drops the chain and re-seals it all.

    The books then agree with themselves: ``verify()`` is ok. Only the anchor
    kept outside the database proves the history is not the one it anchored.
    """
    targets = _books(ledger)
    ledger.seal()
    anchor = _anchor_of(ledger.checkpoint() or ledger.latest_checkpoint())
    row = _row(engine, "token_ledger", "id", targets["sealed"])
    forged = dict(row)
    forged["memo"] = "a different history"
    forged["timestamp"] = journal_table.c.timestamp.type.process_result_value(  # type: ignore[attr-defined]
        row["timestamp"], engine.dialect
    )
    tamper(
        "UPDATE token_ledger SET memo = :m, digest = :d WHERE id = :id",
        m=forged["memo"],
        d=entry_digest(forged),
        id=targets["sealed"],
    )
    tamper("DELETE FROM token_checkpoints")
    tamper("DELETE FROM token_chain")
    tamper(
        "UPDATE token_chain_head SET seq = 0, hash = :g, last_txid = 0, last_entry_id = 0",
        g="0" * 64,
    )
    ledger.seal()
    ledger.checkpoint()
    assert ledger.verify().ok  # consistent with itself
    kinds = [p.kind for p in _problems(ledger, anchor)]
    assert kinds == ["anchor_mismatch"]


def test_the_cli_prints_an_anchor_and_verifies_against_a_file_of_them(
    database_url: str, ledger: Ledger, engine: Engine, tamper: Callable[..., None], tmp_path: Path
) -> None:
    _books(ledger)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tokenledger.cli", *args, "--url", database_url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    anchors = tmp_path / "anchors.jsonl"
    for _ in range(2):  # the operator appends each checkpoint to a file kept elsewhere
        made = cli("checkpoint", "--json")
        assert made.returncode == 0, made.stderr
        checkpoint = json.loads(made.stdout)
        assert {"last_seq", "chain_hash", "merkle_root"} <= set(checkpoint)
        with anchors.open("a") as handle:
            handle.write(json.dumps(checkpoint) + "\n")
        ledger.mint("carol", 1, "between checkpoints")
    whole = cli("verify", "--anchor", str(anchors))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    tamper("UPDATE token_chain SET hash = :h WHERE seq = 1", h="cd" * 32)
    tamper("UPDATE token_checkpoints SET chain_hash = :h WHERE first_seq = 1", h="cd" * 32)
    broken = cli("verify", "--anchor", str(anchors))
    assert broken.returncode == 3
    assert "chain_hash_mismatch" in broken.stdout
    malformed = tmp_path / "bad.json"
    malformed.write_text('{"last_seq": "x"}')
    assert cli("verify", "--anchor", str(malformed)).returncode == 2
