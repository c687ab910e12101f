"""Copying a whole ledger between databases, row for row (``tokenledger db copy``).

Generic over the ledger's tables: every table of the models' metadata that
the source has, in foreign-key order (parents first), with the columns the
source has, so a table a later revision adds is copied without a change
here. Rows keep their ids and every stored byte that the digests and the
chain cover; the target's sequences are moved past the copied ids.

* **Consistent**: the source is read in one snapshot (REPEATABLE READ on
  PostgreSQL, one read transaction on SQLite), page by page in primary-key
  order (keyset paging), so memory stays bounded by the page size.
* **Exact**: the target's triggers are switched off for each page's own
  transaction (PostgreSQL: ``ALTER TABLE ... DISABLE TRIGGER USER``, switched
  back on before that transaction commits, so a committed target never has
  them off). Otherwise the digest trigger would fill the NULL digest of an
  entry older than revision 0005, and the row would no longer be the
  source's.
* **Resumable**: each page commits on its own. A copy that died leaves the
  first tables complete, one table holding a prefix of the source's rows,
  and the rest empty; the chain head (the one row the migrations seed) is
  written last, so a target whose head is still at genesis is unfinished.
  :func:`plan_copy` recognises exactly that shape, checking the last row of
  each partial table against the source's row at the same position, and
  ``resume=True`` continues from there. Any other non-empty target is
  refused and left untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, inspect, select, text, tuple_

from tokenledger.domain.errors import InvalidArgument
from tokenledger.schema import migrations
from tokenledger.storage.models import Base, chain_head_table

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "CopyPlan",
    "CopyRefused",
    "TableState",
    "check_copy",
    "copy_ledger",
    "plan_copy",
]

DEFAULT_PAGE_SIZE = 5_000

# Tables whose rows the migrations themselves create (the chain head's one
# row): replaced, not appended, and written last as the copy's end mark.
_SEEDED = (chain_head_table.name,)
# Tables whose rows change after they are written (balances, a stake's status,
# a consumer's position, receipts redone after a reorg): a resumed copy
# compares every row the target already holds with the source's.
_CHANGING = frozenset(
    {
        "token_accounts",
        "token_stakes",
        "token_consumers",
        "token_chain_deployments",
        "token_chain_receipts",
    }
)
_COMPARE_PAGE = 5_000

Progress = Callable[[str, int, int], None]  # table, rows copied so far, rows in all


class CopyRefused(InvalidArgument):
    """The target cannot receive this copy (it holds other rows, or another revision)."""


@dataclass(frozen=True, slots=True)
class TableState:
    """One table's rows in the source, and how many the target already holds."""

    name: str
    source_rows: int
    target_rows: int


@dataclass(frozen=True, slots=True)
class CopyPlan:
    """What a copy will do: the revision and, per table, what is already there."""

    revision: str
    tables: tuple[TableState, ...]
    finished: bool  # the chain head is copied too: nothing is left to write
    source_head: tuple[int, str] | None = None  # (seq, hash) of the source's chain
    resumed: bool = field(default=False)

    @property
    def rows_to_copy(self) -> int:
        return sum(t.source_rows - t.target_rows for t in self.tables)

    @property
    def rows_in_target(self) -> int:
        return sum(t.target_rows for t in self.tables)


def _tables(connection: Connection) -> list[tuple[Table, list[str]]]:
    """The models' tables the source has, parents first, with the source's column names."""
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    tables = []
    for table in Base.metadata.sorted_tables:
        if table.name not in present:
            continue
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        tables.append((table, [c.name for c in table.columns if c.name in columns]))
    return tables


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A source connection reading one consistent state of the whole ledger."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")
            connection.execute(text("SELECT 1"))  # the snapshot starts here
        else:
            connection.exec_driver_sql("BEGIN")  # a read transaction: one WAL snapshot
            connection.exec_driver_sql("SELECT count(*) FROM sqlite_master")
        try:
            yield connection
        finally:
            connection.rollback()


