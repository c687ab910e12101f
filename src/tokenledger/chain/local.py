"""A throwaway local anvil for ``tokenledger demo --chain``: started, funded, stopped.

anvil is Foundry's Ethereum development node (npm ``@foundry-rs/anvil``;
``.ci/install-services`` puts it in the project's ``.tools/``). It is found
as ``$TOKENLEDGER_ANVIL``, else ``anvil`` on the PATH, else in ``./.tools``.
The operator key is made here at run time and funded through anvil's own
``anvil_setBalance``: the demo needs no key from anyone.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tokenledger.domain.errors import ChainUnavailable

__all__ = ["ANVIL_ENV", "anvil_binary", "fresh_funded_key", "local_anvil"]

ANVIL_ENV = "TOKENLEDGER_ANVIL"
_TOOLS = Path(".tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")


def anvil_binary() -> str:
    """Where anvil is.

    Raises:
        ChainUnavailable: it is nowhere to be found.
    """
    for candidate in (os.environ.get(ANVIL_ENV), shutil.which("anvil"), str(_TOOLS.resolve())):
        if candidate and Path(candidate).is_file():
            return candidate
    raise ChainUnavailable(
        f"anvil is not installed: set {ANVIL_ENV}, put anvil on the PATH, or run "
        ".ci/install-services (npm package @foundry-rs/anvil)"
    )


@contextmanager
def local_anvil(timeout: float = 15.0) -> Iterator[str]:
    """A fresh anvil on a free loopback port, its RPC URL; stopped at the end.

    Raises:
        ChainUnavailable: anvil is missing or did not start.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen(  # noqa: S603 -- a fixed argument list, no shell
        [anvil_binary(), "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise ChainUnavailable(f"anvil exited at start with {process.returncode}")
            with socket.socket() as probe:
                probe.settimeout(0.2)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise ChainUnavailable(f"anvil did not listen within {timeout} s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fresh_funded_key(rpc: str) -> str:
    """A new operator key (0x-hex) that the local anvil has given ether to."""
    from eth_account import Account  # noqa: PLC0415 -- the chain extra
    from web3 import Web3  # noqa: PLC0415

    account = Account.create()
    provider = Web3(Web3.HTTPProvider(rpc)).provider
    response = provider.make_request(
        "anvil_setBalance",  # type: ignore[arg-type]
        [account.address, hex(10**24)],
    )
    if "error" in response:
        raise ChainUnavailable(f"the node at {rpc} is not an anvil: {response['error']}")
    return "0x" + bytes(account.key).hex()
