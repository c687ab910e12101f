"""The EVM node, through web3 (extra ``chain``): signing, nonces, gas, receipts, logs.

Everything the bridge asks of a node goes through ``Node``, and every
failure of the node or its transport leaves as a ``ChainError``. The
operator's key is held by an ``eth_account`` account and never appears in a
message: a malformed key is refused without echoing it.

Transactions are sent with an explicit gas limit, so a reverted one is
mined with status 0 and raises nothing by itself: ``Node.wait`` checks the
status of every receipt and raises ``ChainReverted``. Nonces are counted
here, from the node's pending count at the start: a gap would stall every
later transaction silently.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tokenledger.chain.artifact import load_artifact
from tokenledger.domain.errors import (
    ChainError,
    ChainReverted,
    ChainUnavailable,
    InvalidArgument,
    NotDeployed,
    WrongChain,
)

try:
    from eth_account import Account
    from web3 import Web3
    from web3.exceptions import TimeExhausted, TransactionNotFound, Web3Exception
except ImportError as _missing:  # pragma: no cover -- the extra is not installed
    raise ImportError(
        f"the chain bridge needs the 'chain' extra ({_missing.name} is not installed): "
        "pip install 'tokenledger[chain]'"
    ) from _missing

__all__ = ["DEFAULT_TIMEOUT", "Node", "Sent", "log_topic"]

DEFAULT_TIMEOUT = 60.0  # seconds to wait for a receipt
_POLL = 0.05  # seconds between receipt polls


def log_topic(signature: str) -> str:
    """The topic of an event signature, as 0x-hex."""
    return "0x" + Web3.keccak(text=signature).hex().removeprefix("0x")


@dataclass(frozen=True, slots=True)
class Sent:
    """A transaction sent: its hash and what it carried (chain positions first..last)."""

    tx_hash: str
    first_seq: int
    last_seq: int


class Node:
    """One JSON-RPC endpoint and, for writes, the operator's key.

    Raises (from every method): ``ChainUnavailable`` when the node cannot be
    reached or answers with an error.
    """

    def __init__(
        self, rpc: str, key: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Connect lazily to ``rpc`` (an http(s) URL).

        Raises:
            InvalidArgument: ``rpc`` is not an http(s) URL, or ``key`` is not a
                32-byte hex private key (the key is never echoed).
        """
        if not isinstance(rpc, str) or not rpc.startswith(("http://", "https://")):
            raise InvalidArgument("the RPC endpoint must be an http:// or https:// URL")
        self.rpc = rpc
        self.timeout = timeout
        self.w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 30}))
        self._account: Any = None
        if key is not None:
            try:
                self._account = Account.from_key(key.strip())
            except Exception:
                # From None: the original exception may quote the key.
                raise InvalidArgument(
                    "the operator key is not a 32-byte 0x-hex private key"
                ) from None
        self._nonce: int | None = None
        self._chain_id: int | None = None
        artifact = load_artifact()
        self.abi: list[dict[str, Any]] = artifact["abi"]
        self.bytecode: str = artifact["bytecode"]
        self._codec = self.w3.eth.contract(abi=self.abi, bytecode=self.bytecode)

    # -- reading ---------------------------------------------------------

    @property
    def operator(self) -> str:
        """The operator's address (lowercase 0x-hex).

        Raises:
            InvalidArgument: no key was given.
        """
        if self._account is None:
            raise InvalidArgument(
                "this needs the operator key: set TOKENLEDGER_CHAIN_KEY or pass --key-file"
            )
        return str(self._account.address).lower()

    def chain_id(self) -> int:
        return int(self._rpc(lambda: self.w3.eth.chain_id))

    def block_number(self) -> int:
        return int(self._rpc(lambda: self.w3.eth.block_number))

    def token(self, address: str) -> Any:
        """The token contract at ``address`` (a web3 contract object)."""
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=self.abi)

    def call(self, address: str, function: str, *args: Any, block: int | str = "latest") -> Any:
        """A view function of the token contract at ``block``."""
        fn = getattr(self.token(address).functions, function)(*args)
        return self._rpc(lambda: fn.call(block_identifier=block))

    def check_deployment(self, chain_id: int, address: str) -> None:
        """Refuse a node on another chain, or one without the contract's code.

        Raises:
            WrongChain: the node's chain id is not ``chain_id``.
            NotDeployed: there is no code at ``address`` (a node reset, say).
        """
        actual = self.chain_id()
        if actual != chain_id:
            raise WrongChain(chain_id, actual)
        code = self._rpc(lambda: self.w3.eth.get_code(Web3.to_checksum_address(address)))
        if not code:
            raise NotDeployed(
                f"the node has no code at the token contract's address {address} "
                "(was the chain reset? deploy again with 'tokenledger chain deploy')"
            )

    def logs(
        self, address: str, topics: Sequence[str | None], from_block: int, to_block: int
    ) -> list[Any]:
        """The contract's logs with ``topics`` between two blocks, both included."""
        query: Any = {
            "address": Web3.to_checksum_address(address),
            "fromBlock": from_block,
            "toBlock": to_block,
            "topics": list(topics),
        }
        return list(self._rpc(lambda: self.w3.eth.get_logs(query)))

    def decode_event(self, name: str, log: Any) -> Any:
        """A raw log decoded as the contract's event ``name``."""
        return getattr(self._codec.events, name)().process_log(log)

    # -- writing -----------------------------------------------------------

    def wait_until_idle(self, timeout: float | None = None) -> None:
        """Wait until none of the operator's transactions is pending (a previous run's).

        Raises:
            ChainError: some are still pending after ``timeout`` seconds.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        address = self._account_address()
        while True:
            pending = int(self._rpc(lambda: self.w3.eth.get_transaction_count(address, "pending")))
            mined = int(self._rpc(lambda: self.w3.eth.get_transaction_count(address, "latest")))
            if pending <= mined:
                self._nonce = mined
                return
            if time.monotonic() > deadline:
                raise ChainError(
                    f"{pending - mined} of the operator's transactions are still pending: "
                    "try again once they are mined"
                )
            time.sleep(_POLL * 4)

    def deploy(self, *args: Any, gas: int) -> tuple[str, str, int]:
        """Deploy the token contract; its (address, transaction hash, block number).

        Raises:
            ChainReverted: the deployment was mined with status 0.
        """
        data = self._codec.constructor(*args).data_in_transaction
        sent = self.send(None, data, gas=gas, first_seq=0, last_seq=0)
        receipt = self.wait(sent)
        return str(receipt["contractAddress"]).lower(), sent.tx_hash, int(receipt["blockNumber"])

    def encode(self, function: str, *args: Any) -> str:
        """The call data of a token contract function."""
        return str(self._codec.encode_abi(function, args=list(args)))

    def send(
        self,
        to: str | None,
        data: str,
        *,
        gas: int,
        first_seq: int,
        last_seq: int,
        fees: tuple[int, int] | None = None,
    ) -> Sent:
        """Sign and send one transaction with the next nonce and an explicit gas limit."""
        account = self._require_account()
        if self._nonce is None:
            self.wait_until_idle()
        max_fee, tip = fees if fees is not None else self.fees()
        tx: dict[str, Any] = {
            "type": 2,
            "nonce": self._nonce,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
            "value": 0,
            "data": data,
            "chainId": self._chain_id_cached(),
        }
        if to is not None:
            tx["to"] = Web3.to_checksum_address(to)
        signed = account.sign_transaction(tx)
        tx_hash = self._rpc(lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction))
        self._nonce = int(tx["nonce"]) + 1
        return Sent("0x" + bytes(tx_hash).hex(), first_seq, last_seq)

    def fees(self) -> tuple[int, int]:
        """(max fee, priority fee) per gas for the next transactions (EIP-1559).

        The tip is the node's suggestion; the cap is twice the latest base fee
        plus the tip, room for the base fee to rise while a window is in
        flight. Never a multiple of ``eth_gasPrice``: that suggestion follows
        the tips just paid, so scaling it would feed on itself.
        """
        tip = int(self._rpc(lambda: self.w3.eth.max_priority_fee))
        block = self._rpc(lambda: self.w3.eth.get_block("latest"))
        base = int(block.get("baseFeePerGas", 0) or 0)
        return 2 * base + tip, tip

    def wait(self, sent: Sent) -> Any:
        """The receipt of ``sent``, once mined, its status checked.

        Raises:
            ChainReverted: mined with status 0 (nothing it carried is applied).
            ChainError: not mined within the timeout.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                receipt = self.w3.eth.get_transaction_receipt(sent.tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                receipt = None
            except (Web3Exception, OSError) as exc:
                raise ChainUnavailable(f"the node at {self.rpc} failed: {_reason(exc)}") from exc
            if receipt is not None:
                break
            if time.monotonic() > deadline:
                raise ChainError(
                    f"transaction {sent.tx_hash} was not mined within {self.timeout} s"
                )
            time.sleep(_POLL)
        if int(receipt["status"]) != 1:
            raise ChainReverted(
                sent.tx_hash, sent.first_seq, sent.last_seq, f"gas used {receipt['gasUsed']}"
            )
        return receipt

    # -- plumbing ----------------------------------------------------------

    def _require_account(self) -> Any:
        self.operator  # noqa: B018 -- raises the message that names the missing key
        return self._account

    def _account_address(self) -> Any:
        return self._require_account().address

    def _chain_id_cached(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.chain_id()
        return self._chain_id

    def _rpc(self, call: Any) -> Any:
        try:
            return call()
        except (TimeExhausted, ChainError):
            raise
        except (Web3Exception, OSError, ValueError) as exc:
            # requests' connection errors are OSErrors; web3's RPC errors, Web3Exceptions.
            raise ChainUnavailable(f"the node at {self.rpc} failed: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
