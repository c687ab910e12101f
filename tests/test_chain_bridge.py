"""The chain bridge against a real anvil, on both backends.

Each test deploys its own token contract (on one anvil per module, or its
own where it restarts the node), builds a small economy with stakes and
reversals, and checks outcomes on chain: ``last_seq``, ``balanceOf`` of
every account and of the escrow, ``totalSupply``, one ``Transfer`` log per
entry, the receipts the ledger cached, and the exit codes of the CLI.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from anvil import Anvil, anvil, anvil_binary, funded_key, running_anvil  # noqa: F401 -- a fixture
from tokenledger import Ledger
from tokenledger.chain import ESCROW_ADDRESS, address_for, bridge
from tokenledger.chain.node import Node
from tokenledger.cli import main
from tokenledger.domain.amounts import to_units
from tokenledger.domain.errors import (
    ChainReverted,
    EntryNotFound,
    InvalidArgument,
    NotDeployed,
    WrongChain,
)
from tokenledger.storage.models import receipts_table

SCALE = 10**12
TX_HASH = re.compile(r"^0x[0-9a-f]{64}$")


# -- helpers ------------------------------------------------------------------------


def economy(ledger: Ledger, rounds: int, *, seed: int = 14, agents: int = 10) -> None:
    """Transfers, mints, burns, stakes (settled, released, left open) and reversals."""
    rng = random.Random(seed)
    ids = [f"agent-{i}" for i in range(agents)]
    for agent in ids:
        ledger.create_account(agent, 1000)
    open_stakes: list[int] = []
    for step in range(rounds):
        a, b = rng.sample(ids, 2)
        kind = step % 10
        if kind < 5:
            ledger.transfer(a, b, Decimal(rng.randint(1, 900)) / 100, "work")
        elif kind == 5:
            ledger.mint(a, "1.5", "reward")
        elif kind == 6:
            ledger.burn(a, "0.25", "fee")
        elif kind == 7:
            open_stakes.append(ledger.stake(a, "3", "bet").id)
        elif kind == 8 and open_stakes:
            stake = open_stakes.pop(0)
            if step % 20 < 10:
                ledger.settle(stake, b, "won", amount="1")
            else:
                ledger.release(stake, "refund", fee="0.5")
        else:
            entry = ledger.transfer(a, b, "2", "mistake")
            ledger.reverse(entry.id, "undo")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def deploy(ledger: Ledger, node: Anvil) -> tuple[Node, Any, str]:
    """A token contract deployed by a fresh operator: the operator's node, the record, the key."""
    key = funded_key(node)
    operator = Node(node.url, key)
    return operator, bridge.deploy(ledger, operator), key


def entry_logs(node: Node, address: str) -> list[Any]:
    return node.logs(address, [bridge.ENTRY_TOPIC], 0, node.block_number())


def assert_chain_matches(ledger: Ledger, node: Node, address: str) -> int:
    """Everything sealed is on chain exactly once and the chain's figures are the ledger's."""
    ledger.seal()
    sealed = ledger.sealed_position()
    assert int(node.call(address, "last_seq")) == sealed
    seqs = Counter(int(bridge._hex(log["topics"][1]), 16) for log in entry_logs(node, address))
    assert seqs == Counter(range(1, sealed + 1))  # each entry once, none skipped
    transfers = node.logs(address, [bridge.TRANSFER_TOPIC], 0, node.block_number())
    assert len(transfers) == sealed
    for account in ledger.list_accounts(limit=1000):
        on_chain = int(
            node.call(address, "balanceOf", bridge._checksum(address_for(account.account_id)))
        )
        assert on_chain == to_units(account.balance) * SCALE, account.account_id
    escrow = sum(
        (
            s.amount
            for a in ledger.list_accounts(limit=1000)
            for s in ledger.get_stakes(a.account_id)
        ),
        Decimal(0),
    )
    escrow_on_chain = int(node.call(address, "balanceOf", bridge._checksum(ESCROW_ADDRESS)))
    assert escrow_on_chain == to_units(escrow, allow_zero=True) * SCALE
    supply = int(node.call(address, "totalSupply"))
    assert supply == to_units(ledger.get_total_supply()) * SCALE
    return sealed


def cached_receipts(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(receipts_table)).scalar_one()
        )


