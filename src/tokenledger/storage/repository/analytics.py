"""SQL for supply analytics: sums, ranks and windows computed in the database.

Every figure is exact: PostgreSQL sums in NUMERIC; SQLite sums whole tokens
and remainders apart so that its 64-bit integer SUM stays in range.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Numeric, and_, case, cast, func, literal, or_, select

from tokenledger.domain.amounts import UNITS_PER_TOKEN
from tokenledger.domain.constants import ESCROW_ACCOUNT, SYSTEM_ACCOUNT
from tokenledger.storage.dialect import clock, is_postgresql
from tokenledger.storage.models import accounts_table, journal_table, stakes_table

__all__ = [
    "exact_sum",
    "gini_parts",
    "holdings_at_ranks",
    "now",
    "top_holders",
    "totals",
    "window_volumes",
]

_a = accounts_table.c
_j = journal_table.c
_s = stakes_table.c

holdings = (_a.balance + _a.total_staked).label("holdings")


def now(connection: Connection) -> datetime:
    """The ledger's clock (see ``dialect.clock``)."""
    return connection.execute(select(clock(connection))).scalar_one()


def exact_sum(connection: Connection, expression: Any, *where: Any, table: Any = None) -> int:
    """SUM(expression) as an exact Python int on either backend."""
    if is_postgresql(connection):
        parts = [func.sum(cast(expression, Numeric))]
    else:
        # Combined in Python: in SQL, whole * 10**6 can pass 2**63 and turn REAL.
        parts = [func.sum(expression // UNITS_PER_TOKEN), func.sum(expression % UNITS_PER_TOKEN)]
    statement = select(*(func.coalesce(part, 0) for part in parts))
    if table is not None:
        statement = statement.select_from(table)
    if where:
        statement = statement.where(*where)
    row = connection.execute(statement).one()
    return int(row[0]) if len(row) == 1 else int(row[0]) * UNITS_PER_TOKEN + int(row[1])


def totals(connection: Connection) -> dict[str, int]:
    """Circulating (available), staked, holders, accounts; minted and burned to date."""
    counts = connection.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((holdings > 0, 1), else_=0)), 0),
        ).select_from(accounts_table)
    ).one()
    return {
        "circulating": exact_sum(connection, _a.balance, table=accounts_table),
        "staked": exact_sum(connection, _a.total_staked, table=accounts_table),
        "minted": exact_sum(
            connection, _j.amount, _j.from_account == SYSTEM_ACCOUNT, table=journal_table
        ),
        "burned": exact_sum(
            connection, _j.amount, _j.to_account == SYSTEM_ACCOUNT, table=journal_table
        ),
        "accounts": int(counts[0]),
        "holders": int(counts[1]),
    }


def window_volumes(connection: Connection, start: datetime, end: datetime) -> dict[str, int]:
    """Token volumes of entries in [start, end], by kind.

    ``transfers`` is what moved between accounts: agent to agent, and stake
    payouts to an agent other than the stake's owner. Mints, burns (slashes
    and fees included) and stake locks/returns are counted apart.
    """
    journal = journal_table.outerjoin(stakes_table, _s.id == _j.stake_id)
    in_window = and_(_j.timestamp >= start, _j.timestamp <= end)
    kinds = {
        "transfers": or_(
            and_(_agent(_j.from_account), _agent(_j.to_account)),
            and_(
                _j.from_account == ESCROW_ACCOUNT,
                _agent(_j.to_account),
                _j.to_account != _s.account_id,
            ),
        ),
        "minted": _j.from_account == SYSTEM_ACCOUNT,
        "burned": _j.to_account == SYSTEM_ACCOUNT,
        "staked": _j.to_account == ESCROW_ACCOUNT,
    }
    volumes = {
        kind: exact_sum(connection, _j.amount, in_window, condition, table=journal)
        for kind, condition in kinds.items()
    }
    volumes["entries"] = int(
        connection.execute(
            select(func.count()).select_from(journal_table).where(in_window)
        ).scalar_one()
    )
    return volumes


def _agent(column: Any) -> Any:
    """The column names an agent's account, not ``system`` or the escrow."""
    return and_(column != SYSTEM_ACCOUNT, column != ESCROW_ACCOUNT)


def top_holders(connection: Connection, n: int) -> list[tuple[str, int]]:
    statement = (
        select(_a.account_id, holdings)
        .where(holdings > 0)
        .order_by(holdings.desc(), _a.account_id)
        .limit(n)
    )
    return [(row[0], int(row[1])) for row in connection.execute(statement)]


def holdings_at_ranks(connection: Connection, ranks: list[int]) -> dict[int, int]:
    """Holdings at 1-based ranks in ascending order (for nearest-rank percentiles)."""
    ranked = select(
        holdings, func.row_number().over(order_by=(holdings, _a.account_id)).label("rank")
    ).subquery()
    statement = select(ranked.c.rank, ranked.c.holdings).where(ranked.c.rank.in_(ranks))
    return {int(row[0]): int(row[1]) for row in connection.execute(statement)}


def gini_parts(connection: Connection) -> tuple[int, int, int]:
    """(n, Σ (2i - n - 1)·x_i, Σ x_i) over holdings x sorted ascending, i from 1.

    The Gini coefficient is the middle term over n times the last.
    """
    n = int(connection.execute(select(func.count()).select_from(accounts_table)).scalar_one())
    if n == 0:
        return 0, 0, 0
    ranked = select(
        holdings.label("x"),
        (2 * func.row_number().over(order_by=(holdings, _a.account_id)) - literal(n + 1)).label(
            "weight"
        ),
    ).subquery()
    weight, x = ranked.c.weight, ranked.c.x
    if is_postgresql(connection):
        weighted = exact_sum(connection, weight * cast(x, Numeric), table=ranked)
    else:
        # weight * x can pass 2**63 for one row; split x in whole tokens and remainder.
        weighted = exact_sum(
            connection, weight * (x // UNITS_PER_TOKEN), table=ranked
        ) * UNITS_PER_TOKEN + exact_sum(connection, weight * (x % UNITS_PER_TOKEN), table=ranked)
    total = exact_sum(connection, x, table=ranked)
    return n, weighted, total
