"""The HTTP interface: read-only FastAPI endpoints over a ``Ledger``.

A host mounts the router on its own app::

    from tokenledger import Ledger
    from tokenledger.api import create_router

    app.include_router(create_router(Ledger(engine)))

or serves ``create_app(ledger)`` on its own. Every endpoint is a read (no
writes, no locks), lives under ``/api/token``, and answers with a pydantic
model. Amounts and ratios are JSON strings holding exact decimals with six
places (``"12.500000"``), never floats; timestamps are ISO-8601 UTC.

The package: ``schemas`` (parameter types, response models), ``errors``
(the one mapping of errors to responses), ``routes`` (the endpoints).
Errors look the same in every host app: each is ``{"detail": "<text>"}``::

    AccountNotFound, StakeNotFound, EntryNotFound   404
    InvalidArgument (InvalidAmount included)        422
    a malformed, unknown or repeated parameter      422
    StorageError (ConcurrencyConflict included)     503  (with Retry-After)
    any other LedgerError                           409

Needs the ``api`` extra: ``pip install 'tokenledger[api]'``.
"""

try:
    from fastapi import FastAPI
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "tokenledger.api needs FastAPI and pydantic; install them with: "
        "pip install 'tokenledger[api]'"
    ) from exc

from tokenledger import __version__
from tokenledger.api.routes import PREFIX, create_router
from tokenledger.api.schemas import (
    DEFAULT_LIMIT,
    DEFAULT_WINDOW_HOURS,
    MAX_LIMIT,
    MAX_WINDOW_HOURS,
    AccountOut,
    DistributionOut,
    EntryOut,
    ErrorOut,
    HolderOut,
    LedgerPageOut,
    PercentilesOut,
    StakeOut,
    StakesOut,
    SupplyOut,
    VelocityOut,
)
from tokenledger.domain.constants import MAX_BIGINT as MAX_ENTRY_ID
from tokenledger.service.ledger import Ledger

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_WINDOW_HOURS",
    "MAX_ENTRY_ID",
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
