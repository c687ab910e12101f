"""The one place where errors become HTTP responses, whatever the host app.

Every error is ``{"detail": "<text>"}``::

    AccountNotFound, StakeNotFound, EntryNotFound   404
    InvalidArgument (InvalidAmount included)        422
    a malformed, unknown or repeated parameter      422
    StorageError (ConcurrencyConflict included)     503  (with Retry-After)
    any other LedgerError                           409
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from tokenledger.api.schemas import ErrorOut
from tokenledger.domain.errors import (
    AccountNotFound,
    EntryNotFound,
    InvalidArgument,
    LedgerError,
    StakeNotFound,
    StorageError,
)

__all__ = [
    "BAD_INPUT",
    "NO_ACCOUNT",
    "NO_ACCOUNT_OR_ENTRY",
    "NO_ACCOUNT_OR_STAKE",
    "error_response",
    "route_class",
]

logger = logging.getLogger("tokenledger.api")


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status, content=ErrorOut(detail=detail).model_dump(), headers=headers
    )


def _ledgererror_response(exc: LedgerError) -> JSONResponse:
    if isinstance(exc, AccountNotFound | StakeNotFound | EntryNotFound):
        return error_response(404, str(exc))
    if isinstance(exc, InvalidArgument):
        return error_response(422, str(exc))
    if isinstance(exc, StorageError):
        # The driver's message may name hosts, users or SQL: log it, do not send it.
        logger.error("ledger storage failure", exc_info=exc)
        return error_response(
            503, "the ledger's database is unavailable; retry later", {"Retry-After": "1"}
        )
    return error_response(409, str(exc))


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


def route_class(strict_query: bool) -> type[APIRoute]:
    class LedgerRoute(APIRoute):
        """An ``APIRoute`` whose errors are all ``{"detail": "..."}``, whatever the host app."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            # The route's own parameters: these endpoints have no sub-dependencies.
            allowed = frozenset(field.alias for field in self.dependant.query_params)

            async def guarded(request: Request) -> Response:
                problem = _request_problem(request, allowed, strict_query)
                if problem is not None:
                    return error_response(422, problem)
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    return error_response(422, _describe(exc.errors()))
                except LedgerError as exc:
                    return _ledgererror_response(exc)

            return guarded

    return LedgerRoute


BAD_INPUT: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ErrorOut,
        "description": "A malformed, out-of-range, unknown or repeated parameter.",
    },
    503: {"model": ErrorOut, "description": "The database is unavailable; retry later."},
}
NO_ACCOUNT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such account."},
    **BAD_INPUT,
}
NO_ACCOUNT_OR_STAKE: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such account, or no stake with the `after` id."},
    **BAD_INPUT,
}
NO_ACCOUNT_OR_ENTRY: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such account, or no entry with the `before` id."},
    **BAD_INPUT,
}
