"""Supply analytics: how many tokens exist, where they sit, and how fast they move.

All figures come from SQL aggregates (``repository.analytics``), never from
loading every row. Amounts are exact ``Decimal``; ratios (velocity, Gini,
shares) are ``Decimal`` rounded half-even to six places.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection

from tokenledger.domain import inputs
from tokenledger.domain.amounts import from_units
from tokenledger.domain.errors import InvalidArgument
from tokenledger.domain.records import Distribution, Holder, SupplyReport, Velocity
from tokenledger.service.core import LedgerCore
from tokenledger.storage.repository import analytics
from tokenledger.storage.transactions import run_read

__all__ = ["DEFAULT_WINDOW", "AnalyticsOperations", "ratio"]

DEFAULT_WINDOW = timedelta(hours=24)
PERCENTILES = (50, 90, 99)
TOP_HOLDERS = 10


def ratio(numerator: int, denominator: int) -> Decimal:
    """numerator / denominator rounded half-even to six places, in integer arithmetic.

    Integer division, not ``Decimal`` division, so the result never depends
    on the decimal context's precision. Zero when the denominator is zero.
    """
    if denominator == 0:
        return from_units(0)
    negative = (numerator < 0) != (denominator < 0)
    quotient, remainder = divmod(abs(numerator) * 10**6, abs(denominator))
    if 2 * remainder > abs(denominator) or (2 * remainder == abs(denominator) and quotient % 2):
        quotient += 1
    return from_units(-quotient if negative else quotient)


class AnalyticsOperations(LedgerCore):
    def supply_report(
        self,
        window: timedelta = DEFAULT_WINDOW,
        *,
        now: datetime | str | None = None,
    ) -> SupplyReport:
        """Supply, velocity over ``window`` (default 24 hours) ending ``now``, and distribution.

        ``now`` defaults to the ledger's clock; a datetime or ISO-8601 string
        (naive means UTC).

        Raises:
            InvalidArgument: a window that is not a positive timedelta, a bad ``now``,
                or a window reaching before the first representable time.
        """
        if not isinstance(window, timedelta) or window <= timedelta(0):
            raise InvalidArgument("the velocity window must be a positive timedelta")
        given = None if now is None else inputs.moment(now, name="now")

        def work(connection: Connection) -> SupplyReport:
            end = given or analytics.now(connection)
            try:
                start = end - window
            except OverflowError as exc:
                raise InvalidArgument("the velocity window reaches before year 1") from exc
            return _report(connection, start, end)

        return run_read(self._binding, work, snapshot=True)


def _report(connection: Connection, start: datetime, end: datetime) -> SupplyReport:
    totals = analytics.totals(connection)
    supply = totals["circulating"] + totals["staked"]
    volumes = analytics.window_volumes(connection, start, end)
    velocity = Velocity(
        window_start=start,
        window_end=end,
        transfer_volume=from_units(volumes["transfers"]),
        velocity=ratio(volumes["transfers"], supply),
        minted=from_units(volumes["minted"]),
        burned=from_units(volumes["burned"]),
        staked=from_units(volumes["staked"]),
        entries=volumes["entries"],
    )
    n, weighted, total = analytics.gini_parts(connection)
    ranks = {p: max(1, math.ceil(p * n / 100)) for p in PERCENTILES}
    at_rank = analytics.holdings_at_ranks(connection, sorted(set(ranks.values()))) if n else {}
    distribution = Distribution(
        gini=ratio(weighted, n * total),
        top_holders=[
            Holder(account_id, from_units(units), ratio(units, supply))
            for account_id, units in analytics.top_holders(connection, TOP_HOLDERS)
        ],
        percentiles={f"p{p}": from_units(at_rank.get(rank, 0)) for p, rank in ranks.items()},
    )
    return SupplyReport(
        total_supply=from_units(supply),
        minted=from_units(totals["minted"]),
        burned=from_units(totals["burned"]),
        circulating=from_units(totals["circulating"]),
        staked=from_units(totals["staked"]),
        holders=totals["holders"],
        accounts=totals["accounts"],
        velocity=velocity,
        distribution=distribution,
    )
