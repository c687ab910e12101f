"""The ``/api/token`` endpoints: reads over a ``Ledger``, no writes, no locks."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query

from tokenledger.api.errors import (
    BAD_INPUT,
    NO_ACCOUNT,
    NO_ACCOUNT_OR_ENTRY,
    NO_ACCOUNT_OR_STAKE,
    route_class,
)
from tokenledger.api.schemas import (
    DEFAULT_LIMIT,
    DEFAULT_WINDOW_HOURS,
    MAX_MOMENT_LENGTH,
    AccountOut,
    EntryCursor,
    EntryOut,
    LedgerPageOut,
    Limit,
    StakeOut,
    StakesOut,
    SupplyOut,
    WindowHours,
    supply_out,
)
from tokenledger.domain.constants import MAX_ID_LENGTH
from tokenledger.service.ledger import Ledger

__all__ = ["PREFIX", "create_router"]

PREFIX = "/api/token"


def create_router(ledger: Ledger, *, strict_query: bool = True) -> APIRouter:
    """The ``/api/token`` endpoints over ``ledger``, for a host to mount.

    Args:
        ledger: the ledger to read.
        strict_query: refuse (422) query parameters an endpoint does not
            take, and parameters given more than once, so that a typo such
            as ``?acount=alice`` cannot silently list the whole ledger. Turn
            it off if the host adds query parameters of its own to these
            routes (through router dependencies).

    Returns:
        An ``APIRouter`` with prefix ``/api/token``:
        ``app.include_router(create_router(ledger))``.
    """
    router = APIRouter(prefix=PREFIX, tags=["tokenledger"], route_class=route_class(strict_query))

    @router.get(
        "/balance/{agent_id:path}",
        response_model=AccountOut,
        responses=NO_ACCOUNT,
        name="token_balance",
        summary="One account's balance and totals",
    )
    def balance(
        agent_id: Annotated[
            str,
            Path(
                min_length=1,
                max_length=MAX_ID_LENGTH,
                description="The account id, percent-encoded; it may contain '/'.",
            ),
        ],
    ) -> AccountOut:
        """The account's available balance, running totals and timestamps."""
        return AccountOut.model_validate(ledger.get_account(agent_id))

    @router.get(
        "/supply",
        response_model=SupplyOut,
        responses=BAD_INPUT,
        name="token_supply",
        summary="Supply, velocity and distribution",
    )
    def supply(
        window_hours: Annotated[
            WindowHours, Query(description="The velocity window, in whole hours, ending now.")
        ] = DEFAULT_WINDOW_HOURS,
    ) -> SupplyOut:
        """Total supply, minted and burned, velocity over the window, distribution of holdings."""
        report = ledger.supply_report(window=timedelta(hours=window_hours))
        return supply_out(report, window_hours)

    @router.get(
        "/ledger",
        response_model=LedgerPageOut,
        responses=NO_ACCOUNT_OR_ENTRY,
        name="token_ledger",
        summary="Journal entries, newest first, a page at a time",
    )
    def ledger_page(
        account: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=MAX_ID_LENGTH,
                description="Only entries where this account is sender or receiver.",
            ),
        ] = None,
        limit: Annotated[Limit, Query(description="Entries per page.")] = DEFAULT_LIMIT,
        since: Annotated[
            str | None,
            Query(
                max_length=MAX_MOMENT_LENGTH,
                description=(
                    "Only entries at or after this ISO-8601 date or time "
                    "(UTC when it has no offset)."
                ),
                examples=["2026-01-31T00:00:00Z"],
            ),
        ] = None,
        before: Annotated[
            EntryCursor | None,
            Query(description="Cursor: the `next_before` of the previous page."),
        ] = None,
    ) -> LedgerPageOut:
        """Entries newest first; follow ``next_before`` until it is null to read them all."""
        # One more than asked tells whether another page exists, so the last
        # page says so itself instead of a further empty page saying it. An
        # unknown cursor is EntryNotFound, so a 404.
        rows = ledger.list_entries(account=account, since=since, before=before, limit=limit + 1)
        page = rows[:limit]
        return LedgerPageOut(
            entries=[EntryOut.model_validate(entry) for entry in page],
            next_before=page[-1].id if len(rows) > limit else None,
        )

    @router.get(
        "/stakes",
        response_model=StakesOut,
        responses=NO_ACCOUNT_OR_STAKE,
        name="token_stakes",
        summary="One account's stakes",
    )
    def stakes(
        account: Annotated[
            str,
            Query(min_length=1, max_length=MAX_ID_LENGTH, description="The stakes' owner."),
        ],
        open_only: Annotated[
            bool, Query(description="Only open stakes (default), or every stake.")
        ] = True,
        limit: Annotated[Limit, Query(description="Stakes per page.")] = DEFAULT_LIMIT,
        after: Annotated[
            EntryCursor | None,
            Query(description="Cursor: the `next_after` of the previous page."),
        ] = None,
    ) -> StakesOut:
        """The account's stakes, oldest first; follow ``next_after`` until it is null."""
        rows = ledger.get_stakes(account, open_only, after=after, limit=limit + 1)
        page = rows[:limit]
        return StakesOut(
            stakes=[StakeOut.model_validate(stake) for stake in page],
            next_after=page[-1].id if len(rows) > limit else None,
        )

    return router
