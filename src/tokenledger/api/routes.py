"""The ``/api/token`` endpoints: reads over a ``Ledger``, no writes, no locks.

The event feed's endpoints may seal the chain first (``Ledger.events``), the
one write any of them causes: it is what puts committed entries in order.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tokenledger.api.errors import (
    BAD_INPUT,
    NO_ACCOUNT,
    NO_ACCOUNT_OR_ENTRY,
    NO_ACCOUNT_OR_STAKE,
    route_class,
)
from tokenledger.api.schemas import (
    ACCOUNT_ID_PATTERN,
    DEFAULT_EVENTS,
    DEFAULT_LIMIT,
    DEFAULT_WINDOW_HOURS,
    MAX_MOMENT_LENGTH,
    AccountOut,
    ChainPosition,
    EntryCursor,
    EntryOut,
    EventOut,
    EventsPageOut,
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

__all__ = ["HEARTBEAT_SECONDS", "PREFIX", "create_router"]

PREFIX = "/api/token"
# A stream with nothing to send says so this often (a comment line), so that
# proxies keep it open; it looks for new events (and for a client that went
# away) every POLL_SECONDS, which also bounds how long a shutdown waits for it.
HEARTBEAT_SECONDS = 15.0
POLL_SECONDS = 1.0


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
                pattern=ACCOUNT_ID_PATTERN,
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
                pattern=ACCOUNT_ID_PATTERN,
                description="Only entries where this account is sender or receiver.",
            ),
        ] = None,
        limit: Annotated[Limit, Query(description="Entries per page.")] = DEFAULT_LIMIT,
        since: Annotated[
            str | None,
            Query(
                max_length=MAX_MOMENT_LENGTH,
                description=(
                    "Only entries at or after this time (RFC 3339; also a bare date, or a "
                    "time without an offset, which is UTC). Read to the microsecond."
                ),
                examples=["2026-01-31T00:00:00Z"],
                json_schema_extra={"format": "date-time"},
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
            entries=_on_chain(ledger, [EntryOut.model_validate(entry) for entry in page]),
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
            Query(
                min_length=1,
                max_length=MAX_ID_LENGTH,
                pattern=ACCOUNT_ID_PATTERN,
                description="The stakes' owner.",
            ),
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

    @router.get(
        "/events",
        response_model=EventsPageOut,
        responses=BAD_INPUT,
        name="token_events",
        summary="The sealed journal in chain order, from a position",
    )
    def events(
        after: Annotated[
            ChainPosition,
            Query(description="The last `seq` seen (0 for the beginning): events after it."),
        ] = 0,
        limit: Annotated[Limit, Query(description="At most this many events.")] = DEFAULT_EVENTS,
    ) -> EventsPageOut:
        """Every committed entry, once, in one order that never changes.

        Follow ``next_after`` to read on: no entry is skipped or repeated,
        whatever order concurrent writers committed in.
        """
        page = ledger.events(after, limit)
        return EventsPageOut(
            events=_on_chain(ledger, [EventOut.model_validate(event) for event in page]),
            next_after=page[-1].seq if page else after,
        )

    @router.get(
        "/events/stream",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
                "description": "Server-Sent Events: `id: <seq>`, `event: entry`, `data: "
                "<an event as in /events>`; a comment line every 15 s when idle.",
            },
            **BAD_INPUT,
        },
        name="token_events_stream",
        summary="The event feed as a Server-Sent Events stream",
    )
    async def events_stream(
        request: Request,
        after: Annotated[
            ChainPosition,
            Query(description="Start after this `seq` (0 for the beginning)."),
        ] = 0,
        last_event_id: Annotated[
            ChainPosition | None,
            Header(
                alias="Last-Event-ID",
                description="Sent by an EventSource that reconnects: resume after it.",
            ),
        ] = None,
    ) -> StreamingResponse:
        """Events as they are sealed, for as long as the client listens."""
        start = after if last_event_id is None else last_event_id

        async def stream() -> AsyncIterator[str]:
            position = start
            yield ": connected\n\n"
            quiet_since = time.monotonic()
            while not await request.is_disconnected():
                page = await run_in_threadpool(
                    ledger.events, position, DEFAULT_EVENTS, wait=POLL_SECONDS
                )
                if not page and time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                    quiet_since = time.monotonic()
                    yield ": keepalive\n\n"
                outs = [EventOut.model_validate(event) for event in page]
                if outs:
                    outs = await run_in_threadpool(_on_chain, ledger, outs)
                for out in outs:
                    quiet_since = time.monotonic()
                    data = out.model_dump_json()
                    yield f"id: {out.seq}\nevent: entry\ndata: {data}\n\n"
                    position = out.seq

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    return router


Out = TypeVar("Out", bound=EntryOut)


def _on_chain(ledger: Ledger, outs: list[Out]) -> list[Out]:
    """The entries with their ``tx_hash`` where the chain bridge has pushed them."""
    hashes = ledger.chain_tx_hashes(out.id for out in outs)
    if not hashes:
        return outs
    return [out.model_copy(update={"tx_hash": hashes.get(out.id)}) for out in outs]
