"""Validation of caller input other than amounts: ids, text, times, limits.

Each function returns the value to store, unchanged (ids are stored
verbatim), or raises ``InvalidArgument``. Nothing here touches the database.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tokenledger.domain.constants import (
    MAX_BIGINT,
    MAX_ID_LENGTH,
    MAX_MEMO_LENGTH,
    SYSTEM_ACCOUNT,
    is_reserved,
)
from tokenledger.domain.errors import InvalidArgument

__all__ = [
    "account_id",
    "chain_position",
    "distinct_parties",
    "limit",
    "memo",
    "moment",
    "optional_text",
    "positive_id",
    "reason",
    "row_id",
    "seconds",
    "user_account_id",
]


def account_id(value: object, *, name: str = "account id") -> str:
    """Any well-formed id, reserved ones included (for reads)."""
    return _text(value, name=name, max_length=MAX_ID_LENGTH)


def user_account_id(value: object, *, name: str = "account id") -> str:
    """An id an agent may own: well-formed and not reserved."""
    text = account_id(value, name=name)
    if is_reserved(text):
        raise InvalidArgument(
            f"{name} {text!r} is reserved: {SYSTEM_ACCOUNT!r} and 'system:...' belong to the ledger"
        )
    return text


def reason(value: object) -> str:
    """A reason is required and must say something."""
    text = _text(value, name="reason", max_length=MAX_ID_LENGTH)
    if not text.strip():
        raise InvalidArgument("reason must not be blank")
    return text


def optional_text(value: object, *, name: str, max_length: int = MAX_ID_LENGTH) -> str | None:
    """``None`` or a non-empty string within ``max_length`` characters."""
    if value is None:
        return None
    return _text(value, name=name, max_length=max_length)


def memo(value: object) -> str | None:
    """A memo may be long, but not unbounded."""
    return optional_text(value, name="memo", max_length=MAX_MEMO_LENGTH)


def moment(value: object, *, name: str) -> datetime:
    """A point in time from a datetime or an ISO-8601 string, as aware UTC.

    A naive datetime (or a string without an offset) is taken to be UTC.
    """
    given = value
    if isinstance(value, str):
        if len(value) > 64:
            raise InvalidArgument(f"{name} is not an ISO-8601 time: {value[:64]!r}...")
        try:
            # RFC 3339 allows a lower-case "t" and "z"; Python's parser does not.
            value = datetime.fromisoformat(value.upper())
        except ValueError as exc:
            raise InvalidArgument(f"{name} is not an ISO-8601 time: {value!r}") from exc
    if not isinstance(value, datetime):
        raise InvalidArgument(
            f"{name} must be a datetime or an ISO-8601 string, got {type(value).__name__}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 9999-12-31T23:59-05:00 is past datetime.max in UTC
        raise InvalidArgument(f"{name} is out of the representable range: {given!r}") from exc


def limit(value: object, *, maximum: int | None = None) -> int | None:
    """``None`` (no limit) or a positive int, at most ``maximum`` if given."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"limit must be a positive integer, got {value!r}")
    if value < 1:
        raise InvalidArgument(f"limit must be a positive integer, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(f"limit must be at most {maximum}, got {value}")
    return value


def positive_id(value: object, *, name: str = "entry id") -> int:
    """A positive integer id of a row (an entry, a stake), within BIGINT."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{name} must be a positive integer, got {value!r}")
    if value > MAX_BIGINT:
        raise InvalidArgument(f"{name} is out of range: {value}")
    return value


def chain_position(value: object, *, name: str = "after") -> int:
    """A position in the sealed chain: 0 (before the first event) or a positive seq."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name} must be a non-negative integer, got {value!r}")
    if value > MAX_BIGINT:
        raise InvalidArgument(f"{name} is out of range: {value}")
    return value


def seconds(value: object, *, name: str, maximum: float) -> float:
    """A non-negative number of seconds, at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= maximum:
        raise InvalidArgument(f"{name} must be a number of seconds from 0 to {maximum:g}")
    return float(value)


def row_id(value: object) -> int | None:
    """An id to look a row up by (an entry, a stake); ``None`` for a value that names none.

    Row ids are positive integers within BIGINT: anything else (a string, a
    bool, zero, a float) can name no row, which the caller reports as not
    found rather than as malformed.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BIGINT:
        return None
    return value


def distinct_parties(from_id: object, to_id: object) -> tuple[str, str]:
    """The two agents of a transfer: each one may own an account, and they differ."""
    sender = user_account_id(from_id, name="from account")
    receiver = user_account_id(to_id, name="to account")
    if sender == receiver:
        raise InvalidArgument(f"cannot transfer from {sender!r} to itself")
    return sender, receiver


def _text(value: object, *, name: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, got {type(value).__name__}")
    if type(value) is not str:
        # A str subclass (say a ``str`` Enum member) formats as something else
        # in f-strings and some drivers: keep only its text, as plain str.
        value = str.__str__(value)
    if not value:
        raise InvalidArgument(f"{name} must not be empty")
    if len(value) > max_length:
        raise InvalidArgument(f"{name} is longer than {max_length} characters")
    # NUL cannot be stored by PostgreSQL, and a lone surrogate cannot be
    # encoded as UTF-8 at all: refuse both here rather than in the driver.
    if "\x00" in value:
        raise InvalidArgument(f"{name} must not contain NUL characters")
    if not value.isascii():  # only non-ASCII text can hold a lone surrogate
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"{name} is not valid Unicode text") from exc
    return value
