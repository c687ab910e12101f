"""The ``Ledger`` service: where every token movement starts and ends.

A write runs as one short transaction (``storage.transactions.run_write``):

1. validate the arguments (nothing touches the database before that);
2. if an idempotency key is given, return the entry already written under it;
3. lock the accounts the write touches and read them (the poster's ``lock``);
4. compute the new figures and each entry's balances-after (``Posting``),
   refusing overdrafts and overflow;
5. append the entries and save the account figures (the poster's ``write``); commit.

A transfer, mint or burn does all of that in the poster's ``post_one``: on
PostgreSQL one server call (``storage/posting/postgres.py`` ->
``sql/post_entry_v1.sql``), on SQLite a few statements under the write lock
(``storage/posting/sqlite.py`` -> ``domain/postings.py``).

Stakes, audit, the event feed and analytics are sibling modules whose
operations this class exposes; see ``stakes.py``, ``audit.py``,
``events.py`` and ``analytics.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Connection, Row

from tokenledger.domain import inputs
from tokenledger.domain.amounts import AmountInput, from_units, to_units
from tokenledger.domain.books import Balances
from tokenledger.domain.constants import SYSTEM_ACCOUNT, is_reserved
from tokenledger.domain.errors import (
    AccountExists,
    AccountNotFound,
    EntryNotFound,
    IdempotencyConflict,
    InvalidArgument,
    LedgerError,
)
from tokenledger.domain.postings import Draft, Posting
from tokenledger.domain.records import (
    Account,
    LedgerEntry,
    Transfer,
    account_from_row,
    entry_from_row,
)
from tokenledger.service.analytics import AnalyticsOperations
from tokenledger.service.chain import ChainOperations
from tokenledger.service.core import check_same_request, entry_to_find
from tokenledger.service.events import EventOperations
from tokenledger.service.stakes import StakeOperations
from tokenledger.storage.repository import accounts, journal
from tokenledger.storage.transactions import run_read, run_write

__all__ = ["INITIAL_BALANCE_REASON", "MAX_BATCH", "Ledger"]

T = TypeVar("T")
Item = TypeVar("Item")

INITIAL_BALANCE_REASON = "initial_balance"
MAX_BATCH = 10_000  # transfers per transfer_many call: bounds one transaction's locks and time
_TRANSFER_KEYS = frozenset(f.name for f in fields(Transfer))
_REQUIRED_KEYS = frozenset({"from_id", "to_id", "amount", "reason"})


class Ledger(StakeOperations, EventOperations, AnalyticsOperations, ChainOperations):
    """The double-entry token ledger.

    ``Ledger(engine)`` runs each call in its own transaction.
    ``ledger.using(connection_or_session)`` runs calls inside a transaction
    the caller owns; ``with ledger.transaction() as tx:`` groups several
    calls into one transaction that commits when the block ends.
    """

    # -- accounts ---------------------------------------------------------

    def create_account(self, agent_id: str, initial_balance: AmountInput = 1000) -> Account:
        """Open an account; a positive ``initial_balance`` is minted to it as an entry.

        Raises:
            InvalidArgument: a malformed or reserved id.
            InvalidAmount: a negative or malformed initial balance.
            AccountExists: the id is taken.
        """
        account_id = inputs.user_account_id(agent_id)
        initial = to_units(initial_balance, allow_zero=True)

        def work(connection: Connection) -> Account:
            created_at = accounts.insert(connection, account_id)
            if created_at is None:
                raise AccountExists(account_id)
            if initial:
                posting = Posting({account_id: Balances()}, created_at)
                posting.add(Draft(SYSTEM_ACCOUNT, account_id, initial, INITIAL_BALANCE_REASON))
                self._write(connection, posting)
            amount = from_units(initial)
            zero = from_units(0)
            return Account(account_id, amount, amount, zero, zero, created_at, created_at)

        return run_write(self._binding, work)

    def get_account(self, agent_id: str) -> Account:
        """The account row: its available balance, running totals and timestamps.

        Raises:
            AccountNotFound: no such account.
        """
        account_id = inputs.account_id(agent_id)
        row = run_read(self._binding, lambda c: accounts.read(c, account_id))
        if row is None:
            raise AccountNotFound(account_id)
        return account_from_row(row._mapping)

    def list_accounts(self, *, after: str | None = None, limit: int | None = None) -> list[Account]:
        """Accounts in id order, a page at a time: pass the last id of a page as ``after``.

        Raises:
            InvalidArgument: a malformed ``after`` or ``limit``.
        """
        cursor = None if after is None else inputs.account_id(after, name="after")
        count = inputs.limit(limit)
        rows = run_read(self._binding, lambda c: accounts.page(c, after=cursor, limit=count))
        return [account_from_row(row._mapping) for row in rows]

    def get_balance(self, agent_id: str, as_of: datetime | str | None = None) -> Decimal:
        """The available balance (staked tokens excluded), now or at ``as_of``.

        Raises:
            AccountNotFound: no such account.
            InvalidArgument: ``as_of`` is not a datetime or ISO-8601 string.
        """
        account_id = inputs.account_id(agent_id)
        moment = None if as_of is None else inputs.moment(as_of, name="as_of")

        def work(connection: Connection) -> int:
            row = accounts.read(connection, account_id)
            if row is None:
                raise AccountNotFound(account_id)
            if moment is None:
                return int(row.balance)
            past = journal.balance_as_of(connection, account_id, moment)
            return 0 if past is None else past

        return from_units(run_read(self._binding, work, snapshot=moment is not None))

    def get_total_supply(self) -> Decimal:
        """Minted minus burned: every account's balance plus its staked tokens."""
        return from_units(run_read(self._binding, accounts.total_supply))

    # -- moving tokens ----------------------------------------------------

    def transfer(
        self,
        from_id: str,
        to_id: str,
        amount: AmountInput,
        reason: str,
        reference_type: str | None = None,
        reference_id: str | None = None,
        memo: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> LedgerEntry:
        """Move tokens between two distinct existing accounts.

        Raises:
            InvalidArgument: malformed or reserved ids, the same account twice,
                a blank reason, texts too long.
            InvalidAmount: not a positive amount of at most six decimals in range.
            AccountNotFound: either account does not exist.
            InsufficientFunds: the sender's available balance is short.
            IdempotencyConflict: the key was used with other arguments.
            StorageError: the database failed; with a key, retrying is safe.
        """
        sender, receiver = inputs.distinct_parties(from_id, to_id)
        draft = self._draft(
            sender, receiver, amount, reason, reference_type, reference_id, memo, idempotency_key
        )
        return self._post_one(draft)

    def mint(
        self,
        to_id: str,
        amount: AmountInput,
        reason: str,
        reference_type: str | None = None,
        reference_id: str | None = None,
        memo: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> LedgerEntry:
        """Create new tokens from ``system`` into an account.

        Raises:
            InvalidArgument, InvalidAmount, AccountNotFound, IdempotencyConflict,
            StorageError: as for ``transfer``.
        """
        receiver = inputs.user_account_id(to_id, name="to account")
        draft = self._draft(
            SYSTEM_ACCOUNT,
            receiver,
            amount,
            reason,
            reference_type,
            reference_id,
            memo,
            idempotency_key,
        )
        return self._post_one(draft)

    def burn(
        self,
        from_id: str,
        amount: AmountInput,
        reason: str,
        reference_type: str | None = None,
        reference_id: str | None = None,
        memo: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> LedgerEntry:
        """Destroy tokens from an account's available balance.

        Raises:
            InvalidArgument, InvalidAmount, AccountNotFound, InsufficientFunds,
            IdempotencyConflict, StorageError: as for ``transfer``.
        """
        sender = inputs.user_account_id(from_id, name="from account")
        draft = self._draft(
            sender,
            SYSTEM_ACCOUNT,
            amount,
            reason,
            reference_type,
            reference_id,
            memo,
            idempotency_key,
        )
        return self._post_one(draft)

    def transfer_many(self, transfers: Iterable[Transfer | Mapping[str, Any]]) -> list[LedgerEntry]:
        """Several transfers, all or nothing, in one transaction with one lock pass.

        Each item is a ``Transfer`` or a mapping with the same keys. The
        entries are written in the given order, each checked against the
        balances the ones before it left. If any item is refused, nothing is
        written and the error carries a note naming the item.

        Idempotency keys are per item. A repeated batch whose every item has
        a key already used with the same arguments returns the original
        entries; a batch that mixes used and new keys is refused.

        Raises:
            InvalidArgument: a malformed item, more than ``MAX_BATCH`` items, a
                key twice in the batch.
            InvalidAmount, AccountNotFound, InsufficientFunds: an item is refused
                (the exception's notes name it).
            IdempotencyConflict: used keys with other arguments, or used and
                new keys mixed.
        """
        try:
            items = list(transfers)
        except TypeError:
            raise InvalidArgument(
                f"a batch is an iterable of transfers, not {type(transfers).__name__}"
            ) from None
        if len(items) > MAX_BATCH:
            raise InvalidArgument(f"a batch holds at most {MAX_BATCH} transfers, got {len(items)}")
        drafts = _each_noted(self._transfer_draft, items)
        if not drafts:
            return []
        keys = [d.idempotency_key for d in drafts if d.idempotency_key is not None]
        if len(set(keys)) != len(keys):
            raise InvalidArgument("an idempotency key appears twice in the batch")

        def replay(connection: Connection, _: Sequence[Row[Any]]) -> list[LedgerEntry]:
            earlier = journal.by_idempotency_keys(connection, keys)
            if len(keys) != len(drafts) or set(earlier) != set(keys):
                raise IdempotencyConflict(
                    ", ".join(sorted(earlier)), "a batch mixes used and new idempotency keys"
                )
            for draft in drafts:
                check_same_request(
                    draft.idempotency_key or "", [earlier[draft.idempotency_key or ""]], draft
                )
            return [entry_from_row(earlier[d.idempotency_key or ""]._mapping) for d in drafts]

        def work(connection: Connection) -> list[LedgerEntry]:
            if keys and journal.by_idempotency_keys(connection, keys):
                return replay(connection, ())
            touched: set[str] = set().union(*(d.accounts() for d in drafts))
            locked = self._lock(connection, touched)
            try:  # an unknown account is named before any item's funds are checked
                locked.require(*touched)
            except AccountNotFound as missing:
                first = next(i for i, d in enumerate(drafts) if missing.account_id in d.accounts())
                missing.add_note(f"in transfer {first} of the batch (counting from 0)")
                raise
            posting = locked.posting()
            _each_noted(posting.add, drafts)
            ids = self._write(connection, posting)
            return [
                entry_from_row({**row, "id": i}) for row, i in zip(posting.rows, ids, strict=True)
            ]

        return self._idempotent_write(work, keys[0] if keys else None, replay)

    def _transfer_draft(self, item: Transfer | Mapping[str, Any]) -> Draft:
        fields = _transfer_fields(item)
        sender, receiver = inputs.distinct_parties(fields["from_id"], fields["to_id"])
        return self._draft(
            sender,
            receiver,
            fields["amount"],
            fields["reason"],
            fields.get("reference_type"),
            fields.get("reference_id"),
            fields.get("memo"),
            fields.get("idempotency_key"),
        )

    # -- reading the journal ----------------------------------------------

    def get_statement(
        self,
        agent_id: str,
        since: datetime | str | None = None,
        limit: int | None = None,
    ) -> list[LedgerEntry]:
        """Entries where the account is sender or receiver, newest first.

        Raises:
            AccountNotFound: no such account.
            InvalidArgument: a bad ``since`` or ``limit``.
        """
        return self.list_entries(account=inputs.account_id(agent_id), since=since, limit=limit)

    def list_entries(
        self,
        *,
        account: str | None = None,
        since: datetime | str | None = None,
        before: int | None = None,
        limit: int | None = None,
    ) -> list[LedgerEntry]:
        """Entries newest first: one account's, or the whole journal's.

        ``before`` is a cursor: pass the id of the last entry of a page to
        get the entries after it; a page shorter than ``limit`` is the last.
        An unknown ``before`` raises ``EntryNotFound``.

        One account's pages never skip an entry. Pages of the whole journal
        follow entry ids, which concurrent writers on PostgreSQL may commit
        out of order: an entry committed during the walk with a lower id than
        one already read is not shown (``events`` gives a gap-free order).

        Raises:
            AccountNotFound: no such account.
            EntryNotFound: an unknown ``before``.
            InvalidArgument: a bad ``since``, ``before`` or ``limit``.
        """
        account_id = None if account is None else inputs.account_id(account)
        start = None if since is None else inputs.moment(since, name="since")
        cursor = None if before is None else inputs.positive_id(before, name="before")
        count = inputs.limit(limit)

        def work(connection: Connection) -> Sequence[Row[Any]]:
            if account_id is not None and is_reserved(account_id):
                raise AccountNotFound(account_id)  # system and escrow have entries, no account
            if cursor is not None and journal.get(connection, cursor) is None:
                raise EntryNotFound(cursor)
            if account_id is None:
                return journal.latest(connection, since=start, before_id=cursor, limit=count)
            rows = journal.for_account(
                connection, account_id, since=start, before_id=cursor, limit=count
            )
            # Only an empty page needs to say why: accounts are never deleted,
            # so one that existed for the query still exists now.
            if not rows and accounts.read(connection, account_id) is None:
                raise AccountNotFound(account_id)
            return rows

        return [entry_from_row(row._mapping) for row in run_read(self._binding, work)]

    def get_entry(self, entry_id: int) -> LedgerEntry:
        """One journal entry by id.

        Raises:
            EntryNotFound: no entry has this id (a string or an out-of-range
                integer names none either).
        """
        checked = entry_to_find(entry_id)
        row = run_read(self._binding, lambda c: journal.get(c, checked))
        if row is None:
            raise EntryNotFound(checked)
        return entry_from_row(row._mapping)


def _transfer_fields(item: Transfer | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(item, Transfer):
        return {name: getattr(item, name) for name in _TRANSFER_KEYS}
    if not isinstance(item, Mapping):
        raise InvalidArgument(
            f"a batch item must be a Transfer or a mapping, got {type(item).__name__}"
        )
    unknown = set(item) - _TRANSFER_KEYS
    missing = _REQUIRED_KEYS - set(item)
    if unknown or missing:
        raise InvalidArgument(
            f"a batch item has unknown keys {sorted(map(str, unknown))} or lacks {sorted(missing)}"
        )
    return dict(item)


def _each_noted(step: Callable[[Item], T], items: Sequence[Item]) -> list[T]:
    """``step`` over a batch's items in order; a refusal names the item it concerns."""
    results: list[T] = []
    try:
        for item in items:
            results.append(step(item))
    except LedgerError as exc:
        exc.add_note(f"in transfer {len(results)} of the batch (counting from 0)")
        raise
    return results
