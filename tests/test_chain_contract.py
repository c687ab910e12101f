"""The token contract: the shipped artifact is the source's build; on a real anvil, its rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from anvil import Anvil, anvil, funded_key  # noqa: F401 -- a fixture
from tokenledger.chain import bridge
from tokenledger.chain.artifact import artifact_text, build_artifact, load_artifact, source_text
from tokenledger.chain.node import Node, decode_transfer, log_topic
from tokenledger.domain.errors import ChainReverted


def test_the_shipped_artifact_is_the_sources_build_byte_for_byte() -> None:
    pytest.importorskip("vyper", reason="vyper is in the dev extra")
    assert build_artifact() == artifact_text()
    artifact = load_artifact()
    assert artifact["compiler"] == "vyper 0.4.3"
    assert artifact["bytecode"].startswith("0x")
    assert len(artifact["bytecode"]) > 1000
    assert "pragma version" in source_text()


def test_the_abi_is_an_erc20_with_the_ledgers_operations() -> None:
    abi = json.loads(artifact_text())["abi"]
    functions = {item["name"]: item for item in abi if item["type"] == "function"}
    events = {item["name"]: item for item in abi if item["type"] == "event"}
    for name in (
        "name",
        "symbol",
        "decimals",
        "totalSupply",
        "balanceOf",
        "transfer",
        "approve",
        "transferFrom",
        "allowance",
        "mint",
        "burn",
        "move",
        "apply_batch",
        "last_seq",
        "anchor",
    ):
        assert name in functions, name
    transfer = events["Transfer"]["inputs"]
    assert [(i["type"], i["indexed"]) for i in transfer] == [
        ("address", True),
        ("address", True),
        ("uint256", False),
    ]
    assert [i["type"] for i in events["Approval"]["inputs"]] == ["address", "address", "uint256"]
    assert [i["type"] for i in events["Entry"]["inputs"]] == ["uint256", "bytes32", "uint256"]


# -- the contract on a real node ---------------------------------------------------------

ZERO = "0x" + "00" * 20
ALICE, BOB = "0x" + "a1" * 20, "0x" + "b0" * 20
HASH = b"\x11" * 32


@pytest.fixture
def token(anvil: Anvil) -> tuple[Node, str]:  # noqa: F811
    node = Node(anvil.url, funded_key(anvil))
    address, _, _ = node.deploy("tokenledger", "TLG", gas=3_000_000)
    return node, address


def _apply(node: Node, address: str, function: str, *args: object, seq: int = 0) -> dict[str, Any]:
    data = node.encode(function, *args)
    return node.wait(node.send(address, data, gas=400_000, first_seq=seq, last_seq=seq))


def test_entries_apply_once_in_order_and_only_from_the_operator(
    token: tuple[Node, str],
    anvil: Anvil,  # noqa: F811
) -> None:
    node, address = token
    assert node.call(address, "decimals") == 18
    assert node.call(address, "name") == "tokenledger"
    _apply(node, address, "mint", ALICE, 10**18, 1, HASH, 1_700_000_000, seq=1)
    with pytest.raises(ChainReverted):  # the same reference again
        _apply(node, address, "mint", ALICE, 10**18, 1, HASH, 1_700_000_000, seq=1)
    with pytest.raises(ChainReverted):  # a gap
        _apply(node, address, "mint", ALICE, 10**18, 3, HASH, 1_700_000_000, seq=3)
    with pytest.raises(ChainReverted):  # more than the holder has
        _apply(node, address, "move", ALICE, BOB, 2 * 10**18, 2, HASH, 0, seq=2)
    stranger = Node(anvil.url, funded_key(anvil))
    with pytest.raises(ChainReverted):
        _apply(stranger, address, "mint", BOB, 1, 2, HASH, 0, seq=2)
    assert node.call(address, "last_seq") == 1
    assert node.call(address, "totalSupply") == 10**18
    # A batch: a move, a burn and a mint, one Transfer and one Entry log each.
    receipt = _apply(
        node,
        address,
        "apply_batch",
        [ALICE, ALICE, ZERO],
        [BOB, ZERO, BOB],
        [3, 4, 5],
        2,
        [HASH, HASH, HASH],
        [0, 0, 0],
        seq=2,
    )
    topics = [log["topics"][0] for log in receipt["logs"]]
    transfer, entry = log_topic("Transfer(address,address,uint256)"), bridge.ENTRY_TOPIC
    assert topics == [transfer, entry] * 3
    assert [decode_transfer(log) for log in receipt["logs"][::2]] == [
        (ALICE, BOB, 3),
        (ALICE, ZERO, 4),
        (ZERO, BOB, 5),
    ]
    assert node.call(address, "last_seq") == 4
    assert node.call(address, "balanceOf", bridge._checksum(BOB)) == 8
    assert node.call(address, "totalSupply") == 10**18 + 1
    with pytest.raises(ChainReverted):  # columns of unequal length
        _apply(node, address, "apply_batch", [ALICE], [BOB, BOB], [1], 5, [HASH], [0], seq=5)


def test_the_erc20_functions_and_the_anchor(
    token: tuple[Node, str],
    anvil: Anvil,  # noqa: F811
) -> None:
    node, address = token
    holder = Node(anvil.url, funded_key(anvil))
    _apply(node, address, "mint", holder.operator, 100, 1, HASH, 0, seq=1)
    _apply(holder, address, "transfer", BOB, 30)
    _apply(holder, address, "approve", node.operator, 50)
    assert (
        node.call(
            address, "allowance", bridge._checksum(holder.operator), bridge._checksum(node.operator)
        )
        == 50
    )
    _apply(node, address, "transferFrom", holder.operator, ALICE, 20)
    with pytest.raises(ChainReverted):  # past the allowance
        _apply(node, address, "transferFrom", holder.operator, ALICE, 40)
    balances = node.balances(address, [holder.operator, BOB, ALICE], node.block_number())
    assert balances == {holder.operator: 50, BOB: 30, ALICE: 20}
    _apply(node, address, "anchor", 1, HASH, b"\x22" * 32)
    with pytest.raises(ChainReverted):  # an anchor only moves forward
        _apply(node, address, "anchor", 1, HASH, b"\x33" * 32)
    assert node.call(address, "anchor_merkle_root") == b"\x22" * 32
