"""Stakes: tokens locked in a position, then settled, released or expired.

A stake moves tokens from the owner's available balance into the escrow
account (``system:escrow``, a staking contract's address on chain); its
resolution moves them out again, to a winner, to ``system`` (burned) or back
to the owner. Each movement is a journal entry carrying the stake's id, so
the journal alone replays every balance and every ``total_staked``.

Lock order, everywhere: the stake rows (by id), then the account rows (by id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row

from tokenledger import inputs
from tokenledger.amounts import AmountInput, format_amount, from_units, to_units
from tokenledger.constants import ESCROW_ACCOUNT, SYSTEM_ACCOUNT, is_reserved
from tokenledger.errors import (
    AccountNotFound,
    IdempotencyConflict,
    InvalidAmount,
    InvalidArgument,
    StakeClosed,
    StakeNotFound,
)
from tokenledger.records import Stake
from tokenledger.repository import accounts, journal, stakes
from tokenledger.service.core import LedgerCore, check_same_request
from tokenledger.service.postings import Draft, now_after, stake_record
from tokenledger.service.unit_of_work import run_read, run_write

__all__ = ["EXPIRY_BATCH", "EXPIRY_REASON", "StakeOperations"]

EXPIRY_REASON = "stake_expired"
EXPIRY_BATCH = 200  # stakes expired per transaction: short locks, bounded work


class StakeOperations(LedgerCore):
    """The stake lifecycle: ``stake`` -> ``settle`` | ``release`` | ``expire_stakes``."""

    def stake(
        self,
        agent_id: str,
        amount: AmountInput,
        reason: str,
        reference_type: str | None = None,
        reference_id: str | None = None,
        memo: str | None = None,
        *,
        expires_at: datetime | str | None = None,
        idempotency_key: str | None = None,
    ) -> Stake:
        """Lock ``amount`` of the owner's available balance in a new open stake."""
        owner = inputs.user_account_id(agent_id)
        draft = self._draft(
            owner,
            ESCROW_ACCOUNT,
            amount,
            reason,
            reference_type,
            reference_id,
            memo,
            idempotency_key,
        )
        expiry = None if expires_at is None else inputs.moment(expires_at, name="expires_at")
        if expiry is not None and expiry <= now_after():
            raise InvalidArgument(f"expires_at must be in the future, got {expiry.isoformat()}")
        key = draft.idempotency_key

        def replay(connection: Connection, rows: Sequence[Row[Any]]) -> Stake:
            check_same_request(key or "", rows, draft)
            row = stakes.get(connection, rows[0].stake_id)
            if row is None or row.expires_at != expiry:
                raise IdempotencyConflict(key or "", "differs in expires_at")
            return stake_record(row)

        def work(connection: Connection) -> Stake:
            if key is not None:
                earlier = journal.by_idempotency_key(connection, key)
                if earlier:
                    return replay(connection, earlier)
            posting = self._open_posting(connection, {owner})
            timestamp = posting.timestamp
            stake_id = stakes.open_stake(
                connection,
                account_id=owner,
                amount=draft.amount,
                reason=draft.reason,
                reference_type=draft.reference_type,
                reference_id=draft.reference_id,
                memo=draft.memo,
                expires_at=expiry,
                created_at=timestamp,
            )
            posting.add(replace(draft, stake_id=stake_id), stake_owner=owner)
            self._write_posting(connection, posting)
            return Stake(
                id=stake_id,
                account_id=owner,
                amount=from_units(draft.amount),
                status="open",
                reason=draft.reason,
                reference_type=draft.reference_type,
                reference_id=draft.reference_id,
                memo=draft.memo,
                expires_at=expiry,
                created_at=timestamp,
                closed_at=None,
            )

        return self._idempotent_write(work, key, replay)

    def settle(
        self,
        stake_id: int,
        to_account: str,
        reason: str,
        amount: AmountInput | None = None,
    ) -> Stake:
        """Pay all or part of an open stake to ``to_account`` (``"system"`` burns it).

        Whatever is not paid returns to the owner; the stake is closed.
        """
        checked_id = inputs.entry_id(stake_id, name="stake id")
        receiver = inputs.account_id(to_account, name="to account")
        if is_reserved(receiver) and receiver != SYSTEM_ACCOUNT:
            raise InvalidArgument(f"a stake cannot be paid to {receiver!r}")
        why = inputs.reason(reason)
        payout = None if amount is None else to_units(amount)

        def work(connection: Connection) -> Stake:
            stake = _lock_open(connection, checked_id)
            paid = stake.amount if payout is None else payout
            if paid > stake.amount:
                raise InvalidAmount(
                    f"cannot settle {format_amount(paid)} from stake {checked_id} "
                    f"of {format_amount(stake.amount)}"
                )
            legs = [(receiver, paid), (stake.account_id, stake.amount - paid)]
            return self._resolve(connection, stake, legs, why, "settled")

        return run_write(self._binding, work)

    def release(
        self,
        stake_id: int,
        reason: str,
        fee: AmountInput | None = None,
        fee_account: str | None = None,
    ) -> Stake:
        """Return an open stake to its owner, less an optional ``fee``.

        The fee is burned, or paid to ``fee_account`` when one is named.
        """
        checked_id = inputs.entry_id(stake_id, name="stake id")
        why = inputs.reason(reason)
        fee_units = 0 if fee is None else to_units(fee, allow_zero=True)
        if fee_account is not None and not fee_units:
            raise InvalidArgument("fee_account was given without a fee")
        fee_to = (
            SYSTEM_ACCOUNT
            if fee_account is None
            else inputs.user_account_id(fee_account, name="fee account")
        )

        def work(connection: Connection) -> Stake:
            stake = _lock_open(connection, checked_id)
            if fee_units > stake.amount:
                raise InvalidAmount(
                    f"fee {format_amount(fee_units)} exceeds stake {checked_id} "
                    f"of {format_amount(stake.amount)}"
                )
            legs = [(stake.account_id, stake.amount - fee_units), (fee_to, fee_units)]
            return self._resolve(connection, stake, legs, why, "released")

        return run_write(self._binding, work)

    def expire_stakes(self, now: datetime | str | None = None) -> int:
        """Return every open stake past its expiry to its owner; how many were expired.

        Safe to run from several processes at once: each stake is locked by
        the run that expires it, and others skip it.
        """
        moment = now_after() if now is None else inputs.moment(now, name="now")

        def work(connection: Connection) -> int:
            due = stakes.lock_expired(connection, moment, EXPIRY_BATCH)
            if not due:
                return 0
            posting = self._open_posting(connection, {row.account_id for row in due})
            for row in due:
                posting.add(
                    _escrow_draft(row, row.account_id, row.amount, EXPIRY_REASON),
                    stake_owner=row.account_id,
                )
            self._write_posting(connection, posting)
            for row in due:
                stakes.close(connection, row.id, "expired", posting.timestamp)
            return len(due)

        total = 0
        while True:
            expired = run_write(self._binding, work)
            total += expired
            if expired < EXPIRY_BATCH:
                return total

    def get_stake(self, stake_id: int) -> Stake:
        checked_id = inputs.entry_id(stake_id, name="stake id")
        row = run_read(self._binding, lambda c: stakes.get(c, checked_id))
        if row is None:
            raise StakeNotFound(checked_id)
        return stake_record(row)

    def get_stakes(
        self,
        agent_id: str,
        open_only: bool = True,
        *,
        after: int | None = None,
        limit: int | None = None,
    ) -> list[Stake]:
        """The account's stakes, oldest first; only open ones unless ``open_only=False``.

        ``after`` is a cursor: pass the id of the last stake of a page to get
        the stakes after it; a page shorter than ``limit`` is the last. An
        unknown ``after`` raises ``StakeNotFound``.
        """
        account_id = inputs.account_id(agent_id)
        cursor = None if after is None else inputs.entry_id(after, name="after")
        count = inputs.limit(limit)

        def work(connection: Connection) -> Sequence[Row[Any]]:
            if cursor is not None and stakes.get(connection, cursor) is None:
                raise StakeNotFound(cursor)
            rows = stakes.for_account(
                connection, account_id, open_only=open_only, after_id=cursor, limit=count
            )
            # Only an empty page needs to say why: accounts are never deleted.
            if not rows and accounts.read(connection, account_id) is None:
                raise AccountNotFound(account_id)
            return rows

        return [stake_record(row) for row in run_read(self._binding, work, snapshot=True)]

    def _resolve(
        self,
        connection: Connection,
        stake: Row[Any],
        legs: list[tuple[str, int]],
        reason: str,
        status: str,
    ) -> Stake:
        """Pay a locked open stake out of escrow in ``legs`` and close it."""
        legs = [(to, amount) for to, amount in legs if amount > 0]
        owner = stake.account_id
        posting = self._open_posting(
            connection, {owner} | {to for to, _ in legs if not is_reserved(to)}
        )
        for to, amount in legs:
            posting.add(_escrow_draft(stake, to, amount, reason), stake_owner=owner)
        self._write_posting(connection, posting)
        stakes.close(connection, stake.id, status, posting.timestamp)
        return replace(stake_record(stake), status=status, closed_at=posting.timestamp)


def _lock_open(connection: Connection, stake_id: int) -> Row[Any]:
    stake = stakes.lock(connection, [stake_id]).get(stake_id)
    if stake is None:
        raise StakeNotFound(stake_id)
    if stake.status != "open":
        raise StakeClosed(stake_id, stake.status)
    return stake


def _escrow_draft(stake: Row[Any], to: str, amount: int, reason: str) -> Draft:
    return Draft(
        from_account=ESCROW_ACCOUNT,
        to_account=to,
        amount=amount,
        reason=reason,
        reference_type=stake.reference_type,
        reference_id=stake.reference_id,
        stake_id=stake.id,
    )
