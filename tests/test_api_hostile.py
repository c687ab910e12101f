"""Malformed and hostile input at the HTTP boundary.

Each case is a raw request against a small populated ledger. It must get the
status written beside it (a 4xx, or a 200 where the input is harmless, with
the body checked), an ``{"detail": "..."}`` body when refused, never a 500,
and nothing may be written: a snapshot of every ledger table before and
after proves that. Hypothesis then fuzzes the query parameters of
``/api/token/ledger`` and ``/api/token/supply`` and the balance path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenledger import Ledger
from tokenledger.api import create_app

Snapshot = Callable[[], dict[str, list[tuple[Any, ...]]]]
Body = Any

BALANCE = "/api/token/balance/"
LEDGER = "/api/token/ledger"
SUPPLY = "/api/token/supply"
STAKES = "/api/token/stakes"
NOT_DIGITS = "Value error, must be a whole number written with the digits 0-9 only"


@dataclass(frozen=True)
class Case:
    name: str
    url: str
    status: int
    method: str = "GET"
    check: Callable[[Body], bool] | None = None  # for a 200: what the body must show
    detail: str | None = None  # for a refusal: the exact detail, where it matters


def entries_count(n: int) -> Callable[[Body], bool]:
    return lambda body: len(body["entries"]) == n


def is_supply(body: Body) -> bool:
    return body["total_supply"] == "150.000000"


CASES = [
    # -- limit: numbers in every odd form --------------------------------------
    Case("limit-word", f"{LEDGER}?limit=abc", 422, detail=f"query parameter 'limit': {NOT_DIGITS}"),
    Case("limit-1e309", f"{LEDGER}?limit=1e309", 422),
    Case("limit-minus-zero", f"{LEDGER}?limit=-0", 422),
    Case("limit-hex", f"{LEDGER}?limit=0x10", 422),
    Case("limit-nan", f"{LEDGER}?limit=NaN", 422),
    Case("limit-infinity", f"{LEDGER}?limit=Infinity", 422),
    Case("limit-underscore", f"{LEDGER}?limit=1_000", 422),
    Case("limit-plus", f"{LEDGER}?limit=%2B5", 422),
    Case("limit-leading-space", f"{LEDGER}?limit=%205", 422),
    Case("limit-float", f"{LEDGER}?limit=5.0", 422),
    Case("limit-negative", f"{LEDGER}?limit=-1", 422),
    Case("limit-zero", f"{LEDGER}?limit=0", 422),
    Case("limit-too-big", f"{LEDGER}?limit=1001", 422),
    Case("limit-huge", f"{LEDGER}?limit={'9' * 400}", 422),
    Case("limit-arabic-digit", f"{LEDGER}?limit=%D9%A5", 422),
    Case("limit-fullwidth-digit", f"{LEDGER}?limit=%EF%BC%95", 422),
    Case("limit-empty", f"{LEDGER}?limit=", 422),
    Case("limit-bare", f"{LEDGER}?limit", 422),
    Case("limit-bool", f"{LEDGER}?limit=true", 422),
    Case("limit-json-array", f"{LEDGER}?limit=%5B1%5D", 422),
    Case("limit-json-operator", f"{LEDGER}?limit=%7B%22%24gt%22%3A0%7D", 422),
    Case("limit-nul", f"{LEDGER}?limit=5%00", 422),
    Case("limit-semicolon", f"{LEDGER}?limit=5;account=alice", 422),
    Case("limit-leading-zeros", f"{LEDGER}?limit=007", 200, check=entries_count(4)),
    Case("limit-encoded-digit", f"{LEDGER}?limit=%32", 200, check=entries_count(2)),
    Case("limit-encoded-name", f"{LEDGER}?%6Cimit=1", 200, check=entries_count(1)),
    # -- before -------------------------------------------------------------------
    Case("before-zero", f"{LEDGER}?before=0", 422),
    Case("before-negative", f"{LEDGER}?before=-5", 422),
    Case("before-2**63", f"{LEDGER}?before=9223372036854775808", 422),
    Case("before-float", f"{LEDGER}?before=1.5", 422),
    Case("before-exponent", f"{LEDGER}?before=1e3", 422),
    Case("before-sql", f"{LEDGER}?before=1%20OR%201%3D1", 422),
    Case(
        "before-max-unknown",
        f"{LEDGER}?before=9223372036854775807",
        404,
        detail="ledger entry not found: 9223372036854775807",
    ),
    # -- since --------------------------------------------------------------------
    Case("since-word", f"{LEDGER}?since=yesterday", 422),
    Case("since-month-13", f"{LEDGER}?since=2024-13-01", 422),
    Case("since-unix-seconds", f"{LEDGER}?since=1700000000", 422),
    Case("since-overflow-east", f"{LEDGER}?since=0001-01-01T00:00:00%2B05:00", 422),
    Case(
        "since-overflow-west",
        f"{LEDGER}?since=9999-12-31T23:59:59-05:00",
        422,
        detail="since is out of the representable range: '9999-12-31T23:59:59-05:00'",
    ),
    Case("since-offset-99h", f"{LEDGER}?since=2024-01-01T00:00:00%2B99:00", 422),
    Case("since-unencoded-plus", f"{LEDGER}?since=2024-01-01T00:00:00+02:00", 422),
    Case("since-too-long", f"{LEDGER}?since=2024-01-01T00:00:00{'0' * 50}", 422),
    Case("since-nul", f"{LEDGER}?since=%00", 422),
    Case("since-sql", f"{LEDGER}?since=%27%20OR%201%3D1%20--", 422),
    Case("since-year-1", f"{LEDGER}?since=0001-01-01", 200, check=entries_count(4)),
    Case("since-year-9999", f"{LEDGER}?since=9999-12-31", 200, check=entries_count(0)),
    # -- account (query) ----------------------------------------------------------
    Case("account-sql-or", f"{LEDGER}?account=%27%20OR%20%271%27%3D%271", 404),
    Case(
        "account-sql-drop",
        f"{LEDGER}?account=alice%27%3B%20DROP%20TABLE%20token_ledger%3B%20--",
        404,
    ),
    Case("account-json-operator", f"{LEDGER}?account=%7B%22%24ne%22%3A%20null%7D", 404),
    Case("account-empty", f"{LEDGER}?account=", 422),
    Case("account-nul", f"{LEDGER}?account=al%00ice", 422),
    Case("account-overlong", f"{LEDGER}?account={'a' * 256}", 422),
    Case(
        "account-invalid-utf8",
        f"{LEDGER}?account=%FF%FE",
        422,
        detail="the query string is not valid UTF-8 once percent-decoded",
    ),
    Case("account-encoded-surrogate", f"{LEDGER}?account=%ED%A0%80", 422),
    Case("account-overlong-utf8", f"{LEDGER}?account=%C0%AF", 422),
    Case("account-system", f"{LEDGER}?account=system", 404),
    Case("account-slash", f"{LEDGER}?account=team%2Fbob", 200, check=entries_count(2)),
    # -- repeated and unknown parameters -----------------------------------------
    Case(
        "repeated-account",
        f"{LEDGER}?account=alice&account=team%2Fbob",
        422,
        detail="query parameter 'account' is given more than once",
    ),
    Case("repeated-limit-same", f"{LEDGER}?limit=5&limit=5", 422),
    Case("repeated-before", f"{LEDGER}?before=3&before=2", 422),
    Case(
        "unknown-typo",
        f"{LEDGER}?acount=alice",
        422,
        detail="unknown query parameter 'acount' (this endpoint takes: account, before, "
        "limit, since)",
    ),
    Case("unknown-long-name", f"{LEDGER}?{'x' * 5000}=1", 422),
    Case("unknown-on-supply", f"{SUPPLY}?foo=bar", 422),
    Case("unknown-on-balance", f"{BALANCE}alice?limit=5", 422),
    Case("invalid-utf8-name", f"{SUPPLY}?%FF=1", 422),
    # -- window_hours -------------------------------------------------------------
    Case("window-zero", f"{SUPPLY}?window_hours=0", 422),
    Case("window-negative", f"{SUPPLY}?window_hours=-1", 422),
    Case("window-too-big", f"{SUPPLY}?window_hours=8761", 422),
    Case("window-1e309", f"{SUPPLY}?window_hours=1e309", 422),
    Case("window-nan", f"{SUPPLY}?window_hours=NaN", 422),
    Case("window-inf", f"{SUPPLY}?window_hours=inf", 422),
    Case("window-hex", f"{SUPPLY}?window_hours=0x10", 422),
    Case("window-float", f"{SUPPLY}?window_hours=24.0", 422),
    Case("window-underscore", f"{SUPPLY}?window_hours=1_000", 422),
    Case("window-huge", f"{SUPPLY}?window_hours={'9' * 30}", 422),
    Case("window-max", f"{SUPPLY}?window_hours=8760", 200, check=is_supply),
    # -- the balance path ---------------------------------------------------------
    Case("path-dotdot-normalised", f"{BALANCE}../supply", 200, check=is_supply),
    Case(
        "path-encoded-traversal",
        f"{BALANCE}..%2F..%2Fetc%2Fpasswd",
        404,
        detail="account not found: '../../etc/passwd'",
    ),
    Case("path-encoded-dotdot", f"{BALANCE}%2e%2e", 404, detail="account not found: '..'"),
    Case("path-encoded-dotdot-supply", f"{BALANCE}%2e%2e%2fsupply", 404),
    Case("path-nul", f"{BALANCE}alice%00", 422),
    Case("path-overlong", f"{BALANCE}{'x' * 256}", 422),
    Case("path-very-long", f"{BALANCE}{'x' * 60_000}", 422),
    Case(
        "path-invalid-utf8",
        f"{BALANCE}%FF",
        422,
        detail="the path is not valid UTF-8 once percent-decoded",
    ),
    Case("path-overlong-utf8-slash", f"{BALANCE}%C0%AF", 422),
    Case("path-encoded-surrogate", f"{BALANCE}%ED%B2%80", 422),
    Case("path-sql", f"{BALANCE}%27%20OR%201%3D1%20--", 404),
    Case("path-json", f"{BALANCE}%7B%22%24ne%22%3Anull%7D", 404),
    Case("path-system", f"{BALANCE}system", 404),
    Case("path-escrow", f"{BALANCE}system:escrow", 404),
    Case("path-trailing-space", f"{BALANCE}alice%20", 404),
    Case("path-other-case", f"{BALANCE}ALICE", 404),
    Case("path-trailing-slash", f"{BALANCE}alice/", 404),
    Case("path-emoji", f"{BALANCE}%F0%9F%98%80", 404),
    Case("path-empty", BALANCE, 422),
    Case(
        "path-raw-slash-id",
        f"{BALANCE}team/bob",
        200,
        check=lambda body: body["balance"] == "52.000000",
    ),
    # -- stakes -------------------------------------------------------------------
    Case("stakes-no-account", STAKES, 422),
    Case("stakes-open-only-word", f"{STAKES}?account=alice&open_only=maybe", 422),
    Case("stakes-open-only-2", f"{STAKES}?account=alice&open_only=2", 422),
    Case("stakes-open-only-empty", f"{STAKES}?account=alice&open_only=", 422),
    Case("stakes-unknown-account", f"{STAKES}?account=nobody", 404),
    Case("stakes-nul", f"{STAKES}?account=%00", 422),
    Case(
        "stakes-open-only-upper",
        f"{STAKES}?account=alice&open_only=FALSE",
        200,
        check=lambda body: [s["status"] for s in body["stakes"]] == ["open"],
    ),
    # -- methods: the API only reads ---------------------------------------------
    Case("post-supply", SUPPLY, 405, method="POST"),
    Case("put-ledger", LEDGER, 405, method="PUT"),
    Case("delete-balance", f"{BALANCE}alice", 405, method="DELETE"),
    Case("patch-stakes", f"{STAKES}?account=alice", 405, method="PATCH"),
]


def populate(ledger: Ledger) -> None:
    ledger.create_account("alice", 100)
    ledger.create_account("team/bob", 50)
    ledger.transfer("alice", "team/bob", 2, "pay")
    ledger.stake("alice", 10, "bet")


@pytest.fixture
def client(ledger: Ledger) -> TestClient:
    populate(ledger)
    return TestClient(create_app(ledger))


def test_there_are_at_least_forty_distinct_cases() -> None:
    assert len({case.name for case in CASES}) == len(CASES)
    assert len({(case.method, case.url) for case in CASES}) == len(CASES)
    assert sum(case.status >= 400 for case in CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_request(client: TestClient, snapshot: Snapshot, case: Case) -> None:
    before = snapshot()
    response = client.request(case.method, case.url)
    assert response.status_code == case.status, response.text
    body = response.json()
    if case.status == 200:
        assert case.check is not None
        assert case.check(body), body
    else:
        assert set(body) == {"detail"}
        assert isinstance(body["detail"], str)
        assert body["detail"]
        if case.detail is not None:
            assert body["detail"] == case.detail
    assert snapshot() == before


# -- fuzzing -----------------------------------------------------------------------

OFFSETS = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 1),  # noqa: DTZ001  # bounds of a strategy, zones come from OFFSETS
    max_value=datetime(9999, 12, 31),  # noqa: DTZ001  # same
    timezones=st.none() | OFFSETS,
).map(lambda moment: moment.isoformat())
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(repr),
    st.sampled_from(["-0", "+1", "1e309", "NaN", "inf", "0x10", "1_000", " 7", "7 ", "0007"]),
)
VALUES = st.one_of(
    st.text(max_size=80),
    NUMBERS,
    MOMENTS,
    st.sampled_from(["alice", "team/bob", "system", "nobody", "", "true", "1", "3"]),
)
NAMES = st.sampled_from(["account", "limit", "since", "before", "window_hours"]) | st.text(
    max_size=12
)
PARAMS = st.lists(st.tuples(NAMES, VALUES), max_size=5)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_answered(response: Any) -> None:
    assert response.status_code in {200, 404, 422}, (response.status_code, response.text)
    body = response.json()
    if response.status_code != 200:
        assert set(body) == {"detail"}
        assert isinstance(body["detail"], str)


@pytest.fixture
def baseline(client: TestClient, snapshot: Snapshot) -> dict[str, list[tuple[Any, ...]]]:
    return snapshot()


@FUZZ
@given(path=st.sampled_from([LEDGER, SUPPLY]), params=PARAMS)
def test_fuzz_query_parameters(
    client: TestClient,
    snapshot: Snapshot,
    baseline: dict[str, list[tuple[Any, ...]]],
    path: str,
    params: list[tuple[str, str]],
) -> None:
    response = client.get(path, params=params)
    assert_answered(response)
    if response.status_code == 200:
        body = response.json()
        if path == LEDGER:
            ids = [entry["id"] for entry in body["entries"]]
            assert len(ids) == len(set(ids))
            assert len(ids) <= 50 or any(name == "limit" for name, _ in params)
        else:
            assert body["total_supply"] == "150.000000"
    assert snapshot() == baseline


@FUZZ
@given(path=st.sampled_from([LEDGER, SUPPLY]), raw=st.binary(max_size=60))
def test_fuzz_raw_query_strings(
    client: TestClient,
    snapshot: Snapshot,
    baseline: dict[str, list[tuple[Any, ...]]],
    path: str,
    raw: bytes,
) -> None:
    """Arbitrary bytes, percent-encoded, as the whole query string."""
    response = client.get(f"{path}?{quote_from_bytes(raw, safe='=&;')}")
    assert_answered(response)
    assert snapshot() == baseline


@FUZZ
@given(agent_id=st.text(max_size=300) | st.binary(max_size=40))
def test_fuzz_balance_path(
    client: TestClient,
    snapshot: Snapshot,
    baseline: dict[str, list[tuple[Any, ...]]],
    agent_id: str | bytes,
) -> None:
    encoded = (
        quote_from_bytes(agent_id, safe="")
        if isinstance(agent_id, bytes)
        else quote(agent_id, safe="")
    )
    response = client.get(BALANCE + encoded.replace(".", "%2E"))
    assert_answered(response)
    if response.status_code == 200:
        assert response.json()["account_id"] in {"alice", "team/bob"}
    assert snapshot() == baseline
