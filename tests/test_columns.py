"""One column list for the journal: everything that writes or reads an entry agrees with it."""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import UTC, datetime

from tokenledger import LedgerEntry
from tokenledger.api import EntryOut
from tokenledger.domain.entries import DRAFT_COLUMNS, ENTRY_COLUMNS, WRITTEN_COLUMNS
from tokenledger.domain.hashing import CANONICAL_V1_KEYS, canonical_entry, entry_hash
from tokenledger.domain.postings import Draft
from tokenledger.storage.models import journal_table
from tokenledger.storage.posting import postgres, sqlite
from tokenledger.storage.posting.postgres import POST_ENTRY_SQL, function_sql

# Columns of token_ledger that are the storage's bookkeeping, not the books.
STORAGE_ONLY = {"writer_txid", "digest"}


def test_the_table_holds_the_columns_and_nothing_else_of_the_books() -> None:
    assert [c.name for c in journal_table.columns if c.name not in STORAGE_ONLY] == list(
        ENTRY_COLUMNS
    )


def test_records_and_drafts_are_the_column_list() -> None:
    assert tuple(f.name for f in fields(LedgerEntry)) == ENTRY_COLUMNS
    assert tuple(f.name for f in fields(Draft)) == DRAFT_COLUMNS
    draft = Draft("a", "b", 1, "r")
    assert tuple(draft.as_row()) == DRAFT_COLUMNS


def test_the_http_entry_is_the_column_list_but_the_writers_retry_token() -> None:
    # idempotency_key is the client's retry token, not a fact of the books; tx_hash,
    # where the chain bridge put the entry, comes from the receipts table.
    assert tuple(EntryOut.model_fields) == (
        *(c for c in ENTRY_COLUMNS if c != "idempotency_key"),
        "tx_hash",
    )


def test_both_adapters_insert_every_written_column() -> None:
    for statement in (sqlite._APPEND, postgres._append_sql()):
        columns = re.search(r"INSERT INTO token_ledger \(([^)]*)\)", statement)
        assert columns is not None
        named = [c.strip() for c in columns.group(1).split(",")]
        # The id is written explicitly: the digest covers it.
        assert [c for c in named if c not in STORAGE_ONLY] == ["id", *WRITTEN_COLUMNS]
        assert "digest" in named


def test_the_server_function_inserts_every_column_a_one_entry_write_has() -> None:
    body = function_sql(POST_ENTRY_SQL)
    columns = re.search(r"INSERT INTO token_ledger \(([^)]*)\)", body, re.S)
    assert columns is not None
    named = [c.strip() for c in columns.group(1).split(",")]
    # A one-entry write has no stake and reverses nothing: those stay NULL.
    one_entry = [c for c in WRITTEN_COLUMNS if c not in {"stake_id", "reverses_entry_id"}]
    assert [c for c in named if c not in STORAGE_ONLY] == ["id", *one_entry]
    assert "digest" in named


def test_the_canonical_encoding_covers_every_column_and_is_unchanged() -> None:
    assert sorted(CANONICAL_V1_KEYS.values()) == sorted(ENTRY_COLUMNS)
    # The worked example of docs/audit.md: the bytes and hash of version 1 never change.
    entry = {
        "id": 2,
        "timestamp": datetime(2026, 11, 23, 23, 55, 56, 139985, tzinfo=UTC),
        "from_account": "alice",
        "to_account": "bob",
        "amount": 12_500_000,
        "reason": "debate_reward",
        "reference_type": "debate",
        "reference_id": "d-17",
        "memo": None,
        "balance_after_from": 87_500_000,
        "balance_after_to": 12_500_000,
        "idempotency_key": None,
        "stake_id": None,
        "reverses_entry_id": None,
    }
    assert canonical_entry(entry) == (
        b'{"amount":12500000,"balance_after_from":87500000,"balance_after_to":12500000,'
        b'"from":"alice","id":2,"idempotency_key":null,"memo":null,"reason":"debate_reward",'
        b'"reference_id":"d-17","reference_type":"debate","reverses_entry_id":null,'
        b'"stake_id":null,"timestamp":"2026-11-23T23:55:56.139985Z","to":"bob","v":1}'
    )
    # SHA-256 over the previous hash's bytes and those canonical bytes.
    assert entry_hash("00" * 32, entry) == (
        "1040f6cebc28ec675a15ddf2093614eda31d467fcb143ff6a807f289d0830832"
    )
