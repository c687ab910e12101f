"""The HTTP interface: read-only FastAPI endpoints over a ``Ledger``.

A host mounts the router on its own app::

    from tokenledger import Ledger
    from tokenledger.api import create_router

    app.include_router(create_router(Ledger(engine)))

or serves ``create_app(ledger)`` on its own. Every endpoint is a read (no
writes, no locks), lives under ``/api/token``, and answers with a pydantic
model. Amounts and ratios are JSON strings holding exact decimals with six
places (``"12.500000"``), never floats; timestamps are ISO-8601 UTC.

Errors are mapped in one place, ``_LedgerRoute``, so they look the same in
every host app: each is ``{"detail": "<text>"}``::

    AccountNotFound, StakeNotFound, EntryNotFound   404
    InvalidArgument (InvalidAmount included)        422
    a malformed, unknown or repeated parameter      422
    StorageError (ConcurrencyConflict included)     503  (with Retry-After)
    any other LedgerError                           409

Needs the ``api`` extra: ``pip install 'tokenledger[api]'``.
"""

import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, unquote_to_bytes

try:
    from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "tokenledger.api needs FastAPI and pydantic; install them with: "
        "pip install 'tokenledger[api]'"
    ) from exc

from tokenledger import __version__
from tokenledger.constants import MAX_ID_LENGTH
from tokenledger.errors import (
    AccountNotFound,
    EntryNotFound,
    InvalidArgument,
    LedgerError,
    StakeNotFound,
    StorageError,
)
from tokenledger.records import Account, LedgerEntry, Stake
from tokenledger.service.analytics import SupplyReport
from tokenledger.service.ledger import Ledger

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_WINDOW_HOURS",
    "MAX_LIMIT",
    "MAX_WINDOW_HOURS",
    "PREFIX",
    "AccountOut",
    "DistributionOut",
    "EntryOut",
    "ErrorOut",
    "HolderOut",
    "LedgerPageOut",
    "PercentilesOut",
    "StakeOut",
    "StakesOut",
    "SupplyOut",
    "VelocityOut",
    "create_app",
    "create_router",
]

PREFIX = "/api/token"
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
DEFAULT_WINDOW_HOURS = 24
MAX_WINDOW_HOURS = 24 * 365
MAX_ENTRY_ID = 2**63 - 1  # ids are BIGINT
# ISO-8601 times are short; a longer "since" is refused before parsing.
MAX_MOMENT_LENGTH = 64

logger = logging.getLogger("tokenledger.api")

# -- parameter types --------------------------------------------------------

# Query integers are digits only: pydantic alone would also take "+5", " 5",
# "5.0" and "1_000", which a client almost certainly did not mean. Twenty
# digits are enough for any BIGINT id; longer strings are refused unparsed.
_PLAIN_INTEGER = re.compile(r"[0-9]{1,20}")


def _plain_integer(value: object) -> object:
    if isinstance(value, str) and not _PLAIN_INTEGER.fullmatch(value):
        raise ValueError("must be a whole number written with the digits 0-9 only")
    return value


# The bounds go before the validator: pydantic then keeps them in the core
# schema, and OpenAPI shows them as "minimum"/"maximum".
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT), BeforeValidator(_plain_integer)]
WindowHours = Annotated[int, Field(ge=1, le=MAX_WINDOW_HOURS), BeforeValidator(_plain_integer)]
EntryCursor = Annotated[int, Field(ge=1, le=MAX_ENTRY_ID), BeforeValidator(_plain_integer)]

_DECIMAL_PATTERN = r"^[0-9]+\.[0-9]{6}$"
Amount = Annotated[
    str,
    Field(
        pattern=_DECIMAL_PATTERN,
        description="An exact token amount with six decimal places, as a string.",
        examples=["12.500000"],
    ),
]
Ratio = Annotated[
    str,
    Field(
        pattern=_DECIMAL_PATTERN,
        description="A ratio rounded half-even to six decimal places, as a string.",
        examples=["0.250000"],
    ),
]


# -- response models ----------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorOut(_Out):
    """Every error this API answers with."""

    detail: str = Field(description="What went wrong, in words.")


class AccountOut(_Out):
    """One account: its available balance and running totals."""

    account_id: str
    balance: Amount = Field(description="Available balance (staked tokens excluded).")
    total_earned: Amount
    total_spent: Amount
    total_staked: Amount = Field(description="Tokens locked in open stakes.")
    created_at: datetime
    updated_at: datetime


class EntryOut(_Out):
    """One journal entry: one token movement."""

    id: int
    timestamp: datetime
    from_account: str = Field(description='Sender; "system" for a mint.')
    to_account: str = Field(description='Receiver; "system" for a burn.')
    amount: Amount
    reason: str
    reference_type: str | None
    reference_id: str | None
    memo: str | None
    balance_after_from: Amount | None = Field(
        description="The sender's available balance after the entry; null on the system side."
    )
    balance_after_to: Amount | None = Field(
        description="The receiver's available balance after the entry; null on the system side."
    )
    stake_id: int | None = Field(description="The stake this entry locks, pays or returns.")
    reverses_entry_id: int | None = Field(description="The entry this one compensates.")


