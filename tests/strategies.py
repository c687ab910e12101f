"""Hypothesis strategies for the ledger's inputs, good and bad, in one place.

Amounts are drawn as integers of base units (what the books count) and then
written in one of the many forms a caller may use for the same value
(``Decimal``, ``int``, ``str``, ``float``). Each strategy of bad inputs names
the error class the contract promises for them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import strategies as st

UNITS = 10**6  # base units per token (tokenledger.DECIMALS = 6)
MAX_UNITS = 2**63 - 1  # the storable maximum: a signed 64-bit integer of base units
MAX_ID = 255  # characters in an id, a reason, a reference or a key
MAX_MEMO = 4096


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """``one_of`` where a branch of weight 3 is drawn about three times as often as one of 1."""
    return st.one_of(*(strategy for weight, strategy in choices for _ in range(weight)))


# -- text -------------------------------------------------------------------

# Text a database can store: no NUL, no lone surrogates.
_STORABLE = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


def storable_text(min_size: int = 1, max_size: int = 12) -> st.SearchStrategy[str]:
    return st.text(_STORABLE, min_size=min_size, max_size=max_size)


# Ids that are close to the reserved ones, or to each other, without being
# reserved or equal: stored verbatim, so each is an account of its own.
LOOKALIKE_IDS = [
    "System",
    "SYSTEM",
    "system ",
    " system",
    "systemx",
    "system-escrow",
    "System:escrow",
    "sÿstem:x",
    "alice ",
    "Alice",
    "e\u0301",  # e + combining acute: not the same id as "é"
    "\u00e9",
    "\u3000",  # an ideographic space is a perfectly good id
    "x" * MAX_ID,
    "\U0001f642" * MAX_ID,  # 255 characters, 1020 bytes of UTF-8
]
COMMON_IDS = ["carol", "dave", "erin", "frank", "alice", "bob"]


def _user_id(text: str) -> bool:
    return text != "system" and not text.startswith("system:")


def account_ids() -> st.SearchStrategy[str]:
    """Well-formed ids an agent may own; mostly a few common names, so ids collide."""
    return weighted(
        (4, st.sampled_from(COMMON_IDS)),
        (1, st.sampled_from(LOOKALIKE_IDS)),
        (1, storable_text(1, 20).filter(_user_id)),
    )


def reserved_ids() -> st.SearchStrategy[str]:
    """Ids that belong to the ledger: ``system`` and everything under ``system:``."""
    return st.one_of(
        st.sampled_from(["system", "system:escrow", "system:"]),
        storable_text(1, 10).map(lambda tail: "system:" + tail),
    )


def malformed_ids() -> st.SearchStrategy[object]:
    """Values that are not ids at all: wrong type, empty, too long, unstorable."""
    return st.one_of(
        st.sampled_from(
            [
                "",
                "x" * (MAX_ID + 1),
                "\U0001f642" * (MAX_ID + 1),
                "nul\x00byte",
                "\ud800",
                "lone \udfff surrogate",
            ]
        ),
        st.sampled_from([None, 42, 4.2, b"alice", ["alice"], True]),
    )


def bad_account_ids() -> st.SearchStrategy[object]:
    """Anything a write must refuse as an account id (``InvalidArgument``)."""
    return st.one_of(malformed_ids(), reserved_ids())


# -- reasons, references, memos, keys ----------------------------------------


def reasons() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["bid", "reward", "fee", "market_resolved", "r" * MAX_ID]),
        storable_text(1, 16).filter(lambda text: bool(text.strip())),
    )


def bad_reasons() -> st.SearchStrategy[object]:
    """Blank, empty, too long, unstorable or not text: ``InvalidArgument``."""
    return st.one_of(
        st.sampled_from(
            ["", " ", "\t\n", "\u3000", "\u00a0\u2003", "r" * (MAX_ID + 1), "nul\x00", "\ud800"]
        ),
        st.sampled_from([None, 7, b"bid"]),
        st.text(st.sampled_from(" \t\n\r\x0b\x0c\u2028\u3000"), min_size=1, max_size=5),
    )


def optional_texts() -> st.SearchStrategy[str | None]:
    """A reference type or id: absent, or non-empty text up to 255 characters."""
    return st.one_of(st.none(), storable_text(1, 10), st.just("ref" * 85))


def memos() -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.none(),
        storable_text(1, 30),
        st.just("m" * MAX_MEMO),
        st.just("\U0001f642" * MAX_MEMO),
    )


def bad_optional_texts(max_size: int = MAX_ID) -> st.SearchStrategy[object]:
    """What a reference, memo or idempotency key must not be: ``InvalidArgument``."""
    return st.sampled_from(["", "x" * (max_size + 1), "nul\x00", "\udc80", 5, b"ref"])


def idempotency_keys() -> st.SearchStrategy[str | None]:
    """Often no key; otherwise a few shared keys (so they repeat) or a new one."""
    return st.one_of(
        st.none(),
        st.none(),
        st.sampled_from(["k1", "k2", "k3", "K1", "k" * MAX_ID]),
        storable_text(1, 12),
    )


# -- amounts ------------------------------------------------------------------


def _plain(units: int) -> str:
    whole, fraction = divmod(units, UNITS)
    return f"{whole}.{fraction:06d}"


def amount_forms(units: int) -> st.SearchStrategy[Any]:
    """Every way a caller may write exactly ``units`` base units."""
    plain = _plain(units)
    short = plain.rstrip("0").rstrip(".")
    forms: list[Any] = [
        Decimal(plain),
        Decimal(short),
        Decimal(units).scaleb(-6),
        plain,
        short,
        f"{units}e-6",
        f"+{plain}000",  # trailing zeros carry no precision
        "00" + short,
    ]
    if units % UNITS == 0:
        forms += [units // UNITS, f"{units // UNITS}", f"{units // UNITS * 10}E-1"]
    as_float = float(short)
    if Decimal(repr(as_float)) == Decimal(short):
        forms.append(as_float)
    if units < UNITS:
        forms.append(short.removeprefix("0"))  # ".5"
    return st.sampled_from(forms)


def amount_units(available: int | None = None) -> st.SearchStrategy[int]:
    """Positive amounts in base units, most of them sized to ``available``.

    Around an available balance the strategy prefers amounts that fit, then
    the whole balance and the smallest overdraft; the rest range up to the
    storable maximum.
    """
    anywhere = weighted(
        (2, st.integers(1, 100 * UNITS)),
        (1, st.integers(1, 10**12 * UNITS)),
        (1, st.integers(MAX_UNITS - 10 * UNITS, MAX_UNITS)),
    )
    if not available:
        return anywhere
    return weighted(
        (12, st.integers(1, available)),
        (1, st.just(available)),
        (1, st.just(min(available + 1, MAX_UNITS))),
        (2, anywhere),
    )


def initial_balances() -> st.SearchStrategy[int]:
    """An opening balance in base units: mostly ordinary, sometimes zero or very large."""
    return weighted(
        (4, st.integers(1, 1000 * UNITS)),
        (4, st.integers(10 * UNITS, 1000 * UNITS)),
        (2, st.integers(1, 1000).map(lambda tokens: tokens * UNITS)),
        (1, st.just(0)),
        (1, st.just(10**12 * UNITS)),  # the contract's minimum storable balance
        (1, st.integers(MAX_UNITS - 10 * UNITS, MAX_UNITS)),
    )


_ZERO_AMOUNTS: list[object] = [0, "0", "0.000000", Decimal(0), Decimal("-0"), "-0", 0.0, -0.0]

_NONZERO_BAD_AMOUNTS: list[object] = [
    # negative
    -1,
    "-0.5",
    Decimal("-3"),
    -0.000001,
    "-9223372036854.775807",
    # more than six decimal places
    "0.0000001",
    Decimal("1.0000001"),
    1e-7,
    0.1 + 0.2,  # 0.30000000000000004 by its shortest repr
    "1e-7",
    "1.000000000000000000000000001",
    # not finite
    float("nan"),
    float("inf"),
    float("-inf"),
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("-Infinity"),
    "NaN",
    "Infinity",
    # booleans are ints to Python, not amounts
    True,
    False,
    # not numbers
    None,
    "abc",
    "",
    " 1",
    "1 000",
    "1_000",
    "0x10",
    "\u0661",  # ARABIC-INDIC DIGIT ONE
    "1e",
    ".",
    [5],
    b"5",
    Fraction(1, 2),
    complex(1, 0),
    # beyond the storable range
    "9223372036854.775808",
    Decimal("9223372036854.775808"),
    10**13,
    10**30,
    1e300,
    "1e999999",
    "9" * 65,
]


def bad_amounts(*, allow_zero: bool = False) -> st.SearchStrategy[object]:
    """Amounts the contract refuses with ``InvalidAmount``.

    With ``allow_zero`` (an initial balance, a release fee) the zeros are
    acceptable and left out.
    """
    values = _NONZERO_BAD_AMOUNTS + ([] if allow_zero else _ZERO_AMOUNTS)
    return st.one_of(
        st.sampled_from(values),
        st.integers(1, 10**9).map(lambda n: Decimal(n).scaleb(-7) if n % 10 else Decimal(-n)),
        st.integers(MAX_UNITS + 1, 2**70).map(lambda units: Decimal(units).scaleb(-6)),
    )


# -- moments -------------------------------------------------------------------


# Moments that exist in their own zone but not in UTC: past datetime's range.
UNREPRESENTABLE = [
    "9999-12-31T23:59:59-05:00",
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
]


def expiry_offsets() -> st.SearchStrategy[timedelta]:
    """How far ahead of the test's start a stake expires: never within a run."""
    return st.builds(
        timedelta,
        days=st.integers(1, 30),
        seconds=st.integers(0, 86_399),
        microseconds=st.integers(0, 999_999),
    )


