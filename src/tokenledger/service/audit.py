"""Audit operations: reversals, verification, the sealed chain, checkpoints, export.

The chain is sealed after the fact, not on every write (see docs/audit.md):
writers never wait on a global row, and ``seal`` links entries in the order
in which their transactions are known to have ended. ``checkpoint`` and
``export_chain`` seal first, so what they cover is everything committed
before they ran; ``verify`` only reads, and counts what is not sealed yet.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tokenledger import inputs
from tokenledger.amounts import format_amount
from tokenledger.chain import (
    ESCROW_ADDRESS,
    address_for,
    canonical_timestamp,
    entry_hash,
    inclusion_proof,
    merkle_root,
    to_chain_value,
)
from tokenledger.constants import ESCROW_ACCOUNT
from tokenledger.errors import EntryNotFound, InvalidArgument
from tokenledger.records import LedgerEntry, VerifyReport
from tokenledger.repository import accounts, chain, journal, stakes
from tokenledger.service.core import LedgerCore
from tokenledger.service.postings import Draft, entry_record, now_after
from tokenledger.service.unit_of_work import run_read, run_write
from tokenledger.service.verification import verify_books

__all__ = ["SEAL_BATCH", "AuditOperations", "Checkpoint", "InclusionProof", "Mismatch"]

SEAL_BATCH = 5000  # entries linked per sealing transaction


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A Merkle root over chain positions ``first_seq``..``last_seq``."""

    id: int
    first_seq: int
    last_seq: int
    merkle_root: str
    chain_hash: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Everything ``tokenledger.chain.verify_inclusion`` needs, for one entry."""

    entry_id: int
    seq: int
    entry_hash: str
    checkpoint_id: int
    index: int
    size: int
    path: list[str]
    merkle_root: str


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One address whose on-chain balance differs from the ledger's."""

    address: str
    account_id: str | None
    ledger_value: int
    chain_value: int


class AuditOperations(LedgerCore):
    """Reversal, verification, sealing, checkpoints and the chain export."""

    def reverse(self, entry_id: int, reason: str, memo: str | None = None) -> LedgerEntry:
        """Write the compensating entry of ``entry_id`` (at most once per entry).

        The tokens go back the way they came; if the receiver no longer has
        them, ``InsufficientFunds``. Stake entries are resolved by
        ``settle``/``release``, not reversed.
        """
        target = inputs.entry_id(entry_id)
        why = inputs.reason(reason)
        note = inputs.memo(memo)

        def work(connection: Connection) -> LedgerEntry:
            original = journal.get(connection, target)
            if original is None:
                raise EntryNotFound(target)
            if original.stake_id is not None:
                raise InvalidArgument(
                    f"entry {target} belongs to stake {original.stake_id}: "
                    "settle or release the stake instead"
                )
            draft = Draft(
                from_account=original.to_account,
                to_account=original.from_account,
                amount=original.amount,
                reason=why,
                reference_type=original.reference_type,
                reference_id=original.reference_id,
                memo=note,
                reverses_entry_id=target,
            )
            posting = self._open_posting(connection, draft.accounts())
            # Checked under the accounts' locks: a second reversal racing this
            # one waits for it, then finds it here.
            earlier = journal.reversal_of(connection, target)
            if earlier is not None:
                raise InvalidArgument(f"entry {target} was already reversed by entry {earlier}")
            row = posting.add(draft)
            (new_id,) = self._write_posting(connection, posting)
            return entry_record(row, new_id)

        return run_write(self._binding, work)

    def verify(self) -> VerifyReport:
        """Check the whole books (see ``tokenledger.service.verification``)."""
        return run_read(self._binding, verify_books, snapshot=True)

    def seal(self) -> int:
        """Link every committed, unsealed entry into the hash chain; how many were linked."""
        total = 0
        while True:
            sealed = run_write(self._binding, _seal_batch)
            total += sealed
            if sealed < SEAL_BATCH:
                return total

    def checkpoint(self) -> Checkpoint | None:
        """Seal, then store a Merkle root over the chain since the last checkpoint.

        ``None`` when nothing was sealed since the last checkpoint.
        """
        self.seal()

        def work(connection: Connection) -> Checkpoint | None:
            head = chain.lock_head(connection)
            last = chain.last_checkpoint(connection)
            first_seq = 1 if last is None else last.last_seq + 1
            if head.seq < first_seq:
                return None
            hashes = chain.hashes(connection, first_seq, head.seq)
            fields = {
                "first_seq": first_seq,
                "last_seq": head.seq,
                "merkle_root": merkle_root(hashes),
                "chain_hash": hashes[-1],
                "created_at": now_after(),
            }
            return Checkpoint(id=chain.add_checkpoint(connection, **fields), **fields)

        return run_write(self._binding, work)

    def prove_inclusion(self, entry_id: int) -> InclusionProof:
        """The Merkle proof that a checkpoint covers the entry.

        Raises ``InvalidArgument`` while the entry is not yet sealed or not
        yet under a checkpoint; run ``checkpoint()`` first.
        """
        target = inputs.entry_id(entry_id)

        def work(connection: Connection) -> InclusionProof:
            if journal.get(connection, target) is None:
                raise EntryNotFound(target)
            link = chain.link_of_entry(connection, target)
            if link is None:
                raise InvalidArgument(f"entry {target} is not sealed yet")
            checkpoint = chain.checkpoint_covering(connection, link.seq)
            if checkpoint is None:
                raise InvalidArgument(f"entry {target} is not under a checkpoint yet")
            hashes = chain.hashes(connection, checkpoint.first_seq, checkpoint.last_seq)
            index = link.seq - checkpoint.first_seq
            return InclusionProof(
                entry_id=target,
                seq=link.seq,
                entry_hash=link.hash,
                checkpoint_id=checkpoint.id,
                index=index,
                size=len(hashes),
                path=inclusion_proof(hashes, index),
                merkle_root=checkpoint.merkle_root,
            )

        return run_read(self._binding, work, snapshot=True)

    def export_chain(self, since: datetime | str | None = None) -> Iterator[dict[str, Any]]:
        """ERC-20-style Transfer records of every sealed entry, in chain order.

        Seals first. Each record has ``from``/``to`` addresses, ``value``
        (18 decimals), ``timestamp``, ``hash`` (the transaction id) and the
        ledger's own fields.
        """
        start = None if since is None else inputs.moment(since, name="since")
        self.seal()
        with self._binding.read(snapshot=True) as connection:
            for link in chain.walk(connection):
                if link.id is None or (start is not None and link.timestamp < start):
                    continue
                yield transfer_record(link._mapping, link.seq, link.chain_hash)

    def reconcile(self, snapshot: Mapping[str, int]) -> list[Mismatch]:
        """Compare on-chain balances (address -> 18-decimal integer) with the ledger.

        An agent's on-chain balance is its available balance; the escrow
        address holds every open stake. Addresses absent from ``snapshot``
        count as zero. Nothing is written.
        """
        chain_values = {str(k).lower(): int(v) for k, v in snapshot.items()}

        def work(connection: Connection) -> list[Mismatch]:
            expected: dict[str, tuple[str | None, int]] = {}
            for row in accounts.stream(connection):
                expected[address_for(row.account_id)] = (
                    row.account_id,
                    to_chain_value(row.balance),
                )
            escrow = sum(stakes.open_totals(connection).values())
            expected[ESCROW_ADDRESS] = (ESCROW_ACCOUNT, to_chain_value(escrow))
            mismatches = [
                Mismatch(address, account_id, value, chain_values.get(address, 0))
                for address, (account_id, value) in expected.items()
                if chain_values.get(address, 0) != value
            ]
            mismatches.extend(
                Mismatch(address, None, 0, value)
                for address, value in chain_values.items()
                if address not in expected and value != 0
            )
            return sorted(mismatches, key=lambda m: m.address)

        return run_read(self._binding, work, snapshot=True)