class LedgerPageOut(_Out):
    """A page of entries, newest first, and the cursor of the next page."""

    entries: list[EntryOut]
    next_before: int | None = Field(
        description="Pass as `before` to get the next page; null when this page is the last."
    )


class StakeOut(_Out):
    """Tokens of one account locked in a position."""

    id: int
    account_id: str
    amount: Amount
    status: Literal["open", "settled", "released", "expired"]
    reason: str
    reference_type: str | None
    reference_id: str | None
    memo: str | None
    expires_at: datetime | None
    created_at: datetime
    closed_at: datetime | None


class StakesOut(_Out):
    """A page of one account's stakes, oldest first, and the cursor of the next page."""

    stakes: list[StakeOut]
    next_after: int | None = Field(
        description="Pass as `after` to get the next page; null when this page is the last."
    )


class VelocityOut(_Out):
    """Token movement over the window [window_start, window_end]."""

    window_start: datetime
    window_end: datetime
    window_hours: int
    transfer_volume: Amount = Field(description="Tokens moved between accounts in the window.")
    velocity: Ratio = Field(description="transfer_volume / total_supply.")
    minted: Amount
    burned: Amount
    staked: Amount
    entries: int = Field(description="Journal entries in the window, of every kind.")


class HolderOut(_Out):
    account_id: str
    holdings: Amount = Field(description="Balance plus staked tokens.")
    share: Ratio = Field(description="holdings / total_supply.")


class PercentilesOut(_Out):
    """Nearest-rank percentiles of holdings over every account."""

    p50: Amount
    p90: Amount
    p99: Amount


class DistributionOut(_Out):
    gini: Ratio = Field(description="Gini coefficient of holdings over every account.")
    top_holders: list[HolderOut]
    percentiles: PercentilesOut


class SupplyOut(_Out):
    """How many tokens exist, where they sit, and how fast they move."""

    total_supply: Amount = Field(description="minted - burned = circulating + staked.")
    minted: Amount
    burned: Amount
    circulating: Amount = Field(description="The sum of available balances.")
    staked: Amount
    holders: int = Field(description="Accounts holding more than zero.")
    accounts: int
    velocity: VelocityOut
    distribution: DistributionOut


# -- conversions --------------------------------------------------------------


def _text(value: Decimal) -> str:
    return format(value, "f")


def _optional_text(value: Decimal | None) -> str | None:
    return None if value is None else _text(value)


def _account_out(account: Account) -> AccountOut:
    return AccountOut(
        account_id=account.account_id,
        balance=_text(account.balance),
        total_earned=_text(account.total_earned),
        total_spent=_text(account.total_spent),
        total_staked=_text(account.total_staked),
        created_at=account.created_at,
        updated_at=account.updated_at,
    )


def _entry_out(entry: LedgerEntry) -> EntryOut:
    # idempotency_key is left out on purpose: it is the writer's retry token,
    # chosen by the client that wrote, not a fact of the books.
    return EntryOut(
        id=entry.id,
        timestamp=entry.timestamp,
        from_account=entry.from_account,
        to_account=entry.to_account,
        amount=_text(entry.amount),
        reason=entry.reason,
        reference_type=entry.reference_type,
        reference_id=entry.reference_id,
        memo=entry.memo,
        balance_after_from=_optional_text(entry.balance_after_from),
        balance_after_to=_optional_text(entry.balance_after_to),
        stake_id=entry.stake_id,
        reverses_entry_id=entry.reverses_entry_id,
    )


def _stake_out(stake: Stake) -> StakeOut:
    return StakeOut(
        id=stake.id,
        account_id=stake.account_id,
        amount=_text(stake.amount),
        status=stake.status,  # type: ignore[arg-type]  # validated by the Literal at runtime
        reason=stake.reason,
        reference_type=stake.reference_type,
        reference_id=stake.reference_id,
        memo=stake.memo,
        expires_at=stake.expires_at,
        created_at=stake.created_at,
        closed_at=stake.closed_at,
    )


def _supply_out(report: SupplyReport, window_hours: int) -> SupplyOut:
    velocity = report.velocity
    distribution = report.distribution
    percentiles = distribution.percentiles
    return SupplyOut(
        total_supply=_text(report.total_supply),
        minted=_text(report.minted),
        burned=_text(report.burned),
        circulating=_text(report.circulating),
        staked=_text(report.staked),
        holders=report.holders,
        accounts=report.accounts,
        velocity=VelocityOut(
            window_start=velocity.window_start,
            window_end=velocity.window_end,
            window_hours=window_hours,
            transfer_volume=_text(velocity.transfer_volume),
            velocity=_text(velocity.velocity),
            minted=_text(velocity.minted),
            burned=_text(velocity.burned),
            staked=_text(velocity.staked),
            entries=velocity.entries,
        ),
        distribution=DistributionOut(
            gini=_text(distribution.gini),
            top_holders=[
                HolderOut(
                    account_id=holder.account_id,
                    holdings=_text(holder.holdings),
                    share=_text(holder.share),
                )
                for holder in distribution.top_holders
            ],
            percentiles=PercentilesOut(
                p50=_text(percentiles["p50"]),
                p90=_text(percentiles["p90"]),
                p99=_text(percentiles["p99"]),
            ),
        ),
    )


