"""The journal's columns: the one list that writers, readers and encodings derive from.

``ENTRY_COLUMNS`` is every column of a ``token_ledger`` row that belongs to
the books, in the order the schema declares them. The journal's INSERTs
(``storage``), the ``LedgerEntry`` record, the HTTP model and the canonical
encoding either derive from it or are checked against it by a test
(``tests/test_columns.py``). Storage-only columns (``writer_txid``, the
sealer's bookkeeping) are not in it.
"""

from __future__ import annotations

__all__ = ["AMOUNT_COLUMNS", "DRAFT_COLUMNS", "ENTRY_COLUMNS", "WRITTEN_COLUMNS"]

ENTRY_COLUMNS: tuple[str, ...] = (
    "id",
    "timestamp",
    "from_account",
    "to_account",
    "amount",
    "reason",
    "reference_type",
    "reference_id",
    "memo",
    "balance_after_from",
    "balance_after_to",
    "idempotency_key",
    "stake_id",
    "reverses_entry_id",
)
# What a writer supplies; the database assigns the id.
WRITTEN_COLUMNS: tuple[str, ...] = ENTRY_COLUMNS[1:]
# What the caller asks for; the posting adds the timestamp and the balances after.
DRAFT_COLUMNS: tuple[str, ...] = tuple(
    c for c in WRITTEN_COLUMNS if c not in {"timestamp", "balance_after_from", "balance_after_to"}
)
# Integers of base units in storage, ``Decimal`` in records.
AMOUNT_COLUMNS = frozenset({"amount", "balance_after_from", "balance_after_to"})
