"""Audit operations: reversals, verification, the sealed chain, checkpoints, export.

The chain is sealed after the fact, not on every write (see docs/audit.md):
writers never wait on a global row, and ``seal`` links entries in the order
in which their transactions are known to have ended. ``checkpoint`` and
``export_chain`` seal first, so what they cover is everything committed
before they ran; ``verify`` only reads, and counts what is not sealed yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tokenledger.domain import inputs
from tokenledger.domain.addresses import ESCROW_ADDRESS, address_for, to_chain_value
from tokenledger.domain.amounts import format_amount
from tokenledger.domain.constants import ESCROW_ACCOUNT
from tokenledger.domain.errors import EntryNotFound, InvalidArgument, NotSealed
from tokenledger.domain.hashing import (
    DIGESTED_LINK,
    canonical_timestamp,
    entry_hash,
    inclusion_proof,
    link_hash,
    merkle_root,
)
from tokenledger.domain.postings import Draft
from tokenledger.domain.records import (
    Checkpoint,
    InclusionProof,
    LedgerEntry,
    Mismatch,
    VerifyReport,
    entry_from_row,
)
from tokenledger.service.core import LedgerCore, entry_to_find
from tokenledger.service.verification import anchors_from, verify_books
from tokenledger.storage import notifications
from tokenledger.storage.repository import accounts, chain, journal, stakes
from tokenledger.storage.transactions import run_read, run_write, stream_read

__all__ = ["SEAL_BATCH", "AuditOperations", "transfer_record"]

SEAL_BATCH = 5000  # entries linked per sealing transaction


class AuditOperations(LedgerCore):
    """Reversal, verification, sealing, checkpoints and the chain export."""

    def reverse(self, entry_id: int, reason: str, memo: str | None = None) -> LedgerEntry:
        """Write the compensating entry of ``entry_id`` (at most once per entry).

        The tokens go back the way they came; if the receiver no longer has
        them, ``InsufficientFunds``. Stake entries are resolved by
        ``settle``/``release``, not reversed.

        Raises:
            EntryNotFound: no such entry (whatever ``entry_id`` is).
            InvalidArgument: the entry was already reversed, or belongs to a
                stake; a blank reason.
            InsufficientFunds: the receiver no longer holds the tokens.
        """
        target = entry_to_find(entry_id)
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
            posting = self._lock(connection, draft.accounts()).posting()
            # Checked under the accounts' locks: a second reversal racing this
            # one waits for it, then finds it here.
            earlier = journal.reversal_of(connection, target)
            if earlier is not None:
                raise InvalidArgument(f"entry {target} was already reversed by entry {earlier}")
            row = posting.add(draft)
            (new_id,) = self._write(connection, posting)
            return entry_from_row({**row, "id": new_id})

        return run_write(self._binding, work)

    def verify(
        self, anchor: Checkpoint | Mapping[str, Any] | Iterable[Any] | None = None
    ) -> VerifyReport:
        """Check the whole books (see ``tokenledger.service.verification``).

        Args:
            anchor: a checkpoint kept outside the database (a ``Checkpoint``,
                or a mapping with ``last_seq``, ``chain_hash`` and
                ``merkle_root``), or several: the report is not ok unless the
                books extend each one. This is what proves a history that was
                rewritten and re-sealed with the database's guards off.

        Raises:
            InvalidArgument: a malformed anchor.
        """
        anchors = anchors_from(anchor)
        return run_read(self._binding, lambda c: verify_books(c, anchors), snapshot=True)

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint, or ``None`` before the first: the anchor to keep elsewhere."""
        row = run_read(self._binding, chain.last_checkpoint)
        return None if row is None else Checkpoint(**_checkpoint_fields(row))

    def seal(self) -> int:
        """Link every committed, unsealed entry into the hash chain; how many were linked.

        Entries are linked in batches of ``SEAL_BATCH``, each its own
        transaction: if a later batch fails, the earlier ones stay sealed.
        """
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
            row = chain.add_checkpoint(
                connection,
                first_seq=first_seq,
                last_seq=head.seq,
                merkle_root=merkle_root(hashes),
                chain_hash=hashes[-1],
            )
            return Checkpoint(**_checkpoint_fields(row))

        return run_write(self._binding, work)

    def prove_inclusion(self, entry_id: int) -> InclusionProof:
        """The Merkle proof that a checkpoint covers the entry.

        Raises:
            EntryNotFound: no such entry (whatever ``entry_id`` is).
            NotSealed: the entry is not sealed, or not under a checkpoint,
                yet; run ``checkpoint()`` first.
        """
        target = entry_to_find(entry_id)

        def work(connection: Connection) -> InclusionProof:
            if journal.get(connection, target) is None:
                raise EntryNotFound(target)
            link = chain.link_of_entry(connection, target)
            if link is None:
                raise NotSealed(target, "sealed")
            checkpoint = chain.checkpoint_covering(connection, link.seq)
            if checkpoint is None:
                raise NotSealed(target, "under a checkpoint")
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
        ledger's own fields. The connection is held while the iterator runs
        and returned as soon as it is exhausted, closed or dropped.

        Raises:
            InvalidArgument: a bad ``since``.
            StorageError: the database failed.
        """
        start = None if since is None else inputs.moment(since, name="since")
        self.seal()

        def records(connection: Connection) -> Iterator[dict[str, Any]]:
            for link in chain.walk(connection):
                if link.id is None or (start is not None and link.timestamp < start):
                    continue
                yield transfer_record(link._mapping, link.seq, link.chain_hash)

        return stream_read(self._binding, records)

    def reconcile(self, snapshot: Mapping[str, int]) -> list[Mismatch]:
        """Compare on-chain balances (address -> 18-decimal integer) with the ledger.

        An agent's on-chain balance is its available balance; the escrow
        address holds every open stake. Addresses absent from ``snapshot``
        count as zero. Nothing is written.

        Raises:
            InvalidArgument: an address that is not a string, or a balance that
                is not an integer (``1.9`` is refused, never truncated).
        """
        chain_values = _chain_values(snapshot)

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


def _checkpoint_fields(row: Any) -> dict[str, Any]:
    return {f.name: row._mapping[f.name] for f in fields(Checkpoint)}


def _chain_values(snapshot: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(snapshot, Mapping):
        raise InvalidArgument("a reconcile snapshot maps addresses to integer balances")
    values: dict[str, int] = {}
    for address, value in snapshot.items():
        if not isinstance(address, str):
            raise InvalidArgument(f"an address must be a string, got {address!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(
                f"the balance of {address} must be an integer of 18 decimals, got {value!r}"
            )
        values[address.lower()] = value
    return values


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
        # An entry with a digest is linked over it (version 2), which covers
        # every stored column; one written before digests existed, over its
        # version-1 encoding.
        if row.digest is not None:
            previous, encoding = link_hash(previous, row.digest), DIGESTED_LINK
        else:
            previous, encoding = entry_hash(previous, row._mapping), 1
        links.append({"seq": seq, "entry_id": row.id, "hash": previous, "encoding": encoding})
    chain.append(connection, links)
    chain.move_head(
        connection,
        seq=seq,
        hash_=previous,
        last_txid=rows[-1].writer_txid,
        last_entry_id=rows[-1].id,
    )
    notifications.announce(connection, seq)  # delivered to event waiters at the commit
    return len(rows)
