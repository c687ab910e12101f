"""The amount model: exact six-decimal amounts, refused rather than rounded."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenledger.domain.amounts import MAX_UNITS, format_amount, from_units, to_units
from tokenledger.errors import InvalidAmount, InvalidArgument

ACCEPTED = [
    (1, 1_000_000),
    (10**12, 10**18),
    ("12.5", 12_500_000),
    ("0.000001", 1),
    ("1e3", 1_000_000_000),
    ("1E-6", 1),
    (".5", 500_000),
    ("5.", 5_000_000),
    ("+7", 7_000_000),
    ("1.500000000", 1_500_000),  # trailing zeros carry no precision
    (0.1, 100_000),  # a float is read by its shortest repr
    (0.3, 300_000),
    (1e-6, 1),
    (123456.123456, 123_456_123_456),
    (Decimal("2.5"), 2_500_000),
    (Decimal("1E+2"), 100_000_000),
    ("9223372036854.775807", MAX_UNITS),
]

REJECTED = [
    0,
    -1,
    "0",
    "0.0000001",
    "-0.5",
    0.0,
    -0.1,
    1e-7,
    float("nan"),
    float("inf"),
    float("-inf"),
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("Infinity"),
    Decimal("1.0000001"),
    Decimal("-3"),
    True,
    False,
    None,
    "",
    " 1",
    "1 ",
    "abc",
    "1,5",
    "1_000",
    "0x10",
    "NaN",
    "inf",
    "Infinity",
    "١٢",  # non-ASCII digits: Decimal() would take them
    "1e",
    "--1",
    "9223372036854.775808",
    "1e13",
    10**13,
    1e300,
    Decimal("1E+100000"),
    Decimal("1E-100000"),
    "9" * 65,
    b"1",
    [1],
    {"amount": 1},
    object(),
]


@pytest.mark.parametrize(("value", "units"), ACCEPTED, ids=repr)
def test_accepted_amounts_convert_exactly(value: object, units: int) -> None:
    assert to_units(value) == units


@pytest.mark.parametrize("value", REJECTED, ids=repr)
def test_rejected_amounts_raise_invalid_amount(value: object) -> None:
    with pytest.raises(InvalidAmount):
        to_units(value)


def test_invalid_amount_is_an_invalid_argument_and_a_value_error() -> None:
    with pytest.raises(InvalidArgument):
        to_units("nope")
    with pytest.raises(ValueError, match="not a decimal amount"):
        to_units("nope")


def test_zero_is_allowed_only_when_asked() -> None:
    assert to_units(0, allow_zero=True) == 0
    assert to_units("0.000000", allow_zero=True) == 0
    with pytest.raises(InvalidAmount):
        to_units(-1, allow_zero=True)


def test_conversion_ignores_the_callers_decimal_context() -> None:
    with localcontext() as context:
        context.prec = 3  # would round 123456.123456 to 1.23E+5 in Decimal arithmetic
        assert to_units("123456.123456") == 123_456_123_456
        assert from_units(123_456_123_456) == Decimal("123456.123456")


def test_results_have_six_places_and_plain_formatting() -> None:
    assert str(from_units(0)) == "0.000000"
    assert str(from_units(1)) == "0.000001"
    assert format_amount(12_500_000) == "12.500000"
    assert from_units(MAX_UNITS) == Decimal("9223372036854.775807")
    assert from_units(-5) == Decimal("-0.000005")


@given(st.integers(min_value=1, max_value=MAX_UNITS))
def test_every_storable_amount_round_trips(units: int) -> None:
    as_decimal = from_units(units)
    assert to_units(as_decimal) == units
    assert to_units(str(as_decimal)) == units
    assert to_units(format_amount(units)) == units


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_any_decimal_is_either_exact_or_refused(value: Decimal) -> None:
    try:
        units = to_units(value)
    except InvalidAmount:
        return
    assert from_units(units) == value  # never rounded


@given(st.text(max_size=40))
def test_any_text_is_either_exact_or_refused(value: str) -> None:
    try:
        units = to_units(value)
    except InvalidAmount:
        return
    assert from_units(units) == Decimal(value)