def bad_expiries(now: datetime) -> st.SearchStrategy[object]:
    """Expiries a stake must refuse (``InvalidArgument``): past, malformed, wrong type."""
    return st.one_of(
        st.sampled_from(
            [
                now - timedelta(seconds=1),
                datetime(2001, 1, 1, tzinfo=UTC),
                "2001-01-01T00:00:00Z",
                "soon",
                "",
                "2026-13-01",
                12345,
                "9" * 65,
                *UNREPRESENTABLE,
            ]
        ),
        st.integers(1, 10**6).map(lambda s: now - timedelta(seconds=s)),
    )


def bad_entry_ids() -> st.SearchStrategy[object]:
    """What an entry or stake id must not be (``InvalidArgument``)."""
    return st.sampled_from([0, -1, "1", None, 1.0, True, 2**63, 10**30, b"1"])


def bad_limits() -> st.SearchStrategy[object]:
    return st.sampled_from([0, -1, True, "5", 2.5])


def bad_moments() -> st.SearchStrategy[object]:
    """What a ``since``, ``as_of`` or ``now`` must not be (``InvalidArgument``)."""
    return st.sampled_from(
        ["yesterday", "", "2026-02-30", 17, b"2026-01-01", "9" * 70, *UNREPRESENTABLE]
    )
