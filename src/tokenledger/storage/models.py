"""The schema, as SQLAlchemy 2.0 declarative models.

Alembic revisions (``tokenledger/alembic``) own the schema in every database;
these models describe the head revision and a test proves the two agree.

Money columns hold integers of base units (1 token = 1,000,000 units), never
``Numeric``: SQLAlchemy maps ``Numeric`` to a binary float on SQLite.
Timestamps are stored in UTC (``timestamptz`` on PostgreSQL, fixed-width ISO
text on SQLite, which sorts chronologically).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.types import TypeDecorator

from tokenledger.domain.constants import MAX_ID_LENGTH

__all__ = [
    "NAMING_CONVENTION",
    "AccountRow",
    "Base",
    "ChainHeadRow",
    "ChainRow",
    "CheckpointRow",
    "ConsumerRow",
    "DeploymentRow",
    "EntryRow",
    "ReceiptRow",
    "StakeRow",
    "UTCDateTime",
    "WriterTxidDefault",
    "accounts_table",
    "chain_head_table",
    "chain_table",
    "checkpoints_table",
    "consumers_table",
    "deployments_table",
    "journal_table",
    "receipts_table",
    "stakes_table",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQL for "this party is reserved (system or system:...)", used in CHECKs.
# substr() rather than LIKE: SQLite's LIKE ignores ASCII case.
RESERVED_SQL = "({col} = 'system' OR substr({col}, 1, 7) = 'system:')"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the database layer")
        value = value.astimezone(UTC)
        # SQLite has no time zone type: store the UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        if not isinstance(moment, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def _partial_index(name: str, column: str, *more: str, unique: bool = False) -> Index:
    """An index over the rows where ``column`` is not NULL."""
    where = text(f"{column} IS NOT NULL")
    return Index(name, column, *more, unique=unique, postgresql_where=where, sqlite_where=where)


class WriterTxidDefault(ColumnElement[int]):
    """``writer_txid``'s server default, as revision 0003 sets it on each backend.

    PostgreSQL: ``txid_current()``, the writing transaction (the sealer's
    commit horizon needs it). SQLite: ``0``, its writers are serial.
    """

    type = BigInteger()
    inherit_cache = True


@compiles(WriterTxidDefault)
def _writer_txid_default(element: WriterTxidDefault, compiler: SQLCompiler, **kw: Any) -> str:
    return "0"


@compiles(WriterTxidDefault, "postgresql")
def _writer_txid_default_pg(element: WriterTxidDefault, compiler: SQLCompiler, **kw: Any) -> str:
    return "txid_current()"


# An autoincrementing 64-bit key; on SQLite only INTEGER aliases the rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AccountRow(Base):
    """``token_accounts``: one row per agent, with running balances."""

    __tablename__ = "token_accounts"

    account_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    total_earned: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    total_spent: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    total_staked: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_nonnegative"),
        CheckConstraint("total_earned >= 0", name="total_earned_nonnegative"),
        CheckConstraint("total_spent >= 0", name="total_spent_nonnegative"),
        CheckConstraint("total_staked >= 0", name="total_staked_nonnegative"),
        CheckConstraint(f"NOT {RESERVED_SQL.format(col='account_id')}", name="not_reserved"),
        CheckConstraint("account_id <> ''", name="id_not_empty"),
    )


class EntryRow(Base):
    """``token_ledger``: the append-only journal, one row per token movement."""

    __tablename__ = "token_ledger"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    from_account: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), nullable=False)
    to_account: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), nullable=False)
    reference_type: Mapped[str | None] = mapped_column(String(MAX_ID_LENGTH))
    reference_id: Mapped[str | None] = mapped_column(String(MAX_ID_LENGTH))
    memo: Mapped[str | None] = mapped_column(Text)
    balance_after_from: Mapped[int | None] = mapped_column(BigInteger)
    balance_after_to: Mapped[int | None] = mapped_column(BigInteger)
    idempotency_key: Mapped[str | None] = mapped_column(String(MAX_ID_LENGTH))
    # Added by revision 0002 (stakes): the stake this entry opens or resolves.
    stake_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("token_stakes.id"))
    # Added by revision 0003 (audit): the entry this one compensates.
    reverses_entry_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("token_ledger.id"))
    # Added by revision 0003: the writing transaction's id on PostgreSQL
    # (txid_current()); 0 on SQLite, whose writers are serial, and for rows
    # written before 0003. The chain sealer uses it to find a commit horizon.
    writer_txid: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=WriterTxidDefault()
    )
    # Added by revision 0005: SHA-256 of every stored column above (encoding
    # version 2), written with the entry; NULL for entries older than 0005.
    digest: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("idx_ledger_from", "from_account", "timestamp", "id"),
        Index("idx_ledger_to", "to_account", "timestamp", "id"),
        Index("idx_ledger_time", "timestamp"),
        Index("idx_ledger_reason", "reason"),
        # Sparse columns get partial indexes: most entries have no key, stake
        # or reversal, and an index entry per NULL would only slow writes.
        _partial_index("uq_token_ledger_idempotency_key", "idempotency_key", unique=True),
        _partial_index("ix_token_ledger_stake_id", "stake_id"),
        _partial_index("uq_token_ledger_reverses_entry_id", "reverses_entry_id", unique=True),
        Index(
            "ix_token_ledger_writer_txid",
            "writer_txid",
            "id",
            postgresql_where=text("writer_txid > 0"),
            sqlite_where=text("writer_txid > 0"),
        ),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("from_account <> to_account", name="distinct_parties"),
        CheckConstraint("balance_after_from >= 0", name="balance_after_from_nonnegative"),
        CheckConstraint("balance_after_to >= 0", name="balance_after_to_nonnegative"),
        # A balance-after is recorded exactly for the parties that have a balance.
        CheckConstraint(
            f"(balance_after_from IS NULL) = {RESERVED_SQL.format(col='from_account')}",
            name="from_balance_iff_account",
        ),
        CheckConstraint(
            f"(balance_after_to IS NULL) = {RESERVED_SQL.format(col='to_account')}",
            name="to_balance_iff_account",
        ),
    )


class StakeRow(Base):
    """``token_stakes``: tokens locked in a position (revision 0002)."""

    __tablename__ = "token_stakes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(
        String(MAX_ID_LENGTH), ForeignKey("token_accounts.account_id"), nullable=False
    )
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), nullable=False)
    reference_type: Mapped[str | None] = mapped_column(String(MAX_ID_LENGTH))
    reference_id: Mapped[str | None] = mapped_column(String(MAX_ID_LENGTH))
    memo: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Added by revision 0005: SHA-256 of the row's other columns, rewritten when it closes.
    digest: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_token_stakes_account_id_status", "account_id", "status"),
        Index(
            "ix_token_stakes_open_expiry",
            "expires_at",
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "status IN ('open', 'settled', 'released', 'expired')", name="status_known"
        ),
        CheckConstraint("(status = 'open') = (closed_at IS NULL)", name="closed_iff_not_open"),
    )


class ChainRow(Base):
    """``token_chain``: the sealed hash chain, one row per entry (revision 0003).

    ``hash`` = SHA-256 over the previous row's hash and the entry's canonical
    encoding; ``seq`` is the entry's position in the one global chain.
    """

    __tablename__ = "token_chain"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("token_ledger.id"), nullable=False, unique=True
    )
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    # Added by revision 0005: 1, a link over the entry's canonical encoding
    # version 1; 2, a link over its digest.
    encoding: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default=text("1"))


class ChainHeadRow(Base):
    """``token_chain_head``: where the sealer stopped (one row, revision 0003)."""

    __tablename__ = "token_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    # The last sealed entry in sealing order, (writer_txid, id): every entry
    # at or before it in that order is in the chain.
    last_txid: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_entry_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # Added by revision 0005: the last entry written before digests existed.
    legacy_entries_to: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=text("0")
    )

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class CheckpointRow(Base):
    """``token_checkpoints``: Merkle roots over ranges of the chain (revision 0003)."""

    __tablename__ = "token_checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    first_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    merkle_root: Mapped[str] = mapped_column(String(64), nullable=False)
    chain_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (CheckConstraint("first_seq <= last_seq", name="range_ordered"),)


class ConsumerRow(Base):
    """``token_consumers``: where each named consumer of the event feed is (revision 0006)."""

    __tablename__ = "token_consumers"

    name: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), primary_key=True)
    # The chain seq of the last event the consumer committed (0: none yet).
    position: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        CheckConstraint("position >= 0", name="position_nonnegative"),
        CheckConstraint("name <> ''", name="name_not_empty"),
    )


class DeploymentRow(Base):
    """``token_chain_deployments``: the token contracts deployed for this ledger (revision 0008).

    The newest row is the contract ``chain push`` and ``reconcile`` use.
    """

    __tablename__ = "token_chain_deployments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    address: Mapped[str] = mapped_column(String(42), nullable=False)
    operator: Mapped[str] = mapped_column(String(42), nullable=False)
    tx_hash: Mapped[str] = mapped_column(String(66), nullable=False)
    block_number: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (UniqueConstraint("chain_id", "address"),)


class ReceiptRow(Base):
    """``token_chain_receipts``: where each sealed entry landed on chain (revision 0008).

    A cache of the chain: the contract's ``last_seq`` and its ``Entry`` logs
    are the truth, and ``chain push`` re-derives missing rows from them.
    ``log_index`` is that of the entry's ``Transfer`` log.
    """

    __tablename__ = "token_chain_receipts"

    deployment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("token_chain_deployments.id"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("token_ledger.id"), nullable=False)
    tx_hash: Mapped[str] = mapped_column(String(66), nullable=False)
    block_number: Mapped[int] = mapped_column(BigInteger, nullable=False)
    log_index: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[int] = mapped_column(SmallInteger, nullable=False)

    __table_args__ = (Index("ix_token_chain_receipts_entry_id", "entry_id"),)


# The Core tables behind the models, typed as ``Table`` for the repository.
accounts_table = cast(Table, AccountRow.__table__)
journal_table = cast(Table, EntryRow.__table__)
stakes_table = cast(Table, StakeRow.__table__)
chain_table = cast(Table, ChainRow.__table__)
chain_head_table = cast(Table, ChainHeadRow.__table__)
checkpoints_table = cast(Table, CheckpointRow.__table__)
consumers_table = cast(Table, ConsumerRow.__table__)
deployments_table = cast(Table, DeploymentRow.__table__)
receipts_table = cast(Table, ReceiptRow.__table__)
