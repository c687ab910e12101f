"""``verify``: the books prove themselves, or say exactly where they do not.

Everything is recomputed from the journal and compared with what is stored,
in one consistent snapshot, streaming, so memory grows with the number of
accounts and stakes, not with the number of entries:

1. the hash chain from genesis (every link recomputed: version 1 over the
   entry's canonical encoding, version 2 over its recomputed digest), its
   head, and every entry older than the head being in it;
2. every entry's digest against its stored columns (tamper evidence from the
   moment of commit, sealed or not), every ``balance_after_*`` against a
   replay of the journal, and per account timestamps that never go back;
3. every account's balance and totals against the replay, none negative;
4. every stake's digest against its columns, its opening entry against its
   amount and owner, its escrow entries against its status, and open stakes
   against ``total_staked``;
5. supply: minted minus burned against the sum of balances and stakes;
6. every checkpoint's Merkle root and chain hash;
7. optionally, anchors kept outside the database: the books must extend each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row

from tokenledger.domain import inputs
from tokenledger.domain.amounts import format_amount
from tokenledger.domain.books import Balances, UnknownParty, apply_entry
from tokenledger.domain.constants import ESCROW_ACCOUNT, SYSTEM_ACCOUNT, is_reserved
from tokenledger.domain.errors import InvalidArgument
from tokenledger.domain.hashing import (
    DIGESTED_LINK,
    GENESIS_HASH,
    entry_digest,
    entry_hash,
    link_hash,
    merkle_root,
    stake_digest,
)
from tokenledger.domain.records import Checkpoint, Problem, VerifyReport
from tokenledger.storage.repository import accounts, chain, journal, stakes

__all__ = ["MAX_PROBLEMS", "Anchor", "anchors_from", "verify_books"]

MAX_PROBLEMS = 10_000  # beyond this, the report says how many more were found


@dataclass
class _Findings:
    problems: list[Problem] = field(default_factory=list)
    dropped: int = 0

    def add(self, kind: str, message: str, **about: Any) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(kind, message, **about))
        else:
            self.dropped += 1


@dataclass(frozen=True, slots=True)
class Anchor:
    """A checkpoint as kept outside the database: the books must extend it."""

    last_seq: int
    chain_hash: str
    merkle_root: str


@dataclass
class _Openings:
    """What the journal says each stake was opened with."""

    count: int = 0
    amount: int = 0
    owner: str | None = None


_HEX64 = re.compile(r"[0-9a-f]{64}")
_ANCHOR_KEYS = ("last_seq", "chain_hash", "merkle_root")


def anchors_from(value: object) -> tuple[Anchor, ...]:
    """One anchor or several, each a ``Checkpoint`` or a mapping with its three keys.

    Raises:
        InvalidArgument: anything else, or a malformed sequence number or hash.
    """
    if value is None:
        return ()
    if isinstance(value, Anchor | Checkpoint | Mapping):
        return (_anchor(value),)
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidArgument(
            "an anchor is a Checkpoint or a mapping with last_seq, chain_hash and merkle_root"
        )
    return tuple(_anchor(item) for item in value)


def _anchor(value: object) -> Anchor:
    if isinstance(value, Anchor):
        return value
    if isinstance(value, Checkpoint):
        return Anchor(value.last_seq, value.chain_hash, value.merkle_root)
    if not isinstance(value, Mapping) or not all(key in value for key in _ANCHOR_KEYS):
        raise InvalidArgument(
            "an anchor is a Checkpoint or a mapping with last_seq, chain_hash and merkle_root"
        )
    last_seq = inputs.positive_id(value["last_seq"], name="the anchor's last_seq")
    hashes = []
    for key in ("chain_hash", "merkle_root"):
        text = value[key]
        if not isinstance(text, str) or not _HEX64.fullmatch(text.removeprefix("0x").lower()):
            raise InvalidArgument(f"the anchor's {key} must be 64 hex digits, got {text!r}")
        hashes.append(text.removeprefix("0x").lower())
    return Anchor(last_seq, hashes[0], hashes[1])


def verify_books(connection: Connection, anchors: tuple[Anchor, ...] = ()) -> VerifyReport:
    """Check everything listed in the module docstring; never writes."""
    found = _Findings()
    counts: dict[str, int] = {}
    head = _verify_chain(connection, found, counts)
    books, minted, burned, escrow_by_stake, openings = _replay(connection, head, found, counts)
    _verify_accounts(connection, books, found, counts)
    _verify_stakes(connection, escrow_by_stake, openings, found, counts)
    supply = accounts.total_supply(connection)
    if minted - burned != supply:
        found.add(
            "supply_mismatch",
            f"minted {format_amount(minted)} - burned {format_amount(burned)} = "
            f"{format_amount(minted - burned)}, but accounts hold {format_amount(supply)}",
        )
    counts["minted_units"] = minted
    counts["burned_units"] = burned
    _verify_checkpoints(connection, found, counts)
    _verify_anchors(connection, head, anchors, found, counts)
    if found.dropped:
        counts["problems_not_listed"] = found.dropped
    return VerifyReport(ok=not found.problems, problems=found.problems, counts=counts)


def _verify_chain(connection: Connection, found: _Findings, counts: dict[str, int]) -> Row[Any]:
    previous = GENESIS_HASH
    expected_seq = 1
    sealed = 0
    for link in chain.walk(connection):
        sealed += 1
        if link.seq != expected_seq:
            found.add(
                "chain_gap",
                f"chain position {expected_seq} is missing (next is {link.seq})",
                entry_id=link.entry_id,
            )
            expected_seq = link.seq
        if link.id is None:
            found.add(
                "chain_entry_missing",
                f"chain position {link.seq} names entry {link.entry_id}, which is gone",
                entry_id=link.entry_id,
            )
        elif _link(previous, link) != link.chain_hash:
            found.add(
                "chain_hash_mismatch",
                f"entry {link.entry_id} (chain position {link.seq}) no longer matches its hash",
                entry_id=link.entry_id,
            )
        # Go on from the stored hash, so one altered entry is reported once.
        previous = link.chain_hash
        expected_seq += 1
    head = chain.read_head(connection)
    if head.seq != sealed or head.hash != previous:
        found.add(
            "chain_head_mismatch",
            f"chain head says position {head.seq}, but the chain ends at {sealed}",
        )
    counts["sealed"] = sealed
    counts["head_seq"] = head.seq
    _unsealed_behind_head(connection, head, found, counts)
    return head


def _link(previous: str, link: Row[Any]) -> str | None:
    """The hash a chain link should have, recomputed from its entry as stored now."""
    if link.encoding == DIGESTED_LINK:
        # Over the digest the entry's columns give now, not the stored one: a
        # changed column breaks the link even if its digest was rewritten too.
        return link_hash(previous, entry_digest(link._mapping))
    if link.encoding == 1:
        return entry_hash(previous, link._mapping)
    return None  # an encoding this version does not know never matches


def _unsealed_behind_head(
    connection: Connection, head: Row[Any], found: _Findings, counts: dict[str, int]
) -> None:
    """Entries the sealer has passed but that are not in the chain were added behind its back."""
    pending = 0
    top = chain.transaction_ordered_top(connection)
    position = chain.sealing_key(head.last_txid, head.last_entry_id, top)
    for entry in chain.unsealed_everywhere(connection):
        if chain.sealing_key(entry.writer_txid, entry.id, top) <= position:
            found.add(
                "unsealed_entry",
                f"entry {entry.id} is older than the sealed chain but not in it",
                entry_id=entry.id,
            )
        else:
            pending += 1
    counts["unsealed_pending"] = pending


def _replay(
    connection: Connection, head: Row[Any], found: _Findings, counts: dict[str, int]
) -> tuple[dict[str, Balances], int, int, dict[int, int], dict[int, _Openings]]:
    """Replay the journal in id order; compare each entry's digest and balances-after."""
    known = {row.account_id for row in accounts.stream(connection)}
    owners = stakes.owners(connection)
    books: dict[str, Balances] = {account_id: Balances() for account_id in known}
    last_time: dict[str, datetime] = {}
    escrow_by_stake: dict[int, int] = {}
    openings: dict[int, _Openings] = {}
    minted = burned = entries = 0
    for entry in journal.stream(connection):
        entries += 1
        about = {"entry_id": entry.id}
        _check_digest(entry, head, found)
        if entry.amount <= 0 or entry.from_account == entry.to_account:
            found.add(
                "malformed_entry",
                f"entry {entry.id} has a non-positive amount or one party",
                **about,
            )
            continue
        owner = owners.get(entry.stake_id) if entry.stake_id is not None else None
        escrow_side = ESCROW_ACCOUNT in (entry.from_account, entry.to_account)
        if escrow_side and owner is None:
            found.add("stake_missing", f"escrow entry {entry.id} names no known stake", **about)
            continue
        try:
            after = apply_entry(books, entry.from_account, entry.to_account, entry.amount, owner)
        except UnknownParty as missing:
            found.add(
                "unknown_account",
                f"entry {entry.id} names {missing.account_id!r}, which has no account",
                account_id=missing.account_id,
                **about,
            )
            continue
        except ValueError as exc:
            found.add("malformed_entry", f"entry {entry.id}: {exc}", **about)
            continue
        if escrow_side and entry.stake_id is not None:
            _note_escrow(entry, escrow_by_stake, openings)
        if entry.from_account == SYSTEM_ACCOUNT:
            minted += entry.amount
        if entry.to_account == SYSTEM_ACCOUNT:
            burned += entry.amount
        stored = (entry.balance_after_from, entry.balance_after_to)
        if after != stored:
            found.add(
                "balance_after_mismatch",
                f"entry {entry.id} records balances after {_pair(stored)}, "
                f"replay gives {_pair(after)}",
                **about,
            )
        for party in (entry.from_account, entry.to_account, owner):
            if party is None or is_reserved(party):
                continue
            if party in last_time and entry.timestamp < last_time[party]:
                found.add(
                    "timestamp_order",
                    f"entry {entry.id} is dated before an earlier entry of {party!r}",
                    account_id=party,
                    **about,
                )
            last_time[party] = max(entry.timestamp, last_time.get(party, entry.timestamp))
            if books[party].balance < 0:
                found.add(
                    "negative_balance",
                    f"replay takes {party!r} below zero at entry {entry.id}",
                    account_id=party,
                    **about,
                )
    counts["entries"] = entries
    return books, minted, burned, escrow_by_stake, openings


