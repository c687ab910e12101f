"""The hashes that make the journal tamper-evident: pure functions, no database.

Anyone holding an export can recompute them.

* ``entry_hash(prev_hash, entry)``: SHA-256 over the previous hash and the
  entry's canonical encoding (version 1, below); the chain's links.
* ``entry_digest(entry)``: SHA-256 of the entry's version-2 encoding (every
  stored column, ``writer_txid`` included), written with the entry by the
  same statement, so an entry is tamper-evident from the moment it commits;
  ``stake_digest(stake)`` does the same for a stake row, rewritten when the
  stake closes.
* ``link_hash(prev_hash, digest)``: a chain link over a digested entry
  (version 2); ``entry_hash`` links entries written before digests existed.
* ``merkle_root`` / ``inclusion_proof`` / ``verify_inclusion``: RFC 6962
  Merkle trees over entry hashes, for checkpoints anchored outside the
  database.

Canonical encoding, version 1: the UTF-8 bytes of the JSON object with keys
``v`` (=1), ``id``, ``timestamp`` (``YYYY-MM-DDTHH:MM:SS.ffffffZ``, UTC),
``from``, ``to``, ``amount`` (integer base units), ``reason``,
``reference_type``, ``reference_id``, ``memo``, ``balance_after_from``,
``balance_after_to`` (integers or null), ``idempotency_key``, ``stake_id``,
``reverses_entry_id``; keys sorted, no whitespace, non-ASCII kept as is.
Its bytes never change: every sealed chain must keep verifying.

Encoding version 2 (digests): the bytes ``tokenledger/entry/v2`` and a
newline, then for each column in ``ENTRY_DIGEST_COLUMNS`` order its value as
text (integers in decimal, the timestamp as above, strings as they are),
each written ``<UTF-8 byte length>:<text>``, or ``-`` for NULL. Length
prefixes make it unambiguous without escaping, and PostgreSQL computes the
same bytes in SQL (``storage/posting/sql/digests_v2.sql``, and as one
inlinable expression ``digests_v2_flat.sql``); stakes use
``tokenledger/stake/v1`` and ``STAKE_DIGEST_COLUMNS`` the same way. Both are
frozen like version 1: a change is a new version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tokenledger.domain.entries import ENTRY_COLUMNS

__all__ = [
    "CANONICAL_V1_KEYS",
    "DIGESTED_LINK",
    "ENCODING_VERSION",
    "ENTRY_DIGEST_COLUMNS",
    "GENESIS_HASH",
    "STAKE_DIGEST_COLUMNS",
    "canonical_entry",
    "canonical_timestamp",
    "entry_digest",
    "entry_hash",
    "inclusion_proof",
    "link_hash",
    "merkle_root",
    "stake_digest",
    "verify_inclusion",
]

GENESIS_HASH = "0" * 64
ENCODING_VERSION = 1
# The journal column each key of the version-1 encoding holds (``v`` aside).
_V1_NAMES = {"from_account": "from", "to_account": "to"}
CANONICAL_V1_KEYS: dict[str, str] = {_V1_NAMES.get(c, c): c for c in ENTRY_COLUMNS}


def canonical_timestamp(moment: datetime) -> str:
    """A moment as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_entry(entry: Mapping[Any, Any]) -> bytes:
    """The version-1 canonical bytes of a journal row (amounts in base units)."""
    document = {key: entry[column] for key, column in CANONICAL_V1_KEYS.items()}
    document["timestamp"] = canonical_timestamp(entry["timestamp"])
    document["v"] = ENCODING_VERSION
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def entry_hash(prev_hash: str, entry: Mapping[Any, Any]) -> str:
    """SHA-256(previous hash bytes + canonical entry), as 64 hex digits (a version-1 link)."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_entry(entry)).hexdigest()


# -- digests (encoding version 2) ----------------------------------------------------

# Every stored column of a journal row: the books' columns, then the storage's.
ENTRY_DIGEST_COLUMNS: tuple[str, ...] = (*ENTRY_COLUMNS, "writer_txid")
STAKE_DIGEST_COLUMNS: tuple[str, ...] = (
    "id",
    "account_id",
    "amount",
    "status",
    "reason",
    "reference_type",
    "reference_id",
    "memo",
    "expires_at",
    "created_at",
    "closed_at",
)
_TIME_COLUMNS = frozenset({"timestamp", "expires_at", "created_at", "closed_at"})
# The chain link of an entry that carries a digest (``token_chain.encoding``).
DIGESTED_LINK = 2


def _length_prefixed(tag: bytes, row: Mapping[Any, Any], columns: Sequence[str]) -> bytes:
    parts = [tag, b"\n"]
    for column in columns:
        value = row[column]
        if value is None:
            parts.append(b"-")
            continue
        text = canonical_timestamp(value) if column in _TIME_COLUMNS else str(value)
        data = text.encode("utf-8")
        parts.append(b"%d:%s" % (len(data), data))
    return b"".join(parts)


def entry_digest(entry: Mapping[Any, Any]) -> str:
    """SHA-256 of a journal row's version-2 encoding, as 64 hex digits."""
    return hashlib.sha256(
        _length_prefixed(b"tokenledger/entry/v2", entry, ENTRY_DIGEST_COLUMNS)
    ).hexdigest()


