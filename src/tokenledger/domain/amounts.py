"""Exact token amounts: the one place where caller values become base units.

A token has ``DECIMALS`` (6) decimal places; storage holds integers of base
units (1 token = 1,000,000 units). Every conversion here is integer
arithmetic on the digits of a ``Decimal``, never ``Decimal`` arithmetic, so
the result cannot depend on the caller's decimal context (whose default
precision of 28 digits would otherwise round silently).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from tokenledger.domain.constants import MAX_BIGINT
from tokenledger.domain.errors import InvalidAmount

__all__ = [
    "DECIMALS",
    "MAX_UNITS",
    "UNITS_PER_TOKEN",
    "AmountInput",
    "format_amount",
    "from_units",
    "to_units",
]

DECIMALS = 6
UNITS_PER_TOKEN: int = 10**DECIMALS
# A signed 64-bit integer is the largest integer both PostgreSQL (BIGINT) and
# SQLite store natively: about 9.2 trillion tokens per balance or amount.
MAX_UNITS = MAX_BIGINT

AmountInput = Decimal | int | str | float

# Plain decimal notation with an optional exponent, ASCII digits only:
# Decimal() alone would also take "NaN", "1_000", " 1 " and non-ASCII digits.
_AMOUNT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,6})?")
# Longer strings cannot hold an amount in range; refuse before parsing them.
_MAX_TEXT_LENGTH = 64
# The common case, "12.5", converted without building a Decimal.
_PLAIN_TEXT = re.compile(r"([0-9]{1,19})(?:\.([0-9]{1,6}))?")


def to_units(value: object, *, allow_zero: bool = False) -> int:
    """Convert a caller's amount into an exact integer of base units.

    Args:
        value: a ``Decimal``, ``int``, ``str`` or ``float`` (a float is read by
            its shortest repr, so ``0.1`` means exactly 0.1).
        allow_zero: accept zero (an initial balance may be zero; a transfer
            may not).

    Raises:
        InvalidAmount: for anything that is not a positive (or, with
            ``allow_zero``, non-negative) amount of at most six decimal
            places within ``MAX_UNITS``. Nothing is ever rounded.
    """
    plain = _plain_units(value)
    if plain is not None:
        if plain == 0 and not allow_zero:
            raise InvalidAmount(f"amount must be positive, got {value!r}")
        if plain > MAX_UNITS:
            raise _too_large(value)
        return plain
    number = _as_decimal(value)
    if not number.is_finite():
        raise InvalidAmount(f"amount must be a finite number, got {value!r}")
    sign, digits, exponent = number.as_tuple()
    if not isinstance(exponent, int):  # only NaN/infinity have a letter here
        raise InvalidAmount(f"amount must be a finite number, got {value!r}")
    text = "".join(map(str, digits)).lstrip("0")
    if not text:
        if allow_zero:
            return 0
        raise InvalidAmount(f"amount must be positive, got {value!r}")
    if sign:
        raise InvalidAmount(f"amount must be positive, got {value!r}")
    # Trailing zeros carry no precision: 1.50000000 is exactly 1.5.
    significant = text.rstrip("0")
    exponent += len(text) - len(significant)
    if exponent < -DECIMALS:
        raise InvalidAmount(f"amount has more than {DECIMALS} decimal places: {value!r}")
    # Bound the size before building a possibly enormous integer.
    if len(significant) + exponent + DECIMALS > len(str(MAX_UNITS)):
        raise _too_large(value)
    units: int = int(significant) * 10 ** (exponent + DECIMALS)
    if units > MAX_UNITS:
        raise _too_large(value)
    return units


def from_units(units: int) -> Decimal:
    """Base units to a ``Decimal`` with exactly six decimal places.

    Built from text, which the ``Decimal`` constructor reads exactly under
    any context (arithmetic such as ``scaleb`` would round to its precision).
    """
    return Decimal(f"{units}E-{DECIMALS}")


def format_amount(units: int) -> str:
    """Base units as a plain decimal string, e.g. ``"12.500000"``."""
    return format(from_units(units), "f")


def _plain_units(value: object) -> int | None:
    """Units of a non-negative ``int`` or a plain decimal string; ``None`` for anything else."""
    if type(value) is int:  # not bool, whose type is bool
        return value * UNITS_PER_TOKEN if value >= 0 else None
    if type(value) is str:
        match = _PLAIN_TEXT.fullmatch(value)
        if match is not None:
            whole, fraction = match.groups()
            return int(whole) * UNITS_PER_TOKEN + (
                int(fraction.ljust(DECIMALS, "0")) if fraction else 0
            )
    return None


def _as_decimal(value: object) -> Decimal:
    # bool is an int subclass; True is not an amount.
    if isinstance(value, bool):
        raise InvalidAmount(f"a boolean is not an amount: {value!r}")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidAmount(f"amount must be a finite number, got {value!r}")
        return Decimal(repr(value))
    if isinstance(value, str):
        if len(value) > _MAX_TEXT_LENGTH or not _AMOUNT_TEXT.fullmatch(value):
            raise InvalidAmount(f"not a decimal amount: {value[:_MAX_TEXT_LENGTH]!r}")
        try:
            return Decimal(value)
        except InvalidOperation as exc:  # the pattern should make this unreachable
            raise InvalidAmount(f"not a decimal amount: {value!r}") from exc
    raise InvalidAmount(f"amount must be Decimal, int, str or float, got {type(value).__name__}")


def _too_large(value: object) -> InvalidAmount:
    return InvalidAmount(
        f"amount exceeds the storable maximum of {format_amount(MAX_UNITS)}: {value!r}"
    )
