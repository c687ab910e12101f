"""The ledger replayed onto its token contract, exactly once, and reconciled from the chain.

* ``deploy``: deploy the token contract with the operator key and record it.
* ``push``: send every sealed entry not yet applied, in chain order, one
  transaction per entry or ``batch`` entries per transaction, and cache each
  entry's receipt. The contract's ``last_seq`` is the truth about what is
  applied (it refuses an entry out of order or twice), so a push killed at
  any moment resumes from it: first it waits for the operator's pending
  transactions, then re-derives the receipts the cache lacks from the
  contract's logs, then sends the rest.
* ``status``: sealed, on chain, cached, confirmed and pending counts.
* ``reconcile``: balances, escrow, supply and every ``Transfer`` log of the
  contract checked against the journal; a transfer the ledger did not send
  is named with its transaction and addresses.
* ``anchor``: the latest checkpoint recorded on chain.

The mapping (addresses, 18-decimal values, the escrow) is
``domain.addresses``; see docs/chain.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tokenledger.chain.node import Node, Sent, decode_transfer, log_topic
from tokenledger.domain.addresses import ESCROW_ADDRESS, ZERO_ADDRESS, address_for, to_chain_value
from tokenledger.domain.amounts import to_units
from tokenledger.domain.errors import ChainError, InvalidArgument, NotDeployed
from tokenledger.domain.records import ChainEntry, ChainReceipt, Checkpoint, Deployment, Mismatch
from tokenledger.service.ledger import Ledger

__all__ = [
    "BATCH_GAS_PER_ENTRY",
    "DEFAULT_BATCH",
    "DEFAULT_WINDOW",
    "LOG_PAGE_BLOCKS",
    "MAX_BATCH",
    "Divergence",
    "PushReport",
    "Reconciliation",
    "Status",
    "anchor",
    "deploy",
    "push",
    "read_anchor",
    "reconcile",
    "status",
]

MAX_BATCH = 256  # the contract's bound on one apply_batch
DEFAULT_BATCH = 100
# Transactions in flight before their receipts are awaited: the node mines
# them in nonce order, so one window costs one wait instead of one per entry.
DEFAULT_WINDOW = 64
LOG_PAGE_BLOCKS = 2_000  # blocks per eth_getLogs request (providers cap the range)
# Explicit gas limits, about 1.5 times what the operations use at worst (two
# fresh balance slots): a limit too low is mined as status 0 and caught, never silent.
SINGLE_GAS = 150_000
BATCH_GAS_BASE = 80_000
BATCH_GAS_PER_ENTRY = 60_000
DEPLOY_GAS = 3_000_000
TOKEN_NAME = "tokenledger"  # noqa: S105 -- the ERC-20 name, not a secret
TOKEN_SYMBOL = "TLG"  # noqa: S105 -- its symbol

TRANSFER_TOPIC = log_topic("Transfer(address,address,uint256)")
ENTRY_TOPIC = log_topic("Entry(uint256,bytes32,uint256)")

Progress = Callable[[int, int], None]  # (entries done so far, entries to do)


@dataclass(frozen=True, slots=True)
class PushReport:
    """What a push did: entries sent now, what the chain held before and after it.

    ``sealed_seq`` is the sealed chain's head when the push began: its target.
    """

    sent: int
    transactions: int
    rederived: int
    chain_seq_before: int
    chain_seq: int
    sealed_seq: int


@dataclass(frozen=True, slots=True)
class Status:
    """The bridge at a glance (``chain_seq`` is the contract's ``last_seq``)."""

    address: str
    chain_id: int
    sealed: int
    on_chain: int
    cached: int
    confirmed: int
    pending: int
    last_block: int


@dataclass(frozen=True, slots=True)
class Divergence:
    """A log on chain the ledger does not explain, or an entry the chain does not hold."""

    kind: str
    message: str
    tx_hash: str | None = None
    seq: int | None = None
    sender: str | None = None
    receiver: str | None = None
    value: int | None = None


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The ledger against the chain at one block."""

    block: int
    mismatches: list[Mismatch]
    ledger_supply: int
    chain_supply: int
    sealed_seq: int
    chain_seq: int
    divergences: list[Divergence] = field(default_factory=list)
    accounts: int = 0
    logs: int = 0

    @property
    def ok(self) -> bool:
        return (
            not self.mismatches
            and not self.divergences
            and self.ledger_supply == self.chain_supply
            and self.sealed_seq == self.chain_seq
        )


# -- deploy ---------------------------------------------------------------------


def deploy(ledger: Ledger, node: Node) -> Deployment:
    """Deploy a new token contract with the operator key and make it the ledger's current one.

    Raises:
        ChainReverted: the deployment failed on chain.
        ChainUnavailable: the node failed.
    """
    chain_id = node.chain_id()
    address, tx_hash, block = node.deploy(TOKEN_NAME, TOKEN_SYMBOL, gas=DEPLOY_GAS)
    return ledger.record_deployment(
        chain_id=chain_id,
        address=address,
        operator=node.operator,
        tx_hash=tx_hash,
        block_number=block,
    )


def _current(ledger: Ledger, node: Node) -> Deployment:
    deployment = ledger.chain_deployment()
    if deployment is None:
        raise NotDeployed("no token contract is recorded: run 'tokenledger chain deploy' first")
    node.check_deployment(deployment.chain_id, deployment.address)
    return deployment


# -- push -----------------------------------------------------------------------


def push(
    ledger: Ledger,
    node: Node,
    *,
    batch: int = DEFAULT_BATCH,
    window: int = DEFAULT_WINDOW,
    progress: Progress | None = None,
) -> PushReport:
    """Send every sealed entry the contract has not applied, in chain order; wait for each receipt.

    Args:
        batch: entries per transaction (1: one mint, burn or move each; up to
            ``MAX_BATCH`` with ``apply_batch``).
        window: transactions sent before their receipts are awaited.
        progress: called with (done, total) as receipts arrive.

    Raises:
        InvalidArgument: a bad ``batch`` or ``window``.
        NotDeployed: no contract recorded, or none at its address.
        WrongChain: the node serves another chain.
        ChainReverted: a transaction was mined with status 0; the entries
            before it are applied and cached, none after it.
        ChainUnavailable: the node failed (push again: it resumes).
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise InvalidArgument(f"batch must be an integer from 1 to {MAX_BATCH}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InvalidArgument("window must be a positive integer")
    deployment = _current(ledger, node)
    node.wait_until_idle()  # a killed run's transactions land first: then last_seq is final
    ledger.seal()
    before = int(node.call(deployment.address, "last_seq"))
    rederived = _sync_cache(ledger, node, deployment, before)
    position = before
    # The target: what is sealed now. Entries sealed later wait for the next
    # push, so a push ends even while the host keeps writing.
    sealed = ledger.sealed_position()
    sent_entries = transactions = 0
    if progress is not None:
        progress(0, max(sealed - before, 0))
    while position < sealed:
        entries = ledger.chain_entries(position, min(batch * window, sealed - position))
        if not entries:
            break
        # A window: signed, sent in nonce order, its receipts fetched in JSON-RPC batches.
        fees = node.fees()
        in_flight = [
            (_sign(node, deployment, group, fees), group) for group in _groups(entries, batch)
        ]
        node.broadcast([signed for signed, _ in in_flight])
        receipts = node.wait_all([sent for (sent, _), _ in in_flight])
        found: list[ChainReceipt] = []
        try:
            # In nonce order: a revert raises after every transaction before it is cached.
            for ((sent, _), group), receipt in zip(in_flight, receipts, strict=True):
                node.check(sent, receipt)
                found.extend(_receipts_in(deployment, receipt, {e.seq: e for e in group}))
                sent_entries += len(group)
                transactions += 1
                position = group[-1].seq
        finally:
            ledger.record_receipts(deployment.id, found)
        if progress is not None:
            progress(sent_entries, max(sealed - before, sent_entries))
    after = int(node.call(deployment.address, "last_seq"))
    return PushReport(sent_entries, transactions, rederived, before, after, sealed)


def _groups(entries: list[ChainEntry], size: int) -> Iterator[list[ChainEntry]]:
    for start in range(0, len(entries), size):
        yield entries[start : start + size]


def _sign(
    node: Node, deployment: Deployment, group: list[ChainEntry], fees: tuple[int, int]
) -> tuple[Sent, str]:
    first, last = group[0].seq, group[-1].seq
    if len(group) == 1:
        entry = group[0]
        hash_ = bytes.fromhex(entry.chain_hash[2:])
        if entry.sender == ZERO_ADDRESS:
            data = node.encode(
                "mint", entry.receiver, entry.value, entry.seq, hash_, entry.ledger_time
            )
        elif entry.receiver == ZERO_ADDRESS:
            data = node.encode(
                "burn", entry.sender, entry.value, entry.seq, hash_, entry.ledger_time
            )
        else:
            data = node.encode(
                "move",
                entry.sender,
                entry.receiver,
                entry.value,
                entry.seq,
                hash_,
                entry.ledger_time,
            )
        gas = SINGLE_GAS
    else:
        data = node.encode(
            "apply_batch",
            [e.sender for e in group],
            [e.receiver for e in group],
            [e.value for e in group],
            first,
            [bytes.fromhex(e.chain_hash[2:]) for e in group],
            [e.ledger_time for e in group],
        )
        gas = BATCH_GAS_BASE + BATCH_GAS_PER_ENTRY * len(group)
    return node.sign(deployment.address, data, gas=gas, first_seq=first, last_seq=last, fees=fees)


def _checksum(address: str) -> str:
    from web3 import Web3  # noqa: PLC0415 -- the chain extra, imported by node.py already

    return str(Web3.to_checksum_address(address))


def _receipts_in(
    deployment: Deployment, receipt: Any, expected: dict[int, ChainEntry]
) -> list[ChainReceipt]:
    """The entries a mined receipt applied, read from its Entry logs.

    Raises:
        ChainError: the receipt does not hold exactly the expected entries.
    """
    logs = [log for log in receipt["logs"] if _hex(log["address"]) == deployment.address]
    found = [_receipt_of(deployment, log) for log in logs if _topic0(log) == ENTRY_TOPIC]
    if sorted(r.seq for r in found) != sorted(expected):
        raise ChainError(
            f"transaction {_hex(receipt['transactionHash'])} applied chain positions "
            f"{[r.seq for r in found]}, not {sorted(expected)}"
        )
    return [
        ChainReceipt(
            entry_id=expected[r.seq].entry_id,
            seq=r.seq,
            chain_id=r.chain_id,
            contract=r.contract,
            tx_hash=r.tx_hash,
            block_number=r.block_number,
            log_index=r.log_index,
            status=1,
        )
        for r in found
    ]


def _receipt_of(deployment: Deployment, entry_log: Any) -> ChainReceipt:
    # The Entry log follows its Transfer log: the Transfer's index is one less.
    return ChainReceipt(
        entry_id=0,
        seq=int(_hex(entry_log["topics"][1]), 16),
        chain_id=deployment.chain_id,
        contract=deployment.address,
        tx_hash=_hex(entry_log["transactionHash"]),
        block_number=int(entry_log["blockNumber"]),
        log_index=int(entry_log["logIndex"]) - 1,
        status=1,
    )


def _sync_cache(ledger: Ledger, node: Node, deployment: Deployment, chain_seq: int) -> int:
    """Make the receipts cache agree with the chain up to ``chain_seq``; how many re-derived."""
    cached = ledger.receipt_position(deployment.id)
    if cached > chain_seq:
        # The chain lost what the cache holds (a reorg, a node reset to older state).
        ledger.drop_receipts_after(deployment.id, chain_seq)
        return 0
    if cached == chain_seq:
        return 0
    entries = {e.seq: e for e in _entries_between(ledger, cached, chain_seq)}
    start = _receipt_block(ledger, deployment, cached)
    rederived = 0
    for logs in _log_pages(node, deployment, [ENTRY_TOPIC], start, node.block_number()):
        found = []
        for log in logs:
            receipt = _receipt_of(deployment, log)
            entry = entries.get(receipt.seq)
            if entry is None or receipt.seq <= cached:
                continue
            if _hex(log["data"])[2:66] != entry.chain_hash[2:]:
                raise ChainError(
                    f"chain position {receipt.seq} on chain carries another hash than the "
                    "ledger's: the ledger's history differs from what was pushed"
                )
            found.append(
                ChainReceipt(
                    entry_id=entry.entry_id,
                    seq=receipt.seq,
                    chain_id=receipt.chain_id,
                    contract=receipt.contract,
                    tx_hash=receipt.tx_hash,
                    block_number=receipt.block_number,
                    log_index=receipt.log_index,
                    status=1,
                )
            )
        ledger.record_receipts(deployment.id, found)
        rederived += len(found)
    return rederived


def _receipt_block(ledger: Ledger, deployment: Deployment, seq: int) -> int:
    if seq == 0:
        return deployment.block_number
    # Entries after ``seq`` were mined at or after the block holding ``seq``.
    entry = ledger.chain_entries(seq - 1, 1)
    receipt = ledger.get_chain_receipt(entry[0].entry_id) if entry else None
    return receipt.block_number if receipt is not None else deployment.block_number


def _entries_between(ledger: Ledger, after: int, last: int) -> Iterator[ChainEntry]:
    position = after
    while position < last:
        page = ledger.chain_entries(position, min(5000, last - position))
        if not page:
            return
        yield from page
        position = page[-1].seq


def _log_pages(
    node: Node, deployment: Deployment, topics: list[str | None], start: int, end: int
) -> Iterator[list[Any]]:
    block = start
    while block <= end:
        to_block = min(block + LOG_PAGE_BLOCKS - 1, end)
        yield node.logs(deployment.address, topics, block, to_block)
        block = to_block + 1


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if hasattr(value, "hex") and not isinstance(value, str):
        text = str(value.hex())
        return (text if text.startswith("0x") else "0x" + text).lower()
    return str(value).lower()


def _topic0(log: Any) -> str:
    return _hex(log["topics"][0]) if log["topics"] else ""


# -- status ---------------------------------------------------------------------


def status(ledger: Ledger, node: Node, *, confirmations: int = 0) -> Status:
    """Counts of the bridge: sealed, applied on chain, cached, confirmed, pending.

    ``confirmed`` counts cached receipts at least ``confirmations`` blocks deep.

    Raises:
        NotDeployed, WrongChain, ChainUnavailable: as for ``push``.
    """
    deployment = _current(ledger, node)
    ledger.seal()
    block = node.block_number()
    on_chain = int(node.call(deployment.address, "last_seq", block=block))
    sealed = ledger.sealed_position()
    cached, confirmed = ledger.receipt_counts(deployment.id, block - max(confirmations, 0))
    return Status(
        address=deployment.address,
        chain_id=deployment.chain_id,
        sealed=sealed,
        on_chain=on_chain,
        cached=cached,
        confirmed=confirmed,
        pending=max(sealed - on_chain, 0),
        last_block=block,
    )


# -- reconcile ------------------------------------------------------------------


def reconcile(ledger: Ledger, node: Node, *, page_blocks: int = LOG_PAGE_BLOCKS) -> Reconciliation:
    """The ledger against the chain's latest block: balances, escrow, supply, every Transfer log.

    Balances: ``balanceOf`` of every account's address and of the escrow
    address against the ledger times 10**12 (``Ledger.reconcile``). Logs: each
    ``Transfer`` of the contract, read back by block range, must be an
    entry's (followed by its ``Entry`` log, with the journal's from, to and
    value at that position); any other is a divergence named with its
    transaction and addresses. Nothing is written.

    Raises:
        NotDeployed, WrongChain, ChainUnavailable: as for ``push``.
    """
    deployment = _current(ledger, node)
    block = node.block_number()
    addresses: list[str] = []
    after: str | None = None
    while page := ledger.list_accounts(after=after, limit=1000):
        addresses.extend(address_for(account.account_id) for account in page)
        after = page[-1].account_id
    accounts = len(addresses)
    chain_seq = int(node.call(deployment.address, "last_seq", block=block))
    divergences, logs, holders = _check_logs(
        ledger, node, deployment, block, chain_seq, page_blocks
    )
    # Every address a Transfer ever reached, too: a holder the ledger does not know.
    known = set(addresses)
    addresses += sorted((holders | {ESCROW_ADDRESS}) - known - {ZERO_ADDRESS})
    snapshot = node.balances(deployment.address, addresses, block)
    mismatches = ledger.reconcile(snapshot)
    chain_supply = int(node.call(deployment.address, "totalSupply", block=block))
    ledger_supply = to_chain_value(to_units(ledger.get_total_supply()))
    sealed = ledger.sealed_position()
    return Reconciliation(
        block=block,
        mismatches=mismatches,
        ledger_supply=ledger_supply,
        chain_supply=chain_supply,
        sealed_seq=sealed,
        chain_seq=chain_seq,
        divergences=divergences,
        accounts=accounts,
        logs=logs,
    )


def _check_logs(
    ledger: Ledger,
    node: Node,
    deployment: Deployment,
    block: int,
    chain_seq: int,
    page_blocks: int,
) -> tuple[list[Divergence], int, set[str]]:
    """Divergences between the contract's logs and the journal; the Transfer count; holders."""
    divergences: list[Divergence] = []
    holders: set[str] = set()
    applied: dict[int, tuple[str, str, int, str, str]] = {}  # seq -> (from, to, value, hash, tx)
    count = 0
    start = deployment.block_number
    while start <= block:
        end = min(start + page_blocks - 1, block)
        logs = node.logs(deployment.address, [[TRANSFER_TOPIC, ENTRY_TOPIC]], start, end)
        logs.sort(key=lambda log: (int(log["blockNumber"]), int(log["logIndex"])))
        for index, log in enumerate(logs):
            if _topic0(log) != TRANSFER_TOPIC:
                continue
            count += 1
            sender, receiver, value = decode_transfer(log)
            holders.update((sender, receiver))
            tx_hash = _hex(log["transactionHash"])
            following = logs[index + 1] if index + 1 < len(logs) else None
            if (
                following is None
                or _topic0(following) != ENTRY_TOPIC
                or _hex(following["transactionHash"]) != tx_hash
                or int(following["logIndex"]) != int(log["logIndex"]) + 1
            ):
                divergences.append(
                    Divergence(
                        "rogue_transfer",
                        f"transaction {tx_hash} moved {value} from {sender} to {receiver}: "
                        "a Transfer the ledger did not send",
                        tx_hash=tx_hash,
                        sender=sender,
                        receiver=receiver,
                        value=value,
                    )
                )
                continue
            seq = int(_hex(following["topics"][1]), 16)
            applied[seq] = (sender, receiver, value, _hex(following["data"])[2:66], tx_hash)
        start = end + 1
    for entry in _entries_between(ledger, 0, chain_seq):
        on_chain = applied.pop(entry.seq, None)
        if on_chain is None:
            divergences.append(
                Divergence(
                    "missing_log", f"chain position {entry.seq} has no Transfer log", seq=entry.seq
                )
            )
            continue
        sender, receiver, value, hash_, tx_hash = on_chain
        if (sender, receiver, value, hash_) != (
            entry.sender,
            entry.receiver,
            entry.value,
            entry.chain_hash[2:],
        ):
            divergences.append(
                Divergence(
                    "entry_differs",
                    f"chain position {entry.seq} (entry {entry.entry_id}) is on chain as "
                    f"{value} from {sender} to {receiver} in {tx_hash}, which the journal "
                    "does not say",
                    tx_hash=tx_hash,
                    seq=entry.seq,
                    sender=sender,
                    receiver=receiver,
                    value=value,
                )
            )
    for seq, (sender, receiver, value, _, tx_hash) in sorted(applied.items()):
        divergences.append(
            Divergence(
                "unknown_entry",
                f"chain position {seq} in {tx_hash} is not in the ledger's sealed chain",
                tx_hash=tx_hash,
                seq=seq,
                sender=sender,
                receiver=receiver,
                value=value,
            )
        )
    return divergences, count, holders


# -- anchor ---------------------------------------------------------------------


def anchor(ledger: Ledger, node: Node) -> Checkpoint:
    """Record the ledger's latest checkpoint (taken now if new entries are sealed) on chain.

    Raises:
        ChainError: there is nothing to anchor, or the transaction reverted.
        NotDeployed, WrongChain, ChainUnavailable: as for ``push``.
    """
    deployment = _current(ledger, node)
    checkpoint = ledger.checkpoint() or ledger.latest_checkpoint()
    if checkpoint is None:
        raise ChainError("the ledger has no checkpoint to anchor: it holds no entries yet")
    if int(node.call(deployment.address, "anchor_seq")) >= checkpoint.last_seq:
        return checkpoint
    node.wait_until_idle()
    data = node.encode(
        "anchor",
        checkpoint.last_seq,
        bytes.fromhex(checkpoint.chain_hash),
        bytes.fromhex(checkpoint.merkle_root),
    )
    sent = node.send(
        deployment.address,
        data,
        gas=120_000,
        first_seq=checkpoint.last_seq,
        last_seq=checkpoint.last_seq,
    )
    node.wait(sent)
    return checkpoint


def read_anchor(ledger: Ledger, node: Node) -> dict[str, Any] | None:
    """The anchor the contract holds, as ``verify(anchor=...)`` takes it; ``None`` if none."""
    deployment = _current(ledger, node)
    last_seq = int(node.call(deployment.address, "anchor_seq"))
    if last_seq == 0:
        return None
    return {
        "last_seq": last_seq,
        "chain_hash": _hex(node.call(deployment.address, "anchor_chain_hash"))[2:],
        "merkle_root": _hex(node.call(deployment.address, "anchor_merkle_root"))[2:],
    }
