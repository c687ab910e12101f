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
    from eth_abi.abi import encode as abi_encode
    from eth_account import Account
    from web3 import Web3
    from web3.exceptions import TimeExhausted, Web3Exception
except ImportError as _missing:  # pragma: no cover -- the extra is not installed
    raise ImportError(
        f"the chain bridge needs the 'chain' extra ({_missing.name} is not installed): "
        "pip install 'tokenledger[chain]'"
    ) from _missing

__all__ = ["DEFAULT_TIMEOUT", "Node", "Sent", "decode_transfer", "log_topic"]

DEFAULT_TIMEOUT = 60.0  # seconds to wait for a receipt
_POLL = 0.05  # seconds between receipt polls
_BATCH_CALLS = 500  # JSON-RPC calls per HTTP request


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
        self._functions: dict[str, tuple[str, list[str]]] = {}
        for item in self.abi:
            if item["type"] == "function":
                types = [str(i["type"]) for i in item["inputs"]]
                signature = f"{item['name']}({','.join(types)})"
                self._functions[item["name"]] = (log_topic(signature)[:10], types)

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

    def balances(self, address: str, holders: Sequence[str], block: int) -> dict[str, int]:
        """``balanceOf`` of each holder at ``block``, in JSON-RPC batches of ``_BATCH_CALLS``."""
        selector, _ = self._functions["balanceOf"]
        found: dict[str, int] = {}
        for start in range(0, len(holders), _BATCH_CALLS):
            chunk = [holder.lower() for holder in holders[start : start + _BATCH_CALLS]]
            calls = [
                ("eth_call", [{"to": address, "data": selector + "0" * 24 + h[2:]}, hex(block)])
                for h in chunk
            ]
            for holder, response in zip(chunk, self._batch(calls), strict=True):
                if "error" in response:
                    message = response["error"].get("message", response["error"])
                    raise ChainUnavailable(f"the node at {self.rpc} failed balanceOf: {message}")
                found[holder] = int(response["result"], 16)
        return found

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
        self,
        address: str,
        topics: Sequence[str | Sequence[str] | None],
        from_block: int,
        to_block: int,
    ) -> list[dict[str, Any]]:
        """The contract's logs with ``topics`` between two blocks, both included (see ``_log``)."""
        query = {
            "address": address.lower(),
            "fromBlock": hex(from_block),
            "toBlock": hex(to_block),
            "topics": list(topics),
        }
        return [_log(raw) for raw in self._raw("eth_getLogs", query)]

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
        """The call data of a token contract function.

        Encoded with eth_abi directly: web3's ``encode_abi`` checksums every
        address through its formatters, which cost most of a batched push.
        """
        selector, types = self._functions[function]
        return selector + abi_encode(types, list(args)).hex()

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
        sent, raw = self.sign(to, data, gas=gas, first_seq=first_seq, last_seq=last_seq, fees=fees)
        self.broadcast([(sent, raw)])
        return sent

    def sign(
        self,
        to: str | None,
        data: str,
        *,
        gas: int,
        first_seq: int,
        last_seq: int,
        fees: tuple[int, int] | None = None,
    ) -> tuple[Sent, str]:
        """Sign one transaction with the next nonce; (what it is, its raw 0x-hex) to broadcast."""
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
        self._nonce = int(tx["nonce"]) + 1
        sent = Sent("0x" + bytes(signed.hash).hex(), first_seq, last_seq)
        return sent, "0x" + bytes(signed.raw_transaction).hex()

    def broadcast(self, signed: Sequence[tuple[Sent, str]]) -> None:
        """Send signed transactions one request each, in nonce order.

        Not one JSON-RPC batch: a node may take a batch's transactions in any
        order, and anvil's automine then leaves those that arrived before a
        lower nonce queued until another transaction comes.

        Raises:
            ChainUnavailable: the node refused one (the nonces are re-read
                from the node before the next transaction is signed).
        """
        for sent, raw in signed:
            try:
                self._raw("eth_sendRawTransaction", raw)
            except ChainUnavailable as exc:
                self._nonce = None  # what the node holds now decides the next nonce
                raise ChainUnavailable(f"transaction {sent.tx_hash} was not sent: {exc}") from exc

    def wait_all(self, sent: Sequence[Sent]) -> list[dict[str, Any]]:
        """The receipts of ``sent``, in order, once all are mined; statuses not checked here.

        Raises:
            ChainError: some were not mined within the timeout.
        """
        receipts: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + self.timeout
        while True:
            missing = [s.tx_hash for s in sent if s.tx_hash not in receipts]
            if not missing:
                return [receipts[s.tx_hash] for s in sent]
            responses = self._batch([("eth_getTransactionReceipt", [h]) for h in missing])
            for tx_hash, response in zip(missing, responses, strict=True):
                if "error" in response:
                    message = response["error"].get("message", response["error"])
                    raise ChainUnavailable(f"the node at {self.rpc} failed: {message}")
                if response.get("result") is not None:
                    receipts[tx_hash] = _receipt(response["result"])
            if len(receipts) < len(sent):
                if time.monotonic() > deadline:
                    raise ChainError(
                        f"{len(sent) - len(receipts)} transactions were not mined "
                        f"within {self.timeout} s"
                    )
                time.sleep(_POLL)

    @staticmethod
    def check(sent: Sent, receipt: dict[str, Any]) -> None:
        """Raise ``ChainReverted`` unless the receipt's status is 1 (explicit gas hides reverts)."""
        if receipt["status"] != 1:
            raise ChainReverted(
                sent.tx_hash, sent.first_seq, sent.last_seq, f"gas used {receipt['gasUsed']}"
            )

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

    def wait(self, sent: Sent) -> dict[str, Any]:
        """The receipt of ``sent``, once mined, its status checked (see ``_receipt``).

        Raises:
            ChainReverted: mined with status 0 (nothing it carried is applied).
            ChainError: not mined within the timeout.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            raw = self._raw("eth_getTransactionReceipt", sent.tx_hash)
            if raw is not None:
                break
            if time.monotonic() > deadline:
                raise ChainError(
                    f"transaction {sent.tx_hash} was not mined within {self.timeout} s"
                )
            time.sleep(_POLL)
        receipt = _receipt(raw)
        self.check(sent, receipt)
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

    def _raw(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call, its result as the node sent it (no web3 formatting: it is slow)."""
        response = self._rpc(lambda: self.w3.provider.make_request(method, list(params)))  # type: ignore[arg-type]
        if "error" in response:
            message = response["error"].get("message", response["error"])
            raise ChainUnavailable(f"the node at {self.rpc} refused {method}: {message}")
        return response.get("result")

    def _batch(self, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """Several JSON-RPC calls in one HTTP request; the responses in request order."""
        provider: Any = self.w3.provider
        return _in_order(self._rpc(lambda: provider.make_batch_request(calls)))

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


def _in_order(responses: Any) -> list[dict[str, Any]]:
    """A batch's responses in request order (a node may answer a batch in any order)."""
    if isinstance(responses, dict):  # one error for the whole batch
        message = responses.get("error", responses)
        raise ChainUnavailable(f"the node refused a batch of requests: {message}")
    return sorted(responses, key=lambda response: int(response.get("id", 0)))


def _quantity(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _log(raw: dict[str, Any]) -> dict[str, Any]:
    """A log as the bridge reads it: lowercase hex strings, integer positions."""
    return {
        "address": str(raw["address"]).lower(),
        "topics": [str(topic).lower() for topic in raw["topics"]],
        "data": str(raw["data"]).lower(),
        "blockNumber": _quantity(raw["blockNumber"]),
        "logIndex": _quantity(raw["logIndex"]),
        "transactionHash": str(raw["transactionHash"]).lower(),
    }


def _receipt(raw: dict[str, Any]) -> dict[str, Any]:
    """A receipt with integer fields and its logs as ``_log`` makes them."""
    contract = raw.get("contractAddress")
    return {
        "status": _quantity(raw["status"]),
        "blockNumber": _quantity(raw["blockNumber"]),
        "gasUsed": _quantity(raw["gasUsed"]),
        "transactionHash": str(raw["transactionHash"]).lower(),
        "contractAddress": None if contract is None else str(contract).lower(),
        "logs": [_log(log) for log in raw["logs"]],
    }


def decode_transfer(log: dict[str, Any]) -> tuple[str, str, int]:
    """(sender, receiver, value) of a ``Transfer`` log: two indexed addresses, one word."""
    return "0x" + log["topics"][1][-40:], "0x" + log["topics"][2][-40:], int(log["data"], 16)
