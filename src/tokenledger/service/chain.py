"""The chain bridge's side of the ledger: deployments, receipts, the entries to replay.

The token contract and the node are the ``tokenledger.chain`` layer's
(``chain/bridge.py`` drives a push, a reconciliation, an anchor); what it
needs from the database goes through these operations. The receipts table
is a cache of the chain: ``chain push`` re-derives it from the contract's
logs, so a row may lag the chain but never claims what the chain does not
hold (receipts past the contract's ``last_seq`` are dropped). See
docs/chain.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection

from tokenledger.domain.addresses import address_for, to_chain_value
from tokenledger.domain.errors import EntryNotFound
from tokenledger.domain.records import ChainEntry, ChainReceipt, Deployment
from tokenledger.service.core import LedgerCore, entry_to_find
from tokenledger.storage.repository import chain, journal, receipts
from tokenledger.storage.transactions import run_read, run_write

__all__ = ["ChainOperations"]


class ChainOperations(LedgerCore):
    """``get_chain_receipt`` and the records the chain bridge keeps in the ledger's database."""

    def get_chain_receipt(self, entry_id: int) -> ChainReceipt | None:
        """Where the entry landed on the current token contract; ``None`` before it is on chain.

        Raises:
            EntryNotFound: no such entry (whatever ``entry_id`` is).
        """
        wanted = entry_to_find(entry_id)

        def work(connection: Connection) -> ChainReceipt | None:
            if journal.get(connection, wanted) is None:
                raise EntryNotFound(entry_id)
            deployment = receipts.latest_deployment(connection)
            if deployment is None:
                return None
            row = receipts.of_entry(connection, deployment.id, wanted)
            if row is None:
                return None
            return ChainReceipt(
                entry_id=row.entry_id,
                seq=row.seq,
                chain_id=deployment.chain_id,
                contract=deployment.address,
                tx_hash=row.tx_hash,
                block_number=row.block_number,
                log_index=row.log_index,
                status=row.status,
            )

        return run_read(self._binding, work)

    def chain_tx_hashes(self, entry_ids: Iterable[int]) -> dict[int, str]:
        """The transaction hash of each of these entries already on chain (others are absent)."""
        ids = list(entry_ids)

        def work(connection: Connection) -> dict[int, str]:
            deployment = receipts.latest_deployment(connection)
            if deployment is None:
                return {}
            return receipts.tx_hashes(connection, deployment.id, ids)

        return run_read(self._binding, work) if ids else {}

    def chain_deployment(self) -> Deployment | None:
        """The token contract the ledger replays onto (the newest deployed); ``None`` before."""
        row = run_read(self._binding, receipts.latest_deployment)
        return None if row is None else _deployment(row)

    def record_deployment(
        self, *, chain_id: int, address: str, operator: str, tx_hash: str, block_number: int
    ) -> Deployment:
        """Store a token contract just deployed; from now on it is the current one."""

        def work(connection: Connection) -> Deployment:
            return _deployment(
                receipts.add_deployment(
                    connection,
                    chain_id=chain_id,
                    address=address.lower(),
                    operator=operator.lower(),
                    tx_hash=tx_hash,
                    block_number=block_number,
                )
            )

        return run_write(self._binding, work)

    def chain_entries(self, after: int, limit: int) -> list[ChainEntry]:
        """The sealed entries after chain position ``after``, as the contract applies them."""

        def work(connection: Connection) -> list[ChainEntry]:
            return [
                ChainEntry(
                    seq=row.seq,
                    chain_hash="0x" + row.chain_hash,
                    entry_id=row.id,
                    sender=address_for(row.from_account),
                    receiver=address_for(row.to_account),
                    value=to_chain_value(row.amount),
                    ledger_time=int(row.timestamp.timestamp()),
                )
                for row in chain.links_after(connection, after, limit)
            ]

        return run_read(self._binding, work)

    def sealed_position(self) -> int:
        """The chain position of the last sealed entry (0: none)."""
        return int(run_read(self._binding, lambda c: chain.read_head(c).seq))

    def receipt_position(self, deployment_id: int) -> int:
        """The highest chain position whose receipt is cached for this deployment."""
        return run_read(self._binding, lambda c: receipts.last_seq(c, deployment_id))

    def receipt_counts(self, deployment_id: int, confirmed_block: int) -> tuple[int, int]:
        """(receipts cached, those in blocks at or below ``confirmed_block``)."""
        return run_read(self._binding, lambda c: receipts.counts(c, deployment_id, confirmed_block))

    def record_receipts(self, deployment_id: int, found: Sequence[ChainReceipt]) -> None:
        """Cache receipts the chain holds; positions already cached are left as they are."""
        if not found:
            return
        rows: list[dict[str, int | str]] = [
            {
                "deployment_id": deployment_id,
                "seq": receipt.seq,
                "entry_id": receipt.entry_id,
                "tx_hash": receipt.tx_hash,
                "block_number": receipt.block_number,
                "log_index": receipt.log_index,
                "status": receipt.status,
            }
            for receipt in found
        ]

        def work(connection: Connection) -> None:
            cached = receipts.last_seq(connection, deployment_id)
            receipts.add_receipts(connection, [row for row in rows if int(row["seq"]) > cached])

        run_write(self._binding, work)

    def drop_receipts_after(self, deployment_id: int, seq: int) -> int:
        """Forget cached receipts past ``seq``: the chain no longer holds them (reorg, reset)."""
        return run_write(self._binding, lambda c: receipts.drop_after(c, deployment_id, seq))


def _deployment(row: object) -> Deployment:
    m = row._mapping  # type: ignore[attr-defined]
    return Deployment(
        id=m["id"],
        chain_id=m["chain_id"],
        address=m["address"],
        operator=m["operator"],
        tx_hash=m["tx_hash"],
        block_number=m["block_number"],
        created_at=m["created_at"],
    )
