"""The on-chain mapping and the hashes that make the journal tamper-evident.

Pure functions, no database: anyone holding an export can recompute them.

* ``address_for(agent_id)``: a deterministic 20-byte address per account;
  ``system`` is the zero address, as an ERC-20 mint comes from and a burn
  goes to ``0x0``.
* ``to_chain_value(units)``: ledger base units (6 decimals) as an integer of
  18 decimals, the ERC-20 convention.
* ``entry_hash(prev_hash, entry)``: SHA-256 over the previous hash and the
  entry's canonical encoding (version 1, below); the chain's links.
* ``merkle_root`` / ``inclusion_proof`` / ``verify_inclusion``: RFC 6962
  Merkle trees over entry hashes, for checkpoints that could be anchored on
  a public chain.

Canonical encoding, version 1: the UTF-8 bytes of the JSON object with keys
``v`` (=1), ``id``, ``timestamp`` (``YYYY-MM-DDTHH:MM:SS.ffffffZ``, UTC),
``from``, ``to``, ``amount`` (integer base units), ``reason``,
``reference_type``, ``reference_id``, ``memo``, ``balance_after_from``,
``balance_after_to`` (integers or null), ``idempotency_key``, ``stake_id``,
``reverses_entry_id``; keys sorted, no whitespace, non-ASCII kept as is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tokenledger.amounts import DECIMALS
from tokenledger.constants import ESCROW_ACCOUNT, SYSTEM_ACCOUNT
from tokenledger.errors import InvalidArgument

__all__ = [
    "CHAIN_DECIMALS",
    "ENCODING_VERSION",
    "ESCROW_ADDRESS",
    "GENESIS_HASH",
    "ZERO_ADDRESS",
    "address_for",
    "balances_from_transfers",
    "canonical_entry",
    "canonical_timestamp",
    "entry_hash",
    "inclusion_proof",
    "merkle_root",
    "to_chain_value",
    "verify_inclusion",
]

CHAIN_DECIMALS = 18
ZERO_ADDRESS = "0x" + "00" * 20
GENESIS_HASH = "0" * 64
ENCODING_VERSION = 1
_ADDRESS_DOMAIN = b"tokenledger/address/v1:"
_TO_CHAIN: int = 10 ** (CHAIN_DECIMALS - DECIMALS)


def address_for(agent_id: str) -> str:
    """The account's address: ``0x`` + 40 lowercase hex digits, the same on every run.

    It is the last 20 bytes of SHA-256(``"tokenledger/address/v1:"`` + the id
    in UTF-8); ``system`` maps to ``ZERO_ADDRESS``.
    """
    if not isinstance(agent_id, str) or not agent_id:
        raise InvalidArgument("an address needs a non-empty account id")
    if agent_id == SYSTEM_ACCOUNT:
        return ZERO_ADDRESS
    digest = hashlib.sha256(_ADDRESS_DOMAIN + agent_id.encode("utf-8")).digest()
    return "0x" + digest[-20:].hex()


# The staking contract's address: where every open stake's tokens sit.
ESCROW_ADDRESS = address_for(ESCROW_ACCOUNT)


def to_chain_value(units: int) -> int:
    """Ledger base units (6 decimals) as an 18-decimal integer."""
    return units * _TO_CHAIN


def canonical_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_entry(entry: Mapping[Any, Any]) -> bytes:
    """The version-1 canonical bytes of a journal row (amounts in base units)."""
    document = {
        "v": ENCODING_VERSION,
        "id": entry["id"],
        "timestamp": canonical_timestamp(entry["timestamp"]),
        "from": entry["from_account"],
        "to": entry["to_account"],
        "amount": entry["amount"],
        "reason": entry["reason"],
        "reference_type": entry["reference_type"],
        "reference_id": entry["reference_id"],
        "memo": entry["memo"],
        "balance_after_from": entry["balance_after_from"],
        "balance_after_to": entry["balance_after_to"],
        "idempotency_key": entry["idempotency_key"],
        "stake_id": entry["stake_id"],
        "reverses_entry_id": entry["reverses_entry_id"],
    }
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


def balances_from_transfers(transfers: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Replay exported Transfer records into per-address balances (18 decimals).

    This is what an indexer of the chain would compute; ``Ledger.reconcile``
    compares such a snapshot with the ledger. The zero address is the mint
    and burn counterparty and holds no balance.
    """
    balances: dict[str, int] = {}
    for transfer in transfers:
        value = int(transfer["value"])
        if transfer["from"] != ZERO_ADDRESS:
            balances[transfer["from"]] = balances.get(transfer["from"], 0) - value
        if transfer["to"] != ZERO_ADDRESS:
            balances[transfer["to"]] = balances.get(transfer["to"], 0) + value
    return balances