# -- deploy ----------------------------------------------------------------------------


def test_deploy_records_the_contract_and_never_shows_the_key(
    engine: Engine,
    database_url: str,
    anvil: Anvil,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    key = funded_key(anvil)
    monkeypatch.setenv("TOKENLEDGER_CHAIN_RPC", anvil.url)
    monkeypatch.setenv("TOKENLEDGER_CHAIN_KEY", key)
    ledger = Ledger(engine)
    ledger.create_account("alice", 5)
    assert ledger.get_chain_receipt(1) is None  # not on chain yet
    code, out, err = cli(capsys, "chain", "deploy", "--json", "--url", database_url)
    assert code == 0, err
    shown = json.loads(out)
    deployment = ledger.chain_deployment()
    assert deployment is not None
    assert shown["address"] == deployment.address
    assert shown["chain_id"] == 31337
    node = Node(anvil.url)
    assert int(node.call(deployment.address, "decimals")) == 18
    assert node.call(deployment.address, "operator").lower() == deployment.operator
    code, out2, err2 = cli(capsys, "chain", "push", "--url", database_url)
    assert code == 0, err2
    receipt = ledger.get_chain_receipt(1)
    assert receipt is not None
    assert TX_HASH.match(receipt.tx_hash)
    assert (receipt.seq, receipt.chain_id, receipt.contract) == (1, 31337, deployment.address)
    key_hex = key.removeprefix("0x")
    assert key_hex not in out + err + out2 + err2
    # The key from a file instead of the environment.
    monkeypatch.delenv("TOKENLEDGER_CHAIN_KEY")
    key_file = tmp_path / "operator.key"
    key_file.write_text(key + "\n")
    ledger.create_account("bob", 1)
    code, out3, err3 = cli(
        capsys, "chain", "push", "--key-file", str(key_file), "--url", database_url
    )
    assert code == 0, err3
    assert ledger.get_chain_receipt(2) is not None
    assert key_hex not in out3 + err3
    # A malformed key is refused without being echoed; no node is no command.
    monkeypatch.setenv("TOKENLEDGER_CHAIN_KEY", "0x" + "zz" * 32)
    code, _, err = cli(capsys, "chain", "deploy", "--url", database_url)
    assert code == 1
    assert "zz" * 8 not in err
    assert "private key" in err
    monkeypatch.delenv("TOKENLEDGER_CHAIN_RPC")
    code, _, err = cli(capsys, "chain", "push", "--url", database_url)
    assert code == 2
    assert "--rpc" in err
    with pytest.raises(EntryNotFound):
        ledger.get_chain_receipt(999)


# -- push -------------------------------------------------------------------------------


def test_push_of_hundreds_of_entries_with_stakes_and_reversals(
    engine: Engine,
    database_url: str,
    anvil: Anvil,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = Ledger(engine)
    economy(ledger, 60)
    expiring = ledger.stake(
        "agent-3", "2", "short bet", expires_at=datetime.now(UTC) + timedelta(seconds=0.3)
    )
    operator, deployment, key = deploy(ledger, anvil)
    # One transaction per entry for the first part, then batches.
    first = bridge.push(ledger, operator, batch=1, window=8)
    assert first.sent == first.transactions == ledger.sealed_position()
    economy_more(ledger, 260)
    while datetime.now(UTC) < expiring.expires_at + timedelta(seconds=0.05):  # type: ignore[operator]
        time.sleep(0.05)
    assert ledger.expire_stakes() == 1  # expiry is a Transfer from the escrow too
    monkeypatch.setenv("TOKENLEDGER_CHAIN_RPC", anvil.url)
    monkeypatch.setenv("TOKENLEDGER_CHAIN_KEY", key)
    code, out, err = cli(capsys, "chain", "push", "--batch", "100", "--url", database_url)
    assert code == 0, err
    sealed = assert_chain_matches(ledger, operator, deployment.address)
    assert sealed >= 300
    assert cached_receipts(engine) == sealed
    # Each receipt names the entry's own Transfer log.
    events = ledger.events(0, limit=1000)
    token = anvil.web3().eth.contract(abi=operator.abi)
    for event in events[:: max(1, len(events) // 15)]:
        receipt = ledger.get_chain_receipt(event.id)
        assert receipt is not None
        assert receipt.seq == event.seq
        assert TX_HASH.match(receipt.tx_hash)
        mined = anvil.web3().eth.get_transaction_receipt(receipt.tx_hash)  # type: ignore[arg-type]
        log = next(lg for lg in mined["logs"] if int(lg["logIndex"]) == receipt.log_index)
        decoded = token.events.Transfer().process_log(log)["args"]
        assert decoded["sender"].lower() == address_for(event.from_account)
        assert decoded["receiver"].lower() == address_for(event.to_account)
        assert decoded["value"] == to_units(event.amount) * SCALE
    # Nothing left: a second push sends nothing; status and reconcile agree.
    assert bridge.push(ledger, operator).sent == 0
    code, out, err = cli(capsys, "chain", "status", "--json", "--url", database_url)
    assert code == 0, err
    state = json.loads(out)
    assert (state["sealed"], state["on_chain"], state["pending"]) == (sealed, sealed, 0)
    code, out, err = cli(capsys, "chain", "reconcile", "--url", database_url)
    assert code == 0, out + err
    assert "the chain agrees" in out
    # HTTP entries and events carry the hash; the statement shows it.
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from tokenledger.api import create_app  # noqa: PLC0415

    with TestClient(create_app(ledger)) as client:
        body = client.get("/api/token/events", params={"limit": 5}).json()
        for item in body["events"]:
            receipt = ledger.get_chain_receipt(item["id"])
            assert receipt is not None
            assert item["tx_hash"] == receipt.tx_hash
        entries = client.get("/api/token/ledger", params={"account": "agent-1"}).json()["entries"]
        assert entries
        assert all(TX_HASH.match(e["tx_hash"]) for e in entries)
    code, out, _ = cli(capsys, "statement", "agent-1", "--json", "--url", database_url)
    assert code == 0
    assert all(TX_HASH.match(e["tx_hash"]) for e in json.loads(out))


def economy_more(ledger: Ledger, rounds: int) -> None:
    """More of the economy's activity on the accounts ``economy`` opened."""
    rng = random.Random(41)
    ids = [a.account_id for a in ledger.list_accounts(limit=100)]
    stakes = []
    for step in range(rounds):
        a, b = rng.sample(ids, 2)
        if step % 7 == 0:
            stakes.append(ledger.stake(a, "1", "bet").id)
        elif step % 7 == 1 and stakes:
            ledger.settle(stakes.pop(), "system", "lost")  # burned from the escrow
        elif step % 7 == 2:
            ledger.reverse(ledger.transfer(a, b, "1", "oops").id, "undo")
        else:
            ledger.transfer(a, b, "0.01", "tip")


def test_a_push_killed_mid_way_resumes_with_no_entry_twice_and_none_skipped(
    engine: Engine,
    database_url: str,
    anvil: Anvil,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = Ledger(engine)
    economy(ledger, 330)
    operator, deployment, key = deploy(ledger, anvil)
    key = funded_key(anvil)  # not the deployer's: custody moves to the subprocess's key
    # The operator of record is the deployer; hand custody to a key the subprocess holds.
    operator.wait(
        operator.send(
            deployment.address,
            operator.encode("set_operator", bridge._checksum(Node(anvil.url, key).operator)),
            gas=100_000,
            first_seq=0,
            last_seq=0,
        )
    )
    env = {
        **os.environ,
        "TOKENLEDGER_CHAIN_RPC": anvil.url,
        "TOKENLEDGER_CHAIN_KEY": key,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokenledger.cli",
            "chain",
            "push",
            "--batch",
            "1",
            "--window",
            "3",
            "--url",
            database_url,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while int(operator.call(deployment.address, "last_seq")) < 40:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = int(operator.call(deployment.address, "last_seq"))
    total = ledger.sealed_position()
    assert 40 <= killed_at < total  # stopped mid-push
    assert cached_receipts(engine) <= killed_at
    monkeypatch.setenv("TOKENLEDGER_CHAIN_RPC", anvil.url)
    monkeypatch.setenv("TOKENLEDGER_CHAIN_KEY", key)
    code, _out, err = cli(capsys, "chain", "push", "--batch", "50", "--url", database_url)
    assert code == 0, err
    assert assert_chain_matches(ledger, operator, deployment.address) == total
    assert cached_receipts(engine) == total  # the cache re-derived from the chain's logs
    for entry_id in (1, total // 2, total):
        assert ledger.get_chain_receipt(entry_id) is not None


def test_anvil_restarted_from_its_state_file_keeps_the_contract(
    engine: Engine, tmp_path: Path
) -> None:
    ledger = Ledger(engine)
    economy(ledger, 40)
    for node in running_anvil(state=tmp_path / "state.json"):
        operator, deployment, key = deploy(ledger, node)
        bridge.push(ledger, operator, batch=25)
        node.restart()  # SIGTERM writes the state; the new process reads it
        operator = Node(node.url, key)
        economy_more(ledger, 30)
        report = bridge.push(ledger, operator, batch=25)
        assert report.chain_seq_before > 0
        assert report.sent > 0
        assert assert_chain_matches(ledger, operator, deployment.address) == report.chain_seq
        assert bridge.reconcile(ledger, operator).ok
        # A node that lost its state (no --state file) has no contract: refused, typed.
        node.state = None
        node.restart()
        with pytest.raises(NotDeployed, match="no code"):
            bridge.push(ledger, Node(node.url, key))


# -- reconcile, reverts, the wrong chain ---------------------------------------------


def test_a_rogue_transfer_is_reported_and_a_revert_is_a_typed_error(
    engine: Engine,
    database_url: str,
    anvil: Anvil,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = Ledger(engine)
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 10)
    ledger.stake("bob", 4, "bet")
    operator, deployment, key = deploy(ledger, anvil)
    bridge.push(ledger, operator, batch=1)
    assert bridge.reconcile(ledger, operator).ok
    # alice's address moves 60 tokens to a stranger directly on chain (an ERC-20 transfer).
    alice, stranger = address_for("alice"), "0x" + "5a" * 20
    anvil.rpc("anvil_impersonateAccount", bridge._checksum(alice))
    anvil.rpc("anvil_setBalance", bridge._checksum(alice), hex(10**20))
    token = anvil.web3().eth.contract(
        address=bridge._checksum(deployment.address), abi=operator.abi
    )
    rogue = token.functions.transfer(bridge._checksum(stranger), 60 * SCALE * 10**6).transact(
        {"from": bridge._checksum(alice), "gas": 100_000}
    )
    rogue_hash = "0x" + bytes(rogue).hex()
    anvil.rpc("anvil_stopImpersonatingAccount", bridge._checksum(alice))
    result = bridge.reconcile(ledger, operator)
    assert not result.ok
    assert [d.kind for d in result.divergences] == ["rogue_transfer"]
    divergence = result.divergences[0]
    assert (divergence.tx_hash, divergence.sender, divergence.receiver) == (
        rogue_hash,
        alice,
        stranger,
    )
    assert {m.address for m in result.mismatches} == {alice, stranger}
    monkeypatch.setenv("TOKENLEDGER_CHAIN_RPC", anvil.url)
    code, out, _ = cli(capsys, "chain", "reconcile", "--url", database_url)
    assert code == 3
    assert rogue_hash in out
    assert alice in out
    assert stranger in out
    assert "alice" in out
    # The ledger lets alice pay 90; on chain she holds 40: the move reverts (status 0).
    before = int(operator.call(deployment.address, "last_seq"))
    ledger.transfer("alice", "bob", 90, "rent")
    with pytest.raises(ChainReverted) as raised:
        bridge.push(ledger, operator, batch=1)
    assert raised.value.first_seq == before + 1
    assert int(operator.call(deployment.address, "last_seq")) == before  # nothing applied
    assert cached_receipts(engine) == before
    monkeypatch.setenv("TOKENLEDGER_CHAIN_KEY", key)
    code, _, err = cli(capsys, "chain", "push", "--url", database_url)
    assert code == 1
    assert "reverted" in err


def test_a_node_on_another_chain_is_refused(
    engine: Engine,
    anvil: Anvil,  # noqa: F811
) -> None:
    ledger = Ledger(engine)
    ledger.create_account("alice", 1)
    operator, deployment, key = deploy(ledger, anvil)
    anvil.rpc("anvil_setChainId", 999)
    try:
        with pytest.raises(WrongChain, match="999"):
            bridge.push(ledger, Node(anvil.url, key))
        with pytest.raises(WrongChain):
            bridge.reconcile(ledger, Node(anvil.url))
    finally:
        anvil.rpc("anvil_setChainId", 31337)
    assert int(operator.call(deployment.address, "last_seq")) == 0  # nothing was sent
    with pytest.raises(InvalidArgument, match="batch"):
        bridge.push(ledger, operator, batch=0)
    assert int(operator.call(deployment.address, "last_seq")) == 0
    with pytest.raises(InvalidArgument, match="http"):
        Node("ftp://example.invalid")


def test_an_anchor_on_chain_is_what_verify_takes(
    engine: Engine,
    database_url: str,
    anvil: Anvil,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    ledger = Ledger(engine)
    economy(ledger, 20)
    operator, deployment, key = deploy(ledger, anvil)
    assert bridge.read_anchor(ledger, operator) is None
    checkpoint = bridge.anchor(ledger, operator)
    held = bridge.read_anchor(ledger, operator)
    assert held == {
        "last_seq": checkpoint.last_seq,
        "chain_hash": checkpoint.chain_hash,
        "merkle_root": checkpoint.merkle_root,
    }
    assert ledger.verify(anchor=held).ok
    # The CLI path: anchor-show writes what verify --anchor reads.
    monkeypatch.setenv("TOKENLEDGER_CHAIN_RPC", anvil.url)
    code, out, err = cli(capsys, "chain", "anchor-show", "--url", database_url)
    assert code == 0, err
    (tmp_path / "anchor.json").write_text(out)
    code, _, err = cli(
        capsys, "verify", "--anchor", str(tmp_path / "anchor.json"), "--url", database_url
    )
    assert code == 0, err
    assert int(operator.call(deployment.address, "anchor_seq")) == checkpoint.last_seq
    assert key.removeprefix("0x") not in out


def test_the_demo_can_end_on_a_local_anvil(
    database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENLEDGER_ANVIL", anvil_binary())
    code, out, err = cli(
        capsys, "demo", "--agents", "6", "--rounds", "4", "--chain", "--url", database_url
    )
    assert code == 0, out + err
    assert "on chain: pushed" in out
    assert "on chain: reconciled" in out


def test_a_chain_that_lost_blocks_gets_them_again(
    engine: Engine,
    anvil: Anvil,  # noqa: F811
) -> None:
    """A reorg, as anvil's evm_revert makes one: the cache drops what the chain lost."""
    ledger = Ledger(engine)
    economy(ledger, 30)
    operator, deployment, key = deploy(ledger, anvil)
    bridge.push(ledger, operator, batch=10)
    kept = int(operator.call(deployment.address, "last_seq"))
    snapshot = anvil.rpc("evm_snapshot")
    economy_more(ledger, 40)
    bridge.push(ledger, operator, batch=10)
    assert cached_receipts(engine) == ledger.sealed_position() > kept
    depth = bridge.status(ledger, operator, confirmations=3)
    assert depth.confirmed < depth.cached == depth.sealed  # the newest blocks are shallow
    assert anvil.rpc("evm_revert", snapshot) is True  # the blocks since the snapshot are gone
    operator = Node(anvil.url, key)
    assert int(operator.call(deployment.address, "last_seq")) == kept
    report = bridge.push(ledger, operator, batch=10)
    assert report.chain_seq_before == kept
    assert report.sent == ledger.sealed_position() - kept
    assert assert_chain_matches(ledger, operator, deployment.address) == ledger.sealed_position()
    assert cached_receipts(engine) == ledger.sealed_position()
    assert bridge.reconcile(ledger, operator).ok


def test_without_the_chain_extra_the_commands_say_which_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tokenledger.chain  # noqa: PLC0415

    for name in ("bridge", "node"):
        monkeypatch.delitem(sys.modules, f"tokenledger.chain.{name}", raising=False)
        monkeypatch.delattr(tokenledger.chain, name, raising=False)
    monkeypatch.setitem(sys.modules, "web3", None)  # import web3 now raises ImportError
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    for command in (("push",), ("deploy",), ("reconcile",), ("status",)):
        code, _, err = cli(capsys, "chain", *command, "--rpc", "http://127.0.0.1:1", "--url", url)
        assert code == 5, err
        assert "tokenledger[chain]" in err
