"""The on-chain mapping: addresses and 18-decimal values. Pure functions, no database.

* ``address_for(agent_id)``: a deterministic 20-byte address per account;
  ``system`` is the zero address, as an ERC-20 mint comes from and a burn
  goes to ``0x0``.
* ``to_chain_value(units)``: ledger base units (6 decimals) as an integer of
  18 decimals, the ERC-20 convention.
* ``balances_from_transfers``: what an indexer of the chain computes from
  ``Transfer`` records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from tokenledger.domain.amounts import DECIMALS
from tokenledger.domain.constants import ESCROW_ACCOUNT, SYSTEM_ACCOUNT
from tokenledger.domain.errors import InvalidArgument

__all__ = [
    "CHAIN_DECIMALS",
    "ESCROW_ADDRESS",
    "ZERO_ADDRESS",
    "address_for",
    "balances_from_transfers",
    "to_chain_value",
]

CHAIN_DECIMALS = 18
ZERO_ADDRESS = "0x" + "00" * 20
_ADDRESS_DOMAIN = b"tokenledger/address/v1:"
_TO_CHAIN: int = 10 ** (CHAIN_DECIMALS - DECIMALS)


def address_for(agent_id: str) -> str:
    """The account's address: ``0x`` + 40 lowercase hex digits, the same on every run.

    It is the last 20 bytes of SHA-256(``"tokenledger/address/v1:"`` + the id
    in UTF-8); ``system`` maps to ``ZERO_ADDRESS``.

    Raises:
        InvalidArgument: the id is not a non-empty string.
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