def transfer_record(entry: Mapping[Any, Any], seq: int, hash_: str) -> dict[str, Any]:
    """One journal entry as an ERC-20 Transfer, with the ledger's fields alongside."""
    return {
        "seq": seq,
        "hash": "0x" + hash_,
        "from": address_for(entry["from_account"]),
        "to": address_for(entry["to_account"]),
        "value": to_chain_value(entry["amount"]),
        "timestamp": canonical_timestamp(entry["timestamp"]),
        "block_time": int(entry["timestamp"].timestamp()),
        "entry_id": entry["id"],
        "from_account": entry["from_account"],
        "to_account": entry["to_account"],
        "amount": format_amount(entry["amount"]),
        "reason": entry["reason"],
        "reference_type": entry["reference_type"],
        "reference_id": entry["reference_id"],
        "memo": entry["memo"],
        "stake_id": entry["stake_id"],
        "reverses_entry_id": entry["reverses_entry_id"],
    }


def _seal_batch(connection: Connection) -> int:
    # The horizon first: once computed it stays true, and taking it before
    # the head's row lock keeps the sealer's own transaction out of it.
    horizon = chain.commit_horizon(connection)
    head = chain.lock_head(connection)
    rows = chain.unsealed(
        connection,
        last_txid=head.last_txid,
        last_entry_id=head.last_entry_id,
        horizon=horizon,
        limit=SEAL_BATCH,
    )
    if not rows:
        return 0
    seq, previous = head.seq, head.hash
    links = []
    for row in rows:
        seq += 1
        previous = entry_hash(previous, row._mapping)
        links.append({"seq": seq, "entry_id": row.id, "hash": previous})
    chain.append(connection, links)
    chain.move_head(
        connection,
        seq=seq,
        hash_=previous,
        last_txid=rows[-1].writer_txid,
        last_entry_id=rows[-1].id,
        now=now_after(),
    )
    return len(rows)
