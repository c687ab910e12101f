"""The token contract: the shipped artifact is the source's build, and it is an ERC-20."""

from __future__ import annotations

import json

import pytest

from tokenledger.chain.artifact import artifact_text, build_artifact, load_artifact, source_text

pytest.importorskip("vyper", reason="vyper is in the dev extra")


def test_the_shipped_artifact_is_the_sources_build_byte_for_byte() -> None:
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
