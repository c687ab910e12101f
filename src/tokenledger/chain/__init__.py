"""The on-chain mapping and the journal's hashes, and the bridge to a real chain.

This module itself holds pure functions and imports no web3; the bridge
(extra ``chain``) is its submodules: ``bridge`` (deploy, push, reconcile,
anchor), ``node`` (web3), ``artifact`` (the token contract), ``local`` (a
throwaway anvil). See docs/chain.md.

``address_for``, ``ZERO_ADDRESS``, ``to_chain_value`` (``domain.addresses``)
map accounts and amounts onto an ERC-20 token; ``entry_hash``,
``merkle_root``, ``verify_inclusion`` (``domain.hashing``) let anyone holding
an export or a proof check it without the ledger.
"""

from tokenledger.domain.addresses import (
    CHAIN_DECIMALS,
    ESCROW_ADDRESS,
    ZERO_ADDRESS,
    address_for,
    balances_from_transfers,
    to_chain_value,
)
from tokenledger.domain.hashing import (
    ENCODING_VERSION,
    GENESIS_HASH,
    canonical_entry,
    canonical_timestamp,
    entry_hash,
    inclusion_proof,
    merkle_root,
    verify_inclusion,
)

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