def _note_escrow(
    entry: Row[Any], escrow_by_stake: dict[int, int], openings: dict[int, _Openings]
) -> None:
    """What an escrow entry leaves in its stake, and whether it opened the stake."""
    delta = entry.amount if entry.to_account == ESCROW_ACCOUNT else -entry.amount
    escrow_by_stake[entry.stake_id] = escrow_by_stake.get(entry.stake_id, 0) + delta
    if entry.to_account == ESCROW_ACCOUNT:
        opening = openings.setdefault(entry.stake_id, _Openings())
        opening.count += 1
        opening.amount += entry.amount
        opening.owner = entry.from_account


def _check_digest(entry: Row[Any], head: Row[Any], found: _Findings) -> None:
    """An entry's stored columns against the digest written with them."""
    if entry.digest is None:
        # Entries older than digests are proven by the chain once sealed.
        if entry.id > head.legacy_entries_to:
            found.add(
                "entry_digest_missing",
                f"entry {entry.id} was written after digests began but has none",
                entry_id=entry.id,
            )
    elif entry.digest != entry_digest(entry._mapping):
        found.add(
            "entry_digest_mismatch",
            f"entry {entry.id} no longer matches the digest it was written with",
            entry_id=entry.id,
        )


def _verify_accounts(
    connection: Connection, books: dict[str, Balances], found: _Findings, counts: dict[str, int]
) -> None:
    n = 0
    for row in accounts.stream(connection):
        n += 1
        stored = accounts.balances_of(row)
        replayed = books.get(row.account_id, Balances())
        if stored != replayed:
            found.add(
                "account_mismatch",
                f"account {row.account_id!r} stores {_figures(stored)}, "
                f"its entries replay to {_figures(replayed)}",
                account_id=row.account_id,
            )
        if min(stored.balance, stored.total_staked) < 0:
            found.add(
                "negative_balance",
                f"account {row.account_id!r} stores a negative figure",
                account_id=row.account_id,
            )
    counts["accounts"] = n


