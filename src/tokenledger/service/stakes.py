"""Stakes: tokens locked in a position, then settled, released or expired.

A stake moves tokens from the owner's available balance into the escrow
account (``system:escrow``, a staking contract's address on chain); its
resolution moves them out again, to a winner, to ``system`` (burned) or back
to the owner. Each movement is a journal entry carrying the stake's id, so
the journal alone replays every balance and every ``total_staked``.

Lock order, everywhere: the stake rows (by id), then the account rows (by id).

Expiry is enforced by the ledger's one clock (the database's): once a
stake's ``expires_at`` has passed it can no longer be settled
(``StakeExpired``), whether or not ``expire_stakes`` has run; ``release``
still returns it to its owner, and ``expire_stakes`` does so for every
stake due. No caller can expire a stake early.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row

from tokenledger.domain import inputs
from tokenledger.domain.amounts import AmountInput, format_amount, from_units, to_units
from tokenledger.domain.constants import ESCROW_ACCOUNT, SYSTEM_ACCOUNT, is_reserved
from tokenledger.domain.errors import (
    AccountNotFound,
    IdempotencyConflict,
    InvalidAmount,
    InvalidArgument,
    StakeClosed,
    StakeExpired,
    StakeNotFound,
)
from tokenledger.domain.postings import Draft, Posting
from tokenledger.domain.records import Stake, StakeStatus, stake_from_row
from tokenledger.service.core import LedgerCore, check_same_request, stake_to_find
from tokenledger.storage.repository import accounts, journal, stakes
from tokenledger.storage.transactions import run_read, run_write

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
        """Lock ``amount`` of the owner's available balance in a new open stake.

        A keyed call repeated with the same arguments returns the original
        stake, even after its expiry has passed.

        Raises:
            InvalidArgument: malformed ids or texts; ``expires_at`` not in the
                future (by the ledger's clock).
            InvalidAmount: not a positive amount in range.
            AccountNotFound: no such account.
            InsufficientFunds: the available balance is short.
            IdempotencyConflict: the key was used with other arguments.
        """
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
        key = draft.idempotency_key

        def replay(connection: Connection, rows: Sequence[Row[Any]]) -> Stake:
            check_same_request(key or "", rows, draft)
            row = stakes.get(connection, rows[0].stake_id)
            if row is None or row.expires_at != expiry:
                raise IdempotencyConflict(key or "", "differs in expires_at")
            return stake_from_row(row._mapping)

        def work(connection: Connection) -> Stake:
            if key is not None:
                earlier = journal.by_idempotency_key(connection, key)
                if earlier:
                    return replay(connection, earlier)
            locked = self._lock(connection, {owner})
            locked.require(owner)
            # Checked after the replay: a retry after the expiry gets the original.
            if expiry is not None and expiry <= locked.now:
                raise InvalidArgument(f"expires_at must be in the future, got {expiry.isoformat()}")
            posting = locked.posting()
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
            self._write(connection, posting)
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

        Raises:
            StakeNotFound: no such stake (whatever ``stake_id`` is).
            StakeExpired: the stake is past its expiry (release it instead).
            StakeClosed: the stake is already settled, released or expired.
            InvalidArgument: a reserved receiver other than ``system``; a blank reason.
            InvalidAmount: more than the stake, or not a positive amount.
            AccountNotFound: the receiver has no account.
        """
        checked_id = stake_to_find(stake_id)
        receiver = inputs.account_id(to_account, name="to account")
        if is_reserved(receiver) and receiver != SYSTEM_ACCOUNT:
            raise InvalidArgument(f"a stake cannot be paid to {receiver!r}")
        why = inputs.reason(reason)
        payout = None if amount is None else to_units(amount)

        def work(connection: Connection) -> Stake:
            stake = _lock_open(connection, checked_id)
            owner = stake.account_id
            locked = self._lock(connection, {owner} | ({receiver} - {SYSTEM_ACCOUNT}))
            if stake.expires_at is not None and stake.expires_at <= locked.now:
                raise StakeExpired(checked_id, stake.expires_at.isoformat())
            paid = stake.amount if payout is None else payout
            if paid > stake.amount:
                raise InvalidAmount(
                    f"cannot settle {format_amount(paid)} from stake {checked_id} "
                    f"of {format_amount(stake.amount)}"
                )
            legs = [(receiver, paid), (owner, stake.amount - paid)]
            return self._resolve(connection, stake, locked.posting(), legs, why, "settled")

        return run_write(self._binding, work)

    def release(
        self,
        stake_id: int,
        reason: str,
        fee: AmountInput | None = None,
        fee_account: str | None = None,
    ) -> Stake:
        """Return an open stake to its owner, less an optional ``fee``.

        The fee is burned, or paid to ``fee_account`` when one is named. A
        stake past its expiry can still be released.

        Raises:
            StakeNotFound: no such stake (whatever ``stake_id`` is).
            StakeClosed: the stake is already settled, released or expired.
            InvalidArgument: a fee account without a fee, a reserved fee
                account, a blank reason.
            InvalidAmount: a fee above the stake, or malformed.
            AccountNotFound: the fee account has no account.
        """
        checked_id = stake_to_find(stake_id)
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
            owner = stake.account_id
            locked = self._lock(connection, {owner} | ({fee_to} - {SYSTEM_ACCOUNT}))
            legs = [(owner, stake.amount - fee_units), (fee_to, fee_units)]
            return self._resolve(connection, stake, locked.posting(), legs, why, "released")

        return run_write(self._binding, work)

    def expire_stakes(self, now: datetime | str | None = None) -> int:
        """Return every open stake past its expiry to its owner; how many were expired.

        Expiry is by the ledger's clock; ``now`` can only look earlier (expire
        what was due by then), never later, so no stake is expired early. Safe
        to run from several processes at once: each stake is locked by the
        run that expires it, and others skip it. Stakes are expired in
        batches of ``EXPIRY_BATCH``, each its own transaction: if a later
        batch fails, the earlier ones stay done.

        Raises:
            InvalidArgument: ``now`` is not a datetime or ISO-8601 string.
        """
        before = None if now is None else inputs.moment(now, name="now")

        def work(connection: Connection) -> int:
            due = stakes.lock_expired(connection, EXPIRY_BATCH, before=before)
            if not due:
                return 0
            posting = self._lock(connection, {row.account_id for row in due}).posting()
            for row in due:
                posting.add(
                    _escrow_draft(row, row.account_id, row.amount, EXPIRY_REASON),
                    stake_owner=row.account_id,
                )
            self._write(connection, posting)
            for row in due:
                stakes.close(connection, row, "expired", posting.timestamp)
            return len(due)

        total = 0
        while True:
            expired = run_write(self._binding, work)
            total += expired
            if expired < EXPIRY_BATCH:
                return total

    def get_stake(self, stake_id: int) -> Stake:
        """One stake by id.

        Raises:
            StakeNotFound: no stake has this id (whatever ``stake_id`` is).
        """
        checked_id = stake_to_find(stake_id)
        row = run_read(self._binding, lambda c: stakes.get(c, checked_id))
        if row is None:
            raise StakeNotFound(checked_id)
        return stake_from_row(row._mapping)

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

        Raises:
            AccountNotFound: no such account.
            StakeNotFound: an unknown ``after``.
            InvalidArgument: a malformed ``after`` or ``limit``.
        """
        account_id = inputs.account_id(agent_id)
        cursor = None if after is None else inputs.positive_id(after, name="after")
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

        return [
            stake_from_row(row._mapping) for row in run_read(self._binding, work, snapshot=True)
        ]

    def _resolve(
        self,
        connection: Connection,
        stake: Row[Any],
        posting: Posting,
        legs: list[tuple[str, int]],
        reason: str,
        status: StakeStatus,
    ) -> Stake:
        """Pay a locked open stake out of escrow in ``legs`` (over locked accounts) and close it."""
        for to, amount in legs:
            if amount > 0:
                posting.add(_escrow_draft(stake, to, amount, reason), stake_owner=stake.account_id)
        self._write(connection, posting)
        stakes.close(connection, stake, status, posting.timestamp)
        return replace(stake_from_row(stake._mapping), status=status, closed_at=posting.timestamp)


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
