"""A real anvil (Foundry's Ethereum development node) on a free loopback port.

``.ci/install-services`` installs the npm package ``@foundry-rs/anvil`` into
the project's ``.tools/``; the binary ships inside it. Like PgBouncer, a
missing anvil fails the test when PostgreSQL is required (CI), else skips it.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3

from services import free_port, require_binary, wait_for_port

__all__ = ["Anvil", "anvil_binary", "funded_key", "running_anvil"]

REPO = Path(__file__).resolve().parent.parent
_PACKAGED = REPO / ".tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"


def anvil_binary() -> str:
    return require_binary("anvil", str(_PACKAGED))


class Anvil:
    """One anvil process; ``restart`` keeps its ``--state`` file (and its port)."""

    def __init__(self, state: Path | None = None, chain_id: int = 31337) -> None:
        self.binary = anvil_binary()
        self.state = state
        self.chain_id = chain_id
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Anvil:
        command = [
            self.binary,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--silent",
        ]
        if self.state is not None:
            command += ["--state", str(self.state)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        """Stop it as an operator would (SIGTERM): with ``--state``, it writes its state out."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def web3(self) -> Web3:
        return Web3(Web3.HTTPProvider(self.url))

    def rpc(self, method: str, *params: Any) -> Any:
        response = self.web3().provider.make_request(method, list(params))  # type: ignore[arg-type]
        assert "error" not in response, response
        return response.get("result")


def funded_key(node: Anvil) -> str:
    """A fresh operator key (0x-hex) whose address anvil has given ether: made at run time."""
    account = Account.create()
    node.rpc("anvil_setBalance", account.address, hex(10**24))
    return "0x" + bytes(account.key).hex()


def running_anvil(state: Path | None = None, chain_id: int = 31337) -> Iterator[Anvil]:
    """A generator for a fixture: an anvil started, then stopped."""
    node = Anvil(state, chain_id).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    """One anvil for a test module; each test deploys its own contract on it."""
    yield from running_anvil()