def _verify_stakes(
    connection: Connection,
    escrow_by_stake: dict[int, int],
    openings: dict[int, _Openings],
    found: _Findings,
    counts: dict[str, int],
) -> None:
    open_totals = stakes.open_totals(connection)
    n = 0
    for account_row in accounts.stream(connection):
        expected = open_totals.get(account_row.account_id, 0)
        if account_row.total_staked != expected:
            found.add(
                "staked_mismatch",
                f"account {account_row.account_id!r} has total_staked "
                f"{format_amount(account_row.total_staked)} "
                f"but open stakes of {format_amount(expected)}",
                account_id=account_row.account_id,
            )
    for row in stakes.stream(connection):
        n += 1
        stake_id, owner = row.id, row.account_id
        if row.digest is None or row.digest != stake_digest(row._mapping):
            found.add(
                "stake_digest_mismatch",
                f"stake {stake_id} no longer matches its digest (its amount, owner, status "
                "or another column was changed)",
                stake_id=stake_id,
                account_id=owner,
            )
        opening = openings.get(stake_id, _Openings())
        if (opening.count, opening.amount, opening.owner) != (1, row.amount, owner):
            found.add(
                "stake_opening_mismatch",
                f"stake {stake_id} of {owner!r} for {format_amount(row.amount)} does not match "
                f"the entry that opened it",
                stake_id=stake_id,
                account_id=owner,
            )
        held = escrow_by_stake.get(stake_id, 0)
        expected = row.amount if row.status == "open" else 0
        if held != expected:
            found.add(
                "stake_mismatch",
                f"stake {stake_id} of {owner!r} is {row.status} with {format_amount(row.amount)}, "
                f"but its entries leave {format_amount(held)} in escrow",
                stake_id=stake_id,
                account_id=owner,
            )
    counts["stakes"] = n