def _count(connection: Connection, table: Table) -> int:
    return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _pk(table: Table) -> list[Any]:
    return list(table.primary_key.columns)


def _row_at(connection: Connection, table: Table, columns: list[str], position: int) -> Any:
    """The source's ``position``-th row (1-based) in primary-key order."""
    statement = (
        select(*(table.c[c] for c in columns)).order_by(*_pk(table)).offset(position - 1).limit(1)
    )
    return connection.execute(statement).one()


def _same_row_in(connection: Connection, table: Table, columns: list[str], row: Any) -> bool:
    mapping = row._mapping
    condition = [column == mapping[column.name] for column in _pk(table)]
    statement = select(*(table.c[c] for c in columns)).where(*condition)
    found = connection.execute(statement).one_or_none()
    return found is not None and tuple(found) == tuple(row)


def _same_rows_in(
    connection: Connection, source: Connection, table: Table, columns: list[str], held: int
) -> bool:
    """Whether the target's ``held`` rows equal the source's first ``held``, row for row."""
    statement = select(*(table.c[c] for c in columns)).order_by(*_pk(table)).limit(held)
    theirs = source.execute(statement)
    ours = connection.execute(statement)
    while True:
        mine, wanted = ours.fetchmany(_COMPARE_PAGE), theirs.fetchmany(_COMPARE_PAGE)
        if [tuple(r) for r in mine] != [tuple(r) for r in wanted]:
            return False
        if not mine:
            return True


def _head_of(connection: Connection) -> tuple[int, str] | None:
    """The chain head's (seq, hash); ``None`` before revision 0003 made the chain."""
    if not inspect(connection).has_table(chain_head_table.name):
        return None
    row = connection.execute(
        select(chain_head_table.c.seq, chain_head_table.c.hash).where(chain_head_table.c.id == 1)
    ).one_or_none()
    return None if row is None else (int(row.seq), str(row.hash))


def plan_copy(source: Connection, target: Engine, *, resume: bool = False) -> CopyPlan:
    """Decide what a copy from ``source`` (a snapshot) to ``target`` has to do.

    An unmigrated target is migrated to the source's revision here.

    Raises:
        CopyRefused: the source has no ledger schema; the target is at
            another revision; the target holds rows that are not a prefix of
            this source's; or it holds an interrupted copy and ``resume`` is
            false. The target is not changed in any of these cases.
    """
    revision = migrations.current(source)
    if revision is None:
        raise CopyRefused("the source database has no tokenledger schema")
    target_revision = migrations.current(target)
    if target_revision not in {None, revision}:
        raise CopyRefused(
            f"the target is at revision {target_revision} and the source at {revision}: "
            "a copy needs an empty target (unmigrated, or at the source's revision)"
        )
    tables = _tables(source)
    _require_sealable_on(source, target)
    if target_revision is None:
        with target.connect() as probe:
            existing = set(inspect(probe).get_table_names()) & migrations.LEDGER_TABLES
        if existing:
            raise CopyRefused(
                f"the target has ledger tables ({', '.join(sorted(existing))}) but no "
                "tokenledger revision: refusing to touch it"
            )
        migrations.upgrade(target, revision)
    states: list[TableState] = []
    with target.connect() as connection:
        for table, columns in tables:
            if table.name in _SEEDED:
                continue
            held, there = _count(connection, table), _count(source, table)
            if held and (
                held > there
                or not _same_row_in(
                    connection, table, columns, _row_at(source, table, columns, held)
                )
                # Rows of these change in place: every one held must still be the source's.
                or (
                    table.name in _CHANGING
                    and not _same_rows_in(connection, source, table, columns, held)
                )
            ):
                raise CopyRefused(
                    f"the target already holds rows of {table.name} that are not this "
                    "source's: a copy needs a target with no ledger rows"
                )
            states.append(TableState(table.name, there, held))
        head = _head_of(connection)
    source_head = _head_of(source)
    finished = head is not None and head != (0, "0" * 64) and head == source_head
    started = any(s.target_rows for s in states) or finished
    if head not in {None, (0, "0" * 64), source_head}:
        raise CopyRefused("the target's chain head is not this source's: refusing to touch it")
    _require_prefix_shape(states)
    if started and not resume:
        done = sum(s.target_rows for s in states)
        raise CopyRefused(
            f"the target is not empty: it holds {done} rows of an earlier copy of this source "
            f"({'complete' if finished else 'interrupted'}); run again with --resume to "
            "finish it, or empty the target"
        )
    return CopyPlan(revision, tuple(states), finished, source_head, resumed=started)


