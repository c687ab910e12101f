"""The chain bridge's push rate on a real anvil: entries/s, one per transaction and batched.

    python bench/chain.py                   # 1,000 entries one by one, 10,000 in batches of 100
    python bench/chain.py --single 300 --batched 3000

A local anvil (``.ci/install-services`` puts it in ``.tools/``) is started on
a free loopback port with automine; the ledger is a SQLite file (the
database is not what limits a push: signing, the RPC round trips and the
node's execution are). Each mode deploys a fresh contract and pushes the
same sealed journal: ``push`` time includes signing, sending, waiting for
every receipt, checking its status and caching the receipts. Targets
(issue 14): at least 50 entries/s one by one, at least 1,000/s batched.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

from tokenledger import Ledger
from tokenledger.chain import bridge
from tokenledger.chain.node import Node

ROOT = Path(__file__).resolve().parent.parent
ANVIL = ROOT / ".tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
TARGETS = {"single_per_second": 50, "batched_per_second": 1_000}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_anvil() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("anvil") or str(ANVIL)
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if Web3(Web3.HTTPProvider(url)).is_connected():
                return process, url
        except OSError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("anvil did not start")


def _operator(url: str) -> Node:
    account = Account.create()
    Web3(Web3.HTTPProvider(url)).provider.make_request(
        "anvil_setBalance",  # type: ignore[arg-type]
        [account.address, hex(10**24)],
    )
    return Node(url, "0x" + bytes(account.key).hex())


def _journal(ledger: Ledger, entries: int) -> None:
    agents = [f"agent-{i}" for i in range(50)]
    for agent in agents:
        ledger.create_account(agent, 1_000_000)
    for i in range(entries - len(agents)):
        ledger.transfer(agents[i % 50], agents[(i * 7 + 1) % 50], "0.01", "bench")
    ledger.seal()


def measure(ledger: Ledger, url: str, batch: int, entries: int) -> dict[str, Any]:
    operator = _operator(url)
    bridge.deploy(ledger, operator)
    started = time.perf_counter()
    report = bridge.push(ledger, operator, batch=batch)
    seconds = time.perf_counter() - started
    if not report.chain_seq == entries == report.sent:
        raise RuntimeError(f"the push did not apply every entry: {report}")
    return {
        "batch": batch,
        "entries": entries,
        "transactions": report.transactions,
        "seconds": round(seconds, 2),
        "per_second": round(entries / seconds),
    }


def run(single: int, batched: int) -> dict[str, Any]:
    process, url = _start_anvil()
    try:
        results: dict[str, Any] = {}
        with tempfile.TemporaryDirectory() as directory:
            for name, entries, batch in (("single", single, 1), ("batched", batched, 100)):
                ledger = Ledger.from_url(f"sqlite:///{directory}/{name}.db")
                _journal(ledger, entries)
                results[name] = measure(ledger, url, batch, entries)
                ledger.dispose()
        results["targets"] = {
            "single": results["single"]["per_second"] >= TARGETS["single_per_second"],
            "batched": results["batched"]["per_second"] >= TARGETS["batched_per_second"],
        }
        return results
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=int, default=1_000, help="entries pushed one by one")
    parser.add_argument("--batched", type=int, default=10_000, help="entries pushed 100 a tx")
    args = parser.parse_args()
    print(json.dumps(run(args.single, args.batched), indent=2))


if __name__ == "__main__":
    main()