# -- the one place where errors become responses -----------------------------


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status, content=ErrorOut(detail=detail).model_dump(), headers=headers
    )


def _ledger_error(exc: LedgerError) -> JSONResponse:
    if isinstance(exc, AccountNotFound | StakeNotFound | EntryNotFound):
        return _error(404, str(exc))
    if isinstance(exc, InvalidArgument):
        return _error(422, str(exc))
    if isinstance(exc, StorageError):
        # The driver's message may name hosts, users or SQL: log it, do not send it.
        logger.error("ledger storage failure", exc_info=exc)
        return _error(
            503, "the ledger's database is unavailable; retry later", {"Retry-After": "1"}
        )
    return _error(409, str(exc))


def _shorten(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(errors: Sequence[Any]) -> str:
    """FastAPI's validation errors in one sentence (inputs are not echoed)."""
    parts = []
    for error in errors:
        location = tuple(error.get("loc", ()))
        message = str(error.get("msg", "is invalid"))
        if len(location) >= 2 and location[0] in {"query", "path"}:
            parts.append(f"{location[0]} parameter {str(location[1])!r}: {message}")
        else:
            parts.append(f"{'.'.join(map(str, location)) or 'request'}: {message}")
    return "; ".join(parts) or "the request is invalid"


def _request_problem(request: Request, allowed: frozenset[str], strict: bool) -> str | None:
    """Why the raw request is refused before parameter validation, if it is."""
    raw_path = request.scope.get("raw_path")
    if isinstance(raw_path, bytes):
        try:
            unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError:
            return "the path is not valid UTF-8 once percent-decoded"
    query = request.scope.get("query_string", b"")
    if not isinstance(query, bytes):
        return None
    try:
        pairs = parse_qsl(
            query.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        return "the query string is not valid UTF-8 once percent-decoded"
    if not strict:
        return None
    seen: set[str] = set()
    for name, _ in pairs:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            return f"unknown query parameter {_shorten(name)!r} (this endpoint takes: {known})"
        if name in seen:
            return f"query parameter {_shorten(name)!r} is given more than once"
        seen.add(name)
    return None


def _route_class(strict_query: bool) -> type[APIRoute]:
    class LedgerRoute(APIRoute):
        """An ``APIRoute`` whose errors are all ``{"detail": "..."}``, whatever the host app."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            # The route's own parameters: these endpoints have no sub-dependencies.
            allowed = frozenset(field.alias for field in self.dependant.query_params)

            async def guarded(request: Request) -> Response:
                problem = _request_problem(request, allowed, strict_query)
                if problem is not None:
                    return _error(422, problem)
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    return _error(422, _describe(exc.errors()))
                except LedgerError as exc:
                    return _ledger_error(exc)

            return guarded

    return LedgerRoute


_BAD_INPUT: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ErrorOut,
        "description": "A malformed, out-of-range, unknown or repeated parameter.",
    },
    503: {"model": ErrorOut, "description": "The database is unavailable; retry later."},
}
_NO_ACCOUNT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such account."},
    **_BAD_INPUT,
}
_NO_ACCOUNT_OR_STAKE: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such account, or no stake with the `after` id."},
    **_BAD_INPUT,
}
_NO_ACCOUNT_OR_ENTRY: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such account, or no entry with the `before` id."},
    **_BAD_INPUT,
}


# -- routes -------------------------------------------------------------------


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
    router = APIRouter(prefix=PREFIX, tags=["tokenledger"], route_class=_route_class(strict_query))

    @router.get(
        "/balance/{agent_id:path}",
        response_model=AccountOut,
        responses=_NO_ACCOUNT,
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
        return _account_out(ledger.get_account(agent_id))

    @router.get(
        "/supply",
        response_model=SupplyOut,
        responses=_BAD_INPUT,
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
        return _supply_out(report, window_hours)

    @router.get(
        "/ledger",
        response_model=LedgerPageOut,
        responses=_NO_ACCOUNT_OR_ENTRY,
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
            entries=[_entry_out(entry) for entry in page],
            next_before=page[-1].id if len(rows) > limit else None,
        )

    @router.get(
        "/stakes",
        response_model=StakesOut,
        responses=_NO_ACCOUNT_OR_STAKE,
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
            stakes=[_stake_out(stake) for stake in page],
            next_after=page[-1].id if len(rows) > limit else None,
        )

    return router


def create_app(ledger: Ledger, *, strict_query: bool = True) -> FastAPI:
    """A FastAPI app serving only the ledger's endpoints (see ``create_router``)."""
    app = FastAPI(
        title="tokenledger",
        version=__version__,
        description=(
            "Read-only HTTP interface of the tokenledger double-entry token ledger. "
            "Amounts and ratios are JSON strings holding exact decimals with six "
            "places; timestamps are ISO-8601 UTC; every error is "
            '`{"detail": "..."}`.'
        ),
    )
    app.include_router(create_router(ledger, strict_query=strict_query))
    return app