def _require_sealable_on(source: Connection, target: Engine) -> None:
    """PostgreSQL target: its new entries must come after the copied ones in sealing order.

    The sealer orders PostgreSQL-written entries by their writers' txids
    (``repository.chain.sealing_key``). Entries copied from another
    PostgreSQL server keep that server's txids (the digests cover them); if
    the target server's txids are not past them yet, what the host writes
    there next would sort before the copied chain and could never be sealed.
    """
    if target.dialect.name != "postgresql":
        return
    journal = Base.metadata.tables["token_ledger"]
    if "writer_txid" not in {c["name"] for c in inspect(source).get_columns(journal.name)}:
        return
    copied = source.execute(select(func.max(journal.c.writer_txid))).scalar_one()
    if not copied:
        return
    # Entries written on SQLite after a copy from PostgreSQL (writer_txid 0
    # above the last PostgreSQL-written one) are the third run of the sealing
    # order, which the PostgreSQL sealer does not follow: refused, not broken.
    top = source.execute(select(func.max(journal.c.id)).where(journal.c.writer_txid > 0))
    later = source.execute(
        select(func.count())
        .select_from(journal)
        .where(journal.c.writer_txid == 0, journal.c.id > top.scalar_one())
    ).scalar_one()
    if later:
        raise CopyRefused(
            f"the source holds {later} entries written on SQLite after it was copied from "
            "PostgreSQL: copying such a ledger back to PostgreSQL is not supported (its "
            "sealer could not order them; see docs/operations.md)"
        )
    with target.connect() as connection:
        # xmax of a snapshot: the next txid to be assigned (it assigns none itself).
        upcoming = connection.execute(
            text("SELECT txid_snapshot_xmax(txid_current_snapshot())")
        ).scalar_one()
    if int(upcoming) <= int(copied):
        raise CopyRefused(
            f"the source's entries carry PostgreSQL transaction ids up to {copied}, and the "
            f"target server's next is {upcoming}: entries written on the target would sort "
            "before the copied chain and never be sealed (see docs/operations.md)"
        )


def _require_prefix_shape(states: Sequence[TableState]) -> None:
    """Complete tables, at most one partial one, then empty ones: what a dead copy leaves."""
    partial_seen = False
    for state in states:
        if partial_seen and state.target_rows:
            raise CopyRefused(
                f"the target holds rows of {state.name} after an incomplete table: "
                "not what an interrupted copy leaves; refusing to touch it"
            )
        if state.target_rows < state.source_rows:
            partial_seen = True


