"""The hashes that make the journal tamper-evident: pure functions, no database.

Anyone holding an export can recompute them.

* ``entry_hash(prev_hash, entry)``: SHA-256 over the previous hash and the
  entry's canonical encoding (version 1, below); the chain's links.
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
    "ENCODING_VERSION",
    "GENESIS_HASH",
    "canonical_entry",
    "canonical_timestamp",
    "entry_hash",
    "inclusion_proof",
    "merkle_root",
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
    """SHA-256(previous hash bytes + canonical entry), as 64 hex digits."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_entry(entry)).hexdigest()


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