def stake_digest(stake: Mapping[Any, Any]) -> str:
    """SHA-256 of a stake row's encoding (every column but the digest), as 64 hex digits."""
    return hashlib.sha256(
        _length_prefixed(b"tokenledger/stake/v1", stake, STAKE_DIGEST_COLUMNS)
    ).hexdigest()


def link_hash(prev_hash: str, digest: str) -> str:
    """A version-2 chain link: SHA-256(previous hash bytes + the entry's digest bytes)."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + bytes.fromhex(digest)).hexdigest()


# -- Merkle trees (RFC 6962, section 2.1) -------------------------------------


def _leaf(entry_hash_hex: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(entry_hash_hex)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _root(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(_root(leaves[:k]), _root(leaves[k:]))


def merkle_root(entry_hashes: Sequence[str]) -> str:
    """The Merkle root of a non-empty list of entry hashes."""
    if not entry_hashes:
        raise ValueError("a Merkle tree needs at least one leaf")
    return _root([_leaf(h) for h in entry_hashes]).hex()


def inclusion_proof(entry_hashes: Sequence[str], index: int) -> list[str]:
    """The audit path proving that leaf ``index`` is in the tree of ``entry_hashes``."""
    if not 0 <= index < len(entry_hashes):
        raise ValueError("leaf index out of range")

    def path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
        if len(leaves) == 1:
            return []
        k = _split(len(leaves))
        if m < k:
            return [*path(m, leaves[:k]), _root(leaves[k:])]
        return [*path(m - k, leaves[k:]), _root(leaves[:k])]

    return [h.hex() for h in path(index, [_leaf(h) for h in entry_hashes])]


def verify_inclusion(
    entry_hash_hex: str, index: int, size: int, proof: Sequence[str], root: str
) -> bool:
    """True when ``proof`` shows the entry at ``index`` of a ``size``-leaf tree has ``root``.

    The check needs nothing from the ledger: an auditor holding one entry's
    hash, its proof and an anchored root can run it anywhere.
    """
    if not 0 <= index < size:
        return False
    try:
        node = _leaf(entry_hash_hex)
        siblings = [bytes.fromhex(p) for p in proof]
    except ValueError:
        return False
    # Walk down the same splits the tree was built with, then back up.
    turns: list[bool] = []  # True when our subtree is the left child at that level
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m - lo < k:
            turns.append(True)
            hi = lo + k
        else:
            turns.append(False)
            lo = lo + k
    if len(turns) != len(siblings):
        return False
    for is_left, sibling in zip(reversed(turns), siblings, strict=True):
        node = _node(node, sibling) if is_left else _node(sibling, node)
    return node.hex() == root