def _verify_checkpoints(connection: Connection, found: _Findings, counts: dict[str, int]) -> None:
    expected_first = 1
    rows = chain.all_checkpoints(connection)
    for checkpoint in rows:
        about = {"checkpoint_id": checkpoint.id}
        if checkpoint.first_seq != expected_first:
            found.add(
                "checkpoint_gap",
                f"checkpoint {checkpoint.id} starts at {checkpoint.first_seq}, "
                f"expected {expected_first}",
                **about,
            )
        hashes = chain.hashes(connection, checkpoint.first_seq, checkpoint.last_seq)
        if len(hashes) != checkpoint.last_seq - checkpoint.first_seq + 1:
            found.add(
                "checkpoint_mismatch",
                f"checkpoint {checkpoint.id} covers positions the chain no longer has",
                **about,
            )
        elif merkle_root(hashes) != checkpoint.merkle_root or hashes[-1] != checkpoint.chain_hash:
            found.add(
                "checkpoint_mismatch",
                f"checkpoint {checkpoint.id} no longer matches the chain it sealed",
                **about,
            )
        expected_first = checkpoint.last_seq + 1
    counts["checkpoints"] = len(rows)


def _verify_anchors(
    connection: Connection,
    head: Row[Any],
    anchors: tuple[Anchor, ...],
    found: _Findings,
    counts: dict[str, int],
) -> None:
    """Each anchor kept elsewhere must be a checkpoint of these books' chain.

    The chain hash at ``last_seq`` commits to every link before it, and every
    link was recomputed above, so a match proves the anchored history is
    the books' prefix; the Merkle root must be the stored checkpoint's there.
    """
    for anchor in anchors:
        about = f"anchor at chain position {anchor.last_seq}"
        if anchor.last_seq > head.seq:
            found.add(
                "anchor_ahead",
                f"{about} is ahead of the books, which end at position {head.seq}: "
                "entries the anchor covers are gone",
            )
            continue
        stored = chain.hashes(connection, anchor.last_seq, anchor.last_seq)
        if stored != [anchor.chain_hash]:
            found.add(
                "anchor_mismatch",
                f"{about}: the books' chain there is not the anchored one (history rewritten)",
            )
            continue
        checkpoint = chain.checkpoint_ending(connection, anchor.last_seq)
        if checkpoint is None or checkpoint.merkle_root != anchor.merkle_root:
            found.add(
                "anchor_mismatch",
                f"{about}: no checkpoint of the books there has the anchored Merkle root",
            )
    counts["anchors"] = len(anchors)


def _pair(pair: tuple[int | None, int | None]) -> str:
    return "(" + ", ".join("-" if v is None else format_amount(v) for v in pair) + ")"


def _figures(b: Balances) -> str:
    return (
        f"balance {format_amount(b.balance)}, earned {format_amount(b.total_earned)}, "
        f"spent {format_amount(b.total_spent)}, staked {format_amount(b.total_staked)}"
    )