def copy_ledger(
    source_engine: Engine,
    target_engine: Engine,
    *,
    resume: bool = False,
    page_size: int = DEFAULT_PAGE_SIZE,
    progress: Progress | None = None,
    before_page: Callable[[str, int], None] | None = None,
) -> CopyPlan:
    """Copy every ledger row of ``source_engine`` into ``target_engine``.

    ``progress`` is told after each page how far the copy is;
    ``before_page`` (for tests) is called with the table and its page number
    before each page is written.

    Returns:
        The plan the copy carried out.

    Raises:
        CopyRefused: see :func:`plan_copy`; nothing was written then.
        sqlalchemy.exc.SQLAlchemyError: a database failed mid-copy; the
            pages committed so far stay, and a re-run with ``resume=True``
            continues after them.
    """
    if page_size < 1:
        raise InvalidArgument("page_size must be at least 1")
    with _snapshot(source_engine) as source:
        plan = plan_copy(source, target_engine, resume=resume)
        total = sum(t.source_rows for t in plan.tables)
        done = plan.rows_in_target
        if progress is not None:
            progress("", done, total)
        tables = {table.name: (table, columns) for table, columns in _tables(source)}
        for state in plan.tables:
            table, columns = tables[state.name]
            for page, rows in enumerate(_pages(source, table, columns, state, page_size)):
                if before_page is not None:
                    before_page(table.name, page)
                with target_engine.begin() as target, _triggers_off(target, table):
                    target.execute(table.insert(), [dict(r._mapping) for r in rows])
                done += len(rows)
                if progress is not None:
                    progress(table.name, done, total)
        with target_engine.begin() as target:
            for name in _SEEDED:
                if name in tables:
                    table, columns = tables[name]
                    rows = source.execute(select(*(table.c[c] for c in columns))).all()
                    target.execute(table.delete())
                    if rows:
                        target.execute(table.insert(), [dict(r._mapping) for r in rows])
            _reset_sequences(target, [t for t, _ in tables.values()])
    return CopyPlan(plan.revision, plan.tables, True, plan.source_head, plan.resumed)


def check_copy(target_engine: Engine, plan: CopyPlan) -> list[str]:
    """What differs between the target and the source's snapshot a copy read.

    Row counts per table and the chain head (its length and hash); the books
    themselves are for ``Ledger.verify`` on the target.
    """
    problems = []
    with target_engine.connect() as connection:
        for state in plan.tables:
            held = _count(connection, Base.metadata.tables[state.name])
            if held != state.source_rows:
                problems.append(
                    f"{state.name}: {held} rows in the target, {state.source_rows} in the source"
                )
        head = _head_of(connection)
    if head != plan.source_head:
        problems.append(f"chain head: the target's is {head}, the source's {plan.source_head}")
    return problems


def _pages(
    source: Connection, table: Table, columns: list[str], state: TableState, page_size: int
) -> Iterator[Sequence[Any]]:
    """The source's rows the target lacks, a page at a time, in primary-key order."""
    if state.target_rows >= state.source_rows:
        return
    key = _pk(table)
    after = None
    if state.target_rows:
        last = _row_at(source, table, columns, state.target_rows)._mapping
        after = [last[c.name] for c in key]
    selected = select(*(table.c[c] for c in columns)).order_by(*key).limit(page_size)
    while True:
        statement = selected
        if after is not None:
            statement = statement.where(tuple_(*key) > tuple_(*after))
        rows = source.execute(statement).all()
        if not rows:
            return
        yield rows
        last = rows[-1]._mapping
        after = [last[c.name] for c in key]


@contextmanager
def _triggers_off(connection: Connection, table: Table) -> Iterator[None]:
    """The table's own triggers off for this transaction only (PostgreSQL).

    SQLite's triggers guard UPDATE and DELETE only, which a copy never runs.
    """
    if connection.dialect.name != "postgresql" or not _has_user_triggers(connection, table):
        yield
        return
    connection.execute(text(f"ALTER TABLE {table.name} DISABLE TRIGGER USER"))
    yield
    connection.execute(text(f"ALTER TABLE {table.name} ENABLE TRIGGER USER"))


def _has_user_triggers(connection: Connection, table: Table) -> bool:
    found = connection.execute(
        text(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(:t) AND NOT tgisinternal"
        ),
        {"t": table.name},
    ).scalar_one()
    return bool(found)


def _reset_sequences(connection: Connection, tables: Sequence[Table]) -> None:
    """PostgreSQL: each serial key's sequence continues after the copied ids.

    SQLite needs nothing: a rowid key takes the largest id plus one.
    """
    if connection.dialect.name != "postgresql":
        return
    for table in tables:
        for column in _pk(table):
            sequence = connection.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}
            ).scalar_one()
            if sequence is None:
                continue
            top = connection.execute(select(func.max(column))).scalar_one()
            # setval(seq, n, false): the next nextval() returns n.
            connection.execute(
                text("SELECT setval(:s, :n, false)"),
                {"s": sequence, "n": (int(top) + 1) if top is not None else 1},
            )
