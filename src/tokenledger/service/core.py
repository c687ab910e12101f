"""What every part of the ``Ledger`` shares: its binding and the write path.

``LedgerCore`` holds how the ledger reaches the database (a binding from
``storage.transactions``: an engine, or a caller's connection or session)
and the steps every write goes through. The service knows no dialect: it
validates, builds a ``Draft`` or a ``Posting``, and hands it to the binding's
poster (``storage.posting``), the one adapter per dialect that owns the SQL.

``Ledger`` (ledger.py) and its sibling operation sets (stakes.py, audit.py,
analytics.py, events.py) build on it through the protected methods below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Engine, Row
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from tokenledger.domain import inputs
from tokenledger.domain.amounts import AmountInput, to_units
from tokenledger.domain.errors import (
    ConcurrencyConflict,
    EntryNotFound,
    IdempotencyConflict,
    InvalidArgument,
    StakeNotFound,
    StorageError,
)
from tokenledger.domain.postings import Draft, Locked, Posting
from tokenledger.domain.records import LedgerEntry, entry_from_row
from tokenledger.schema.migrations import ensure_embedded_schema
from tokenledger.storage.engines import create_engine
from tokenledger.storage.group_commit import GroupCommitter
from tokenledger.storage.posting import Outcome
from tokenledger.storage.replication import REPLICA_WAIT, ReplicatedBinding
from tokenledger.storage.repository import journal
from tokenledger.storage.transactions import (
    COMMIT_DEADLINE,
    Binding,
    EngineBinding,
    IdempotencyKeyTaken,
    binding_for,
    owned_transaction,
    run_read,
    run_write,
)

__all__ = ["LedgerCore", "check_same_request", "entry_to_find", "stake_to_find"]

T = TypeVar("T")
R = TypeVar("R")

# What a repeated keyed call must repeat for the ledger to answer with the first entry.
_IDEMPOTENT_FIELDS = (
    "from_account",
    "to_account",
    "amount",
    "reason",
    "reference_type",
    "reference_id",
    "memo",
)

Replay = Callable[[Connection, Sequence[Row[Any]]], T]


class LedgerCore:
    """The ledger's binding and shared write path; see ``Ledger``.

    ``Ledger(engine)`` runs each call in its own transaction.
    ``ledger.using(connection_or_session)`` runs calls inside a transaction
    the caller owns; ``with ledger.transaction() as tx:`` groups several
    calls into one transaction that commits when the block ends.
    """

    def __init__(
        self,
        bind: Engine | Connection | Session,
        read_engine: Engine | None = None,
        *,
        group_commit: bool = False,
        commit_deadline: float | None = COMMIT_DEADLINE,
        require_synchronous: bool = False,
        failover_wait: float = 0.0,
        replica_wait: float = REPLICA_WAIT,
    ) -> None:
        """Bind a ledger to an engine (it runs its own transactions) or a caller's.

        With ``group_commit``, concurrent ``transfer``, ``mint`` and ``burn``
        calls from this ledger's threads share one server call and one
        commit, each still accepted or refused on its own (see
        docs/performance.md for when it pays, and why it is off by default).
        It needs an engine: inside a caller's transaction there is nothing
        to share.

        Replicas and failover (docs/replication.md), all with an engine only:

        * ``read_engine``: a replica (or the host's read-only pool) that
          serves reads; a read after a write through this ledger waits, for
          at most ``replica_wait`` seconds, until the replica has replayed
          it, and reads from the primary past that.
        * ``commit_deadline``: seconds a commit may take (a synchronous
          standby gone missing makes it wait forever); past it the ledger
          ends the commit and raises ``OutcomeUnknown``. ``None`` waits as
          long as the server does.
        * ``require_synchronous``: refuse writes (``ReplicationUnavailable``)
          while no synchronous standby is attached.
        * ``failover_wait``: seconds a write whose primary went away keeps
          trying (with a multi-host URL and ``target_session_attrs=read-write``,
          until the new primary answers); a keyed write whose commit was cut
          is resolved there by its key: the first entry, or written once.

        Raises:
            InvalidArgument: a connection or session in autocommit, or ``bind``
                is not an Engine, Connection or Session; ``group_commit`` or a
                ``read_engine`` with a connection or session; a read engine of
                another dialect; a negative wait or deadline.
        """
        for name, value in (("failover_wait", failover_wait), ("commit_deadline", commit_deadline)):
            if value is not None and not value >= 0:
                raise InvalidArgument(f"{name} must be 0 or more seconds, not {value!r}")
        if require_synchronous and isinstance(bind, Engine) and bind.dialect.name == "sqlite":
            raise InvalidArgument("SQLite has no synchronous standby to require")
        if isinstance(bind, Engine) and read_engine is not None:
            self._binding: Binding = ReplicatedBinding(
                bind,
                read_engine,
                replica_wait=replica_wait,
                commit_deadline=commit_deadline,
                require_synchronous=require_synchronous,
                failover_wait=failover_wait,
            )
        elif isinstance(bind, Engine):
            self._binding = EngineBinding(
                bind,
                commit_deadline=commit_deadline,
                require_synchronous=require_synchronous,
                failover_wait=failover_wait,
            )
        elif read_engine is not None:
            raise InvalidArgument("a read engine needs the ledger on an Engine, not a caller's")
        else:
            self._binding = binding_for(bind)
        self._engine: Engine | None = bind if isinstance(bind, Engine) else None
        self._owns_engine = False
        self._group: GroupCommitter | None = None
        if group_commit:
            self._group = self._group_committer()

    @classmethod
    def from_url(cls, url: str, *, group_commit: bool = False, **engine_options: Any) -> Self:
        """A ledger on a new engine for ``url``, which it owns (``dispose`` closes it).

        Nothing is opened here. An embedded SQLite database is created and
        migrated at the first call, once, however many processes open it at
        once (a failure is a ``StorageError`` of that call, and the next call
        tries again); a PostgreSQL database is never migrated implicitly (the
        deploy runs ``tokenledger db upgrade``). ``group_commit``: as for the
        constructor. ``engine_options`` go to ``tokenledger.storage.create_engine``.

        Raises:
            InvalidArgument: ``url`` is not a database URL tokenledger can open.
            StorageError: its driver is not installed.
        """
        try:
            engine = create_engine(url, **engine_options)
        except ArgumentError as exc:
            raise InvalidArgument(f"not a database URL tokenledger can open: {exc}") from exc
        except ImportError as exc:
            raise StorageError(f"the database driver is not installed: {exc}") from exc
        ledger = cls(engine)
        ledger._binding = EngineBinding(engine, first_use=lambda: ensure_embedded_schema(engine))
        ledger._owns_engine = True
        if group_commit:
            ledger._group = ledger._group_committer()
        return ledger

    @property
    def engine(self) -> Engine | None:
        """The engine this ledger opens transactions on (``None`` when bound to a caller's)."""
        return self._engine

    def using(self, bind: Connection | Session) -> Self:
        """This ledger working inside the caller's transaction, which it never commits.

        Raises:
            InvalidArgument: the connection or session is in autocommit, so
                there is no transaction to share; or ``bind`` is not a
                Connection or Session.
        """
        if not isinstance(bind, Connection | Session):
            raise InvalidArgument(f"using() takes a Connection or a Session, not {bind!r}")
        return type(self)(bind)

    @contextmanager
    def transaction(self) -> Iterator[Self]:
        """Several calls, one transaction: all commit at the end of the block, or none.

        Deadlocks are not retried inside the block (the block's own code would
        have to run again); they surface as ``ConcurrencyConflict``.
        """
        if not isinstance(self._binding, EngineBinding):
            yield self  # already inside the caller's transaction
            return
        with owned_transaction(self._binding) as connection:
            yield type(self)(connection)

    def dispose(self) -> None:
        """Close the pooled connections of an engine this ledger created (``from_url``).

        An engine the host passed in is the host's: it is never disposed here.
        """
        if self._owns_engine and self._engine is not None:
            self._engine.dispose()

    # -- internals shared with the sibling modules --------------------------

    def _draft(
        self,
        sender: str,
        receiver: str,
        amount: AmountInput,
        reason: str,
        reference_type: str | None,
        reference_id: str | None,
        memo: str | None,
        idempotency_key: str | None,
    ) -> Draft:
        """A validated entry between two parties already validated by the caller."""
        return Draft(
            from_account=sender,
            to_account=receiver,
            amount=to_units(amount),
            reason=inputs.reason(reason),
            reference_type=inputs.optional_text(reference_type, name="reference_type"),
            reference_id=inputs.optional_text(reference_id, name="reference_id"),
            memo=inputs.memo(memo),
            idempotency_key=inputs.optional_text(idempotency_key, name="idempotency_key"),
        )

    def _post_one(self, draft: Draft) -> LedgerEntry:
        """Write a one-entry operation (transfer, mint, burn): grouped, or on its own."""
        key = draft.idempotency_key
        group = self._group

        def replay(_: Connection, rows: Sequence[Row[Any]]) -> LedgerEntry:
            check_same_request(key or "", rows, draft)
            return entry_from_row(rows[0]._mapping)

        if group is not None:
            return self._or_replay(lambda: group.post(draft), key, replay)
        return self._or_replay(lambda: self._post_alone(draft), key, replay)

    def _post_alone(self, draft: Draft) -> LedgerEntry:
        """One draft in its own transaction (or statement); raises ``IdempotencyKeyTaken``."""
        poster = self._binding.poster
        return run_write(
            self._binding,
            lambda connection: poster.post_one(connection, draft),
            idempotent=draft.idempotency_key is not None,
            scope=poster.one_entry_scope,
        )

    def _post_group(self, drafts: Sequence[Draft]) -> list[Outcome]:
        """Several drafts in one transaction, each accepted or refused on its own."""
        poster = self._binding.poster
        return run_write(
            self._binding,
            lambda connection: poster.post_many(connection, drafts),
            scope=poster.one_entry_scope,
        )

    def _group_committer(self) -> GroupCommitter:
        if not isinstance(self._binding, EngineBinding):
            raise InvalidArgument(
                "group_commit needs an Engine: inside a caller's transaction there is "
                "nothing to share"
            )
        return GroupCommitter(self._post_group, self._post_alone)

    def _idempotent_write(
        self, work: Callable[[Connection], R], key: str | None, replay: Replay[T]
    ) -> R | T:
        """Run ``work``; if an entry under ``key`` is already committed, answer as it did."""
        return self._or_replay(
            lambda: run_write(self._binding, work, idempotent=key is not None), key, replay
        )

    def _or_replay(self, write: Callable[[], R], key: str | None, replay: Replay[T]) -> R | T:
        """``write()``; if it finds ``key`` already used, the answer ``replay`` gives."""
        try:
            return write()
        except IdempotencyKeyTaken:
            if key is None:  # only keyed writes can collide on a key
                raise
            # On the primary: the entry that won may not have reached a replica yet.
            answer = run_read(
                self._binding,
                lambda c: replay(c, journal.by_idempotency_key(c, key)),
                primary=True,
            )
            if isinstance(self._binding, EngineBinding):
                # The first attempt may have been ended in doubt before its
                # standby confirmed it: never answer success for an entry that
                # synchronous replication has not confirmed.
                self._binding.confirm_replicated()
            return answer

    def _lock(self, connection: Connection, account_ids: set[str]) -> Locked:
        """Lock the accounts an operation touches; their figures and the ledger's clock."""
        return self._binding.poster.lock(connection, account_ids)

    def _write(self, connection: Connection, posting: Posting) -> list[int]:
        """Append a posting's entries and save its figures; the entries' ids, in order."""
        return self._binding.poster.write(connection, posting)


def check_same_request(key: str, earlier: Sequence[Row[Any]], draft: Draft) -> None:
    """Raise ``IdempotencyConflict`` unless ``draft`` repeats what ``earlier`` recorded.

    Raises:
        IdempotencyConflict: the key was used with other arguments.
        ConcurrencyConflict: the entry under the key is committed but this
            transaction cannot see it (a caller's REPEATABLE READ or
            SERIALIZABLE snapshot older than that commit): retry the
            transaction.
    """
    if not earlier:
        raise ConcurrencyConflict(
            f"an entry under idempotency key {key!r} was committed after this transaction's "
            "snapshot was taken; retry the transaction"
        )
    first = earlier[0]._mapping
    differing = [name for name in _IDEMPOTENT_FIELDS if first[name] != getattr(draft, name)]
    if differing:
        raise IdempotencyConflict(key, "differs in " + ", ".join(differing))


def entry_to_find(value: object) -> int:
    """An entry id to look up; a value that can name no entry is not found, not malformed.

    Raises:
        EntryNotFound: ``value`` is not a positive integer within BIGINT.
    """
    checked = inputs.row_id(value)
    if checked is None:
        raise EntryNotFound(value)
    return checked


def stake_to_find(value: object) -> int:
    """A stake id to look up; a value that can name no stake is not found, not malformed.

    Raises:
        StakeNotFound: ``value`` is not a positive integer within BIGINT.
    """
    checked = inputs.row_id(value)
    if checked is None:
        raise StakeNotFound(value)
    return checked
