"""The HTTP interface (``tokenledger.api``) on SQLite and PostgreSQL.

Every endpoint is called through FastAPI's ``TestClient`` against a real
ledger; the tests assert status codes and exact bodies, and that reads write
nothing.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from tokenledger import Ledger
from tokenledger.api import MAX_ENTRY_ID, create_app, create_router

Snapshot = Callable[[], dict[str, list[tuple[Any, ...]]]]

AMOUNT_FIELDS = ("balance", "total_earned", "total_spent", "total_staked")


@pytest.fixture
def client(ledger: Ledger) -> TestClient:
    return TestClient(create_app(ledger))


def balance_path(agent_id: str) -> str:
    """The balance URL of ``agent_id``, every reserved character percent-encoded.

    Dots are encoded too: an id that is exactly "." or ".." would otherwise be
    a dot segment, which HTTP clients remove from paths before sending.
    """
    return "/api/token/balance/" + quote(agent_id, safe="").replace(".", "%2E")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0), f"not UTC: {text}"
    return moment


# -- GET /api/token/balance/{agent_id} ------------------------------------------


def test_balance_returns_the_account_with_amounts_as_strings(
    ledger: Ledger, client: TestClient
) -> None:
    ledger.create_account("alice", "12.5")
    ledger.create_account("bob", 0)
    ledger.transfer("alice", "bob", "2.25", "lunch")
    ledger.stake("alice", 3, "bet")

    response = client.get("/api/token/balance/alice")
    assert response.status_code == 200
    body = response.json()
    account = ledger.get_account("alice")
    assert body == {
        "account_id": "alice",
        "balance": "7.250000",
        "total_earned": "12.500000",
        "total_spent": "2.250000",
        "total_staked": "3.000000",
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
    }
    assert parse_time(body["created_at"]) == account.created_at
    assert parse_time(body["updated_at"]) == account.updated_at
    assert body["created_at"].endswith("Z")

    bob = client.get("/api/token/balance/bob").json()
    assert {name: bob[name] for name in AMOUNT_FIELDS} == {
        "balance": "2.250000",
        "total_earned": "2.250000",
        "total_spent": "0.000000",
        "total_staked": "0.000000",
    }


def test_balance_keeps_every_digit_of_a_large_amount(ledger: Ledger, client: TestClient) -> None:
    ledger.create_account("whale", "9000000000000.000001")  # beyond a double's 15-16 digits
    body = client.get("/api/token/balance/whale").json()
    assert body["balance"] == "9000000000000.000001"
    assert Decimal(body["balance"]) == ledger.get_balance("whale")


@pytest.mark.parametrize(
    "agent_id",
    [
        "team/alice",
        "a/b/c/",
        "/leading-slash",
        "with space",
        "50%",
        "q?x=1&y=2#frag",
        "plus+sign",
        "ünïcödé-agent",
        "emoji-\U0001f916",
        "back\\slash",
        "semi;colon,comma",
        "..",
        "a/./b/../c",
        "x" * 255,
    ],
)
def test_balance_reaches_ids_with_odd_characters(
    ledger: Ledger, client: TestClient, agent_id: str
) -> None:
    ledger.create_account(agent_id, 7)
    response = client.get(balance_path(agent_id))
    assert response.status_code == 200, response.text
    assert response.json()["account_id"] == agent_id
    assert response.json()["balance"] == "7.000000"


def test_balance_round_trips_odd_ids_over_a_real_server(ledger: Ledger) -> None:
    """Through uvicorn, which percent-decodes a path exactly once.

    Starlette's TestClient decodes paths twice (httpx, then ``unquote``), so
    ids holding a literal percent-escape such as "%2F" are checked here.
    """
    ids = ["%2F-literal", "%41%42", "100%25 sure", "team/alice", "..", "ü/%"]
    for agent_id in ids:
        ledger.create_account(agent_id, 2)
    with serve(create_app(ledger)) as base, httpx.Client(base_url=base) as http:
        for agent_id in ids:
            response = http.get(balance_path(agent_id))
            assert response.status_code == 200, (agent_id, response.text)
            assert response.json()["account_id"] == agent_id
        assert http.get("/api/token/balance/%41%42").status_code == 404  # that is "AB"
        invalid = http.get("/api/token/balance/%FF%FE")
        assert invalid.status_code == 422
        assert invalid.json() == {"detail": "the path is not valid UTF-8 once percent-decoded"}
        page = http.get("/api/token/ledger", params={"account": "%2F-literal"}).json()
        assert [e["to_account"] for e in page["entries"]] == ["%2F-literal"]


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server on a free local port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            assert time.monotonic() < deadline, "uvicorn did not start in time"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_balance_path_converter_takes_slashes_raw_or_encoded(
    ledger: Ledger, client: TestClient
) -> None:
    ledger.create_account("team/alice", 5)
    for path in ("/api/token/balance/team/alice", "/api/token/balance/team%2Falice"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json()["account_id"] == "team/alice"


@pytest.mark.parametrize("agent_id", ["nobody", "system", "system:escrow", "ALICE", "alice "])
def test_balance_of_an_unknown_account_is_404(
    ledger: Ledger, client: TestClient, agent_id: str
) -> None:
    ledger.create_account("alice", 1)
    response = client.get(balance_path(agent_id))
    assert response.status_code == 404
    assert response.json() == {"detail": f"account not found: {agent_id!r}"}


def test_balance_of_an_overlong_id_is_422(client: TestClient) -> None:
    response = client.get(balance_path("x" * 256))
    assert response.status_code == 422
    assert response.json() == {
        "detail": "path parameter 'agent_id': String should have at most 255 characters"
    }


# -- GET /api/token/supply --------------------------------------------------------


def build_small_economy(ledger: Ledger) -> None:
    """Four accounts, every kind of movement; the figures are worked out in the test."""
    ledger.create_account("alice", 100)  # mint 100
    ledger.create_account("bob", 50)  # mint 50
    ledger.create_account("carol", 0)  # no entry
    ledger.create_account("dave", 0)  # no entry, holds nothing to the end
    ledger.transfer("alice", "bob", 20, "trade")  # alice 80, bob 70
    ledger.transfer("bob", "carol", 5, "trade")  # bob 65, carol 5
    ledger.mint("carol", 10, "grant")  # carol 15
    ledger.burn("bob", 15, "fee")  # bob 50
    stake = ledger.stake("alice", 30, "bet")  # alice 50 available, 30 staked
    # 10 of the stake to bob (a transfer), the other 20 back to alice (not one).
    ledger.settle(stake.id, "bob", "lost bet", amount=10)  # alice 70, bob 60
    ledger.stake("bob", 12, "open bet")  # bob 48 available, 12 staked


def test_supply_over_a_small_economy_matches_hand_computed_figures(
    ledger: Ledger, client: TestClient
) -> None:
    build_small_economy(ledger)
    response = client.get("/api/token/supply")
    assert response.status_code == 200
    body = response.json()

    # minted = 100 + 50 + 10 = 160; burned = 15; total = 160 - 15 = 145.
    # Holdings (balance + staked): alice 70, bob 48 + 12 = 60, carol 15, dave 0,
    # and 70 + 60 + 15 + 0 = 145 as conservation demands.
    # circulating = 70 + 48 + 15 + 0 = 133; staked = 12.
    assert {k: body[k] for k in ("total_supply", "minted", "burned", "circulating", "staked")} == {
        "total_supply": "145.000000",
        "minted": "160.000000",
        "burned": "15.000000",
        "circulating": "133.000000",
        "staked": "12.000000",
    }
    assert (body["holders"], body["accounts"]) == (3, 4)  # dave holds nothing

    velocity = body["velocity"]
    start, end = parse_time(velocity["window_start"]), parse_time(velocity["window_end"])
    assert end - start == timedelta(hours=24)
    assert velocity["window_hours"] == 24
    # Transfers between accounts in the window: 20 (alice->bob) + 5 (bob->carol)
    # + 10 (alice's stake paid to bob) = 35; the 20 returned to alice is not one.
    # velocity = 35 / 145 = 0.2413793... -> 0.241379.
    # Entries: 2 initial mints + 2 transfers + 1 mint + 1 burn + 1 stake
    # + 2 settle legs (to bob, back to alice) + 1 stake = 10.
    # Staked in the window: 30 + 12 = 42.
    assert {k: v for k, v in velocity.items() if not k.startswith("window")} == {
        "transfer_volume": "35.000000",
        "velocity": "0.241379",
        "minted": "160.000000",
        "burned": "15.000000",
        "staked": "42.000000",
        "entries": 10,
    }

    # Gini over the 4 accounts' holdings sorted ascending x = (0, 15, 60, 70),
    # weights (2i - n - 1) = (-3, -1, 1, 3):
    # sum = -3*0 - 1*15 + 1*60 + 3*70 = 255; gini = 255 / (n * total) = 255 / 580
    # = 0.4396551... -> 0.439655.
    # Nearest-rank percentiles, rank = ceil(p * n / 100): p50 -> rank 2 = 15,
    # p90 -> ceil(3.6) = 4 -> 70, p99 -> ceil(3.96) = 4 -> 70.
    # Shares: 70/145 = 0.4827586 -> 0.482759; 60/145 = 0.4137931 -> 0.413793;
    # 15/145 = 0.1034482 -> 0.103448. dave (0) is not a holder.
    assert body["distribution"] == {
        "gini": "0.439655",
        "top_holders": [
            {"account_id": "alice", "holdings": "70.000000", "share": "0.482759"},
            {"account_id": "bob", "holdings": "60.000000", "share": "0.413793"},
            {"account_id": "carol", "holdings": "15.000000", "share": "0.103448"},
        ],
        "percentiles": {"p50": "15.000000", "p90": "70.000000", "p99": "70.000000"},
    }
    assert Decimal(body["total_supply"]) == ledger.get_total_supply()


def test_supply_of_an_empty_ledger_is_all_zeros(client: TestClient) -> None:
    body = client.get("/api/token/supply?window_hours=1").json()
    zero = "0.000000"
    assert (body["total_supply"], body["minted"], body["burned"]) == (zero, zero, zero)
    assert (body["holders"], body["accounts"]) == (0, 0)
    assert body["velocity"]["velocity"] == zero
    assert body["velocity"]["entries"] == 0
    assert body["velocity"]["window_hours"] == 1
    assert body["distribution"] == {
        "gini": zero,
        "top_holders": [],
        "percentiles": {"p50": zero, "p90": zero, "p99": zero},
    }


def test_supply_window_hours_sets_the_window(ledger: Ledger, client: TestClient) -> None:
    ledger.create_account("alice", 10)
    for hours in (1, 168, 8760):
        velocity = client.get(f"/api/token/supply?window_hours={hours}").json()["velocity"]
        start, end = parse_time(velocity["window_start"]), parse_time(velocity["window_end"])
        assert end - start == timedelta(hours=hours)
        assert velocity["window_hours"] == hours
        assert velocity["minted"] == "10.000000"  # the mint just now is inside every window


# -- GET /api/token/ledger --------------------------------------------------------


def test_ledger_lists_entries_newest_first_with_every_field(
    ledger: Ledger, client: TestClient
) -> None:
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    transfer = ledger.transfer(
        "alice", "bob", "12.5", "payment", "invoice", "inv-7", "thanks", idempotency_key="k-1"
    )
    stake = ledger.stake("bob", "2.5", "bet")
    response = client.get("/api/token/ledger", params={"account": "bob"})
    assert response.status_code == 200
    body = response.json()
    assert body["next_before"] is None
    stake_entry, transfer_entry = body["entries"]
    assert transfer_entry == {
        "id": transfer.id,
        "timestamp": transfer_entry["timestamp"],
        "from_account": "alice",
        "to_account": "bob",
        "amount": "12.500000",
        "reason": "payment",
        "reference_type": "invoice",
        "reference_id": "inv-7",
        "memo": "thanks",
        "balance_after_from": "87.500000",
        "balance_after_to": "12.500000",
        "stake_id": None,
        "reverses_entry_id": None,
        "tx_hash": None,  # until the chain bridge pushes it (tests/test_chain_bridge.py)
    }
    assert parse_time(transfer_entry["timestamp"]) == transfer.timestamp
    assert "idempotency_key" not in transfer_entry  # a writer's retry token, not published
    assert stake_entry["from_account"] == "bob"
    assert stake_entry["to_account"] == "system:escrow"
    assert stake_entry["stake_id"] == stake.id
    assert (stake_entry["balance_after_from"], stake_entry["balance_after_to"]) == (
        "10.000000",
        None,
    )

    everything = client.get("/api/token/ledger").json()["entries"]
    assert [e["id"] for e in everything] == [stake_entry["id"], transfer.id, 1]
    mint = everything[-1]
    assert (mint["from_account"], mint["to_account"], mint["amount"]) == (
        "system",
        "alice",
        "100.000000",
    )
    assert (mint["balance_after_from"], mint["balance_after_to"]) == (None, "100.000000")


def test_ledger_shows_a_reversal_link(ledger: Ledger, client: TestClient) -> None:
    ledger.create_account("alice", 10)
    ledger.create_account("bob", 0)
    original = ledger.transfer("alice", "bob", 4, "oops")
    reversal = ledger.reverse(original.id, "correction")
    newest = client.get("/api/token/ledger?account=alice&limit=1").json()
    assert newest["entries"][0]["id"] == reversal.id
    assert newest["entries"][0]["reverses_entry_id"] == original.id
    assert newest["entries"][0]["balance_after_to"] == "10.000000"
    assert newest["next_before"] == reversal.id


def test_ledger_of_an_unknown_account_is_404(ledger: Ledger, client: TestClient) -> None:
    ledger.create_account("alice", 1)
    for account in ("nobody", "system"):
        response = client.get("/api/token/ledger", params={"account": account})
        assert response.status_code == 404
        assert response.json() == {"detail": f"account not found: {account!r}"}


def test_ledger_with_an_unknown_cursor_is_404(ledger: Ledger, client: TestClient) -> None:
    ledger.create_account("alice", 1)
    for query in ("before=2", "account=alice&before=2", f"before={MAX_ENTRY_ID}"):
        response = client.get(f"/api/token/ledger?{query}")
        assert response.status_code == 404
        assert response.json()["detail"].startswith("ledger entry not found: ")


def test_ledger_since_keeps_entries_at_or_after_it(ledger: Ledger, client: TestClient) -> None:
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    entries = [ledger.transfer("alice", "bob", n, f"t{n}") for n in range(1, 6)]
    cut = entries[2].timestamp
    expected = [e.id for e in ledger.get_statement("alice", since=cut)]
    assert expected == [entries[4].id, entries[3].id, entries[2].id]
    for since in (cut.isoformat(), cut.isoformat().replace("+00:00", "Z")):
        body = client.get("/api/token/ledger", params={"account": "alice", "since": since}).json()
        assert [e["id"] for e in body["entries"]] == expected
    # The same moment two hours east of UTC, and a naive time taken as UTC.
    shifted = cut.astimezone(UTC).replace(tzinfo=None)
    east = (cut + timedelta(hours=2)).replace(tzinfo=None).isoformat() + "+02:00"
    for since in (east, shifted.isoformat()):
        body = client.get("/api/token/ledger", params={"since": since}).json()
        assert [e["id"] for e in body["entries"]] == expected
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert client.get("/api/token/ledger", params={"since": future}).json() == {
        "entries": [],
        "next_before": None,
    }
    assert len(client.get("/api/token/ledger?since=2000-01-01").json()["entries"]) == 6


def write_history(ledger: Ledger) -> None:
    """alice: 1 mint + 129 transfers = 130 entries; bob and carol have more of their own."""
    for name in ("alice", "bob", "carol"):
        ledger.create_account(name, 1000)
    for i in range(129):
        amount = Decimal(i + 1) / 100
        if i % 3 == 0:
            ledger.transfer("alice", "bob", amount, "a->b")
        elif i % 3 == 1:
            ledger.transfer("bob", "alice", amount, "b->a")
        else:
            ledger.transfer("carol", "alice", amount, "c->a")
        if i % 10 == 0:
            ledger.transfer("bob", "carol", amount, "b->c")  # not alice's


def walk(client: TestClient, limit: int, **params: str) -> list[list[int]]:
    """Every page's entry ids, following next_before until it is null."""
    pages: list[list[int]] = []
    query: dict[str, str | int] = {"limit": limit, **params}
    while True:
        response = client.get("/api/token/ledger", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([e["id"] for e in body["entries"]])
        assert len(pages) < 1000, "pagination does not end"
        if body["next_before"] is None:
            return pages
        assert body["next_before"] == body["entries"][-1]["id"]
        query["before"] = body["next_before"]


def test_ledger_pages_through_a_long_history_without_gaps_or_repeats(
    ledger: Ledger, client: TestClient
) -> None:
    write_history(ledger)
    expected = [e.id for e in ledger.get_statement("alice")]
    assert len(expected) == 130

    pages = walk(client, 7, account="alice")
    ids = [entry_id for page in pages for entry_id in page]
    assert ids == expected  # same entries, same order: nothing skipped or repeated
    assert len(pages) == 19  # ceil(130 / 7)
    assert [len(page) for page in pages] == [7] * 18 + [4]

    # A page size that divides the history: the last full page says it is the last.
    pages = walk(client, 10, account="alice")
    assert [len(page) for page in pages] == [10] * 13
    assert [entry_id for page in pages for entry_id in page] == expected


def test_ledger_pages_through_the_whole_journal(ledger: Ledger, client: TestClient) -> None:
    write_history(ledger)
    total = 3 + 129 + 13  # mints, transfers, bob->carol every tenth step
    pages = walk(client, 7)
    ids = [entry_id for page in pages for entry_id in page]
    assert ids == list(range(total, 0, -1))
    assert len(pages) == -(-total // 7)
    assert walk(client, 1000) == [list(range(total, 0, -1))]


def test_ledger_pages_with_since_and_cursor_together(ledger: Ledger, client: TestClient) -> None:
    write_history(ledger)
    statement = ledger.get_statement("alice")
    cut = statement[60].timestamp
    expected = [e.id for e in ledger.get_statement("alice", since=cut)]
    pages = walk(client, 9, account="alice", since=cut.isoformat())
    assert [entry_id for page in pages for entry_id in page] == expected


def test_ledger_limit_defaults_to_50(ledger: Ledger, client: TestClient) -> None:
    write_history(ledger)
    body = client.get("/api/token/ledger?account=carol").json()
    assert len(body["entries"]) == 50
    assert body["next_before"] == body["entries"][-1]["id"]


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=0", "query parameter 'limit': Input should be greater than or equal to 1"),
        ("limit=1001", "query parameter 'limit': Input should be less than or equal to 1000"),
        (
            "limit=-3",
            "query parameter 'limit': Value error, must be a whole number written "
            "with the digits 0-9 only",
        ),
        (
            "limit=ten",
            "query parameter 'limit': Value error, must be a whole number written "
            "with the digits 0-9 only",
        ),
        ("since=yesterday", "since is not an ISO-8601 time: 'yesterday'"),
        ("since=2026-02-30", "since is not an ISO-8601 time: '2026-02-30'"),
        ("before=0", "query parameter 'before': Input should be greater than or equal to 1"),
        (
            "before=abc",
            "query parameter 'before': Value error, must be a whole number written "
            "with the digits 0-9 only",
        ),
        (
            "before=9223372036854775808",
            "query parameter 'before': Input should be less than or equal to 9223372036854775807",
        ),
        ("account=", "query parameter 'account': String should have at least 1 character"),
    ],
)
def test_ledger_rejects_bad_parameters_with_422(
    ledger: Ledger, client: TestClient, snapshot: Snapshot, query: str, detail: str
) -> None:
    ledger.create_account("alice", 1)
    before = snapshot()
    response = client.get(f"/api/token/ledger?{query}")
    assert response.status_code == 422
    assert response.json() == {"detail": detail}
    assert snapshot() == before


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("window_hours=0", "Input should be greater than or equal to 1"),
        ("window_hours=8761", "Input should be less than or equal to 8760"),
        (
            "window_hours=1.5",
            "Value error, must be a whole number written with the digits 0-9 only",
        ),
        ("window_hours=", "Value error, must be a whole number written with the digits 0-9 only"),
    ],
)
def test_supply_rejects_bad_window_hours_with_422(
    client: TestClient, query: str, detail: str
) -> None:
    response = client.get(f"/api/token/supply?{query}")
    assert response.status_code == 422
    assert response.json() == {"detail": f"query parameter 'window_hours': {detail}"}


# -- GET /api/token/stakes --------------------------------------------------------


def test_stakes_lists_open_or_all_stakes(ledger: Ledger, client: TestClient) -> None:
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 0)
    expiry = datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    open_stake = ledger.stake("alice", "10.5", "bet", "market", "m-1", "sure", expires_at=expiry)
    released = ledger.stake("alice", 5, "hedge")
    ledger.release(released.id, "changed mind")
    settled = ledger.stake("alice", 3, "wager")
    ledger.settle(settled.id, "bob", "lost")

    response = client.get("/api/token/stakes?account=alice")
    assert response.status_code == 200
    body = response.json()
    (only,) = body["stakes"]
    assert only == {
        "id": open_stake.id,
        "account_id": "alice",
        "amount": "10.500000",
        "status": "open",
        "reason": "bet",
        "reference_type": "market",
        "reference_id": "m-1",
        "memo": "sure",
        "expires_at": "2099-01-02T03:04:05Z",
        "created_at": only["created_at"],
        "closed_at": None,
    }
    assert parse_time(only["created_at"]) == open_stake.created_at

    every = client.get("/api/token/stakes?account=alice&open_only=false").json()["stakes"]
    assert [(s["id"], s["status"], s["amount"]) for s in every] == [
        (open_stake.id, "open", "10.500000"),
        (released.id, "released", "5.000000"),
        (settled.id, "settled", "3.000000"),
    ]
    assert all(s["closed_at"] is not None for s in every[1:])
    assert client.get("/api/token/stakes?account=bob").json() == {"stakes": [], "next_after": None}


def test_stakes_page_to_the_end(ledger: Ledger, client: TestClient) -> None:
    ledger.create_account("alice", 100)
    made = [ledger.stake("alice", 1, f"bid {i}").id for i in range(5)]
    seen: list[int] = []
    url = "/api/token/stakes?account=alice&limit=2"
    while True:
        body = client.get(url).json()
        seen += [s["id"] for s in body["stakes"]]
        if body["next_after"] is None:
            break
        url = f"/api/token/stakes?account=alice&limit=2&after={body['next_after']}"
    assert seen == made
    assert len(client.get("/api/token/stakes?account=alice").json()["stakes"]) == 5


def test_stakes_errors(ledger: Ledger, client: TestClient) -> None:
    ledger.create_account("alice", 1)
    unknown = client.get("/api/token/stakes?account=nobody")
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "account not found: 'nobody'"}
    missing = client.get("/api/token/stakes")
    assert missing.status_code == 422
    assert missing.json() == {"detail": "query parameter 'account': Field required"}
    bad = client.get("/api/token/stakes?account=alice&open_only=perhaps")
    assert bad.status_code == 422
    assert bad.json() == {
        "detail": "query parameter 'open_only': Input should be a valid boolean, "
        "unable to interpret input"
    }
    for query in ("limit=0", "limit=1001", "limit=x", "after=0", "after=-1", "after=1.5"):
        response = client.get(f"/api/token/stakes?account=alice&{query}")
        assert response.status_code == 422, query
    unknown_cursor = client.get("/api/token/stakes?account=alice&after=999")
    assert unknown_cursor.status_code == 404
    assert unknown_cursor.json() == {"detail": "stake not found: 999"}


# -- errors, mounting, OpenAPI, no writes ------------------------------------------


def test_an_unreachable_database_is_503_without_leaking_details(database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        missing = url.set(database="/nonexistent-dir/for/tokenledger/ledger.db")
    else:
        missing = url.set(database="tokenledger_no_such_database")
    ledger = Ledger.from_url(missing.render_as_string(hide_password=False))
    try:
        client = TestClient(create_app(ledger))
        for path in (
            "/api/token/balance/alice",
            "/api/token/supply",
            "/api/token/ledger",
            "/api/token/stakes?account=alice",
        ):
            response = client.get(path)
            assert response.status_code == 503
            assert response.json() == {
                "detail": "the ledger's database is unavailable; retry later"
            }
            assert response.headers["retry-after"] == "1"
    finally:
        ledger.dispose()


def test_router_mounts_inside_a_host_app_beside_its_own_routes(ledger: Ledger) -> None:
    ledger.create_account("alice", 3)
    host = FastAPI(title="host")

    @host.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @host.get("/api/token/host-extra")
    def extra(n: int) -> dict[str, int]:
        return {"n": n}

    @host.exception_handler(RequestValidationError)
    async def host_format(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"host_error": len(exc.errors())}, status_code=400)

    host.include_router(create_router(ledger))
    host.include_router(create_router(ledger), prefix="/v2")
    client = TestClient(host)

    assert client.get("/health").json() == {"ok": True}
    assert client.get("/api/token/host-extra?n=4").json() == {"n": 4}
    assert client.get("/api/token/balance/alice").json()["balance"] == "3.000000"
    assert client.get("/v2/api/token/balance/alice").json()["balance"] == "3.000000"
    assert client.get("/api/token/supply").json()["total_supply"] == "3.000000"
    # The host's own error format applies to its routes; the ledger's keeps {"detail": ...}.
    host_bad = client.get("/api/token/host-extra?n=x")
    assert (host_bad.status_code, host_bad.json()) == (400, {"host_error": 1})
    ledger_bad = client.get("/api/token/ledger?limit=0")
    assert ledger_bad.status_code == 422
    assert set(ledger_bad.json()) == {"detail"}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. duplicate operation ids across the two mounts
        paths = set(client.get("/openapi.json").json()["paths"])
    assert {"/health", "/api/token/supply", "/v2/api/token/supply"} <= paths


def test_strict_query_can_be_turned_off_for_hosts_that_add_parameters(ledger: Ledger) -> None:
    ledger.create_account("alice", 3)
    strict = TestClient(create_app(ledger))
    lenient = TestClient(create_app(ledger, strict_query=False))
    assert strict.get("/api/token/supply?api_key=x").status_code == 422
    response = lenient.get("/api/token/supply?api_key=x")
    assert response.status_code == 200
    assert response.json()["total_supply"] == "3.000000"


def test_openapi_describes_every_endpoint(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["info"]["title"] == "tokenledger"
    assert doc["info"]["version"] == "0.1.0"
    assert "exact decimals" in doc["info"]["description"]
    paths = doc["paths"]
    assert set(paths) == {
        "/api/token/balance/{agent_id}",
        "/api/token/supply",
        "/api/token/ledger",
        "/api/token/stakes",
        "/api/token/events",
        "/api/token/events/stream",
    }

    def parameters(path: str) -> dict[str, dict[str, Any]]:
        assert set(paths[path]) == {"get"}  # reads only
        return {p["name"]: p for p in paths[path]["get"].get("parameters", [])}

    balance = parameters("/api/token/balance/{agent_id}")
    assert balance["agent_id"]["in"] == "path"
    assert balance["agent_id"]["required"] is True
    assert balance["agent_id"]["schema"]["maxLength"] == 255

    supply = parameters("/api/token/supply")
    assert supply["window_hours"]["in"] == "query"
    assert {k: supply["window_hours"]["schema"][k] for k in ("type", "minimum", "maximum")} == {
        "type": "integer",
        "minimum": 1,
        "maximum": 8760,
    }
    assert supply["window_hours"]["schema"]["default"] == 24

    ledger_params = parameters("/api/token/ledger")
    assert set(ledger_params) == {"account", "limit", "since", "before"}
    limit = ledger_params["limit"]["schema"]
    assert (limit["type"], limit["minimum"], limit["maximum"], limit["default"]) == (
        "integer",
        1,
        1000,
        50,
    )
    assert ledger_params["before"]["schema"]["anyOf"][0]["minimum"] == 1
    assert not any(p["required"] for p in ledger_params.values())

    stakes = parameters("/api/token/stakes")
    assert stakes["account"]["required"] is True
    assert stakes["open_only"]["schema"]["default"] is True
    assert stakes["limit"]["schema"]["default"] == 50
    assert stakes["after"]["schema"]["anyOf"][0]["minimum"] == 1

    expected_models = {
        "/api/token/balance/{agent_id}": "AccountOut",
        "/api/token/supply": "SupplyOut",
        "/api/token/ledger": "LedgerPageOut",
        "/api/token/stakes": "StakesOut",
    }
    for path, model in expected_models.items():
        responses = paths[path]["get"]["responses"]
        ok = responses["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model}"}
        for status in ("422", "503"):
            error = responses[status]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorOut"}
    assert "404" not in paths["/api/token/supply"]["get"]["responses"]
    assert "404" in paths["/api/token/ledger"]["get"]["responses"]

    schemas = doc["components"]["schemas"]
    assert schemas["AccountOut"]["properties"]["balance"]["type"] == "string"
    assert schemas["AccountOut"]["properties"]["created_at"]["format"] == "date-time"
    assert schemas["SupplyOut"]["properties"]["velocity"] == {
        "$ref": "#/components/schemas/VelocityOut"
    }
    assert set(schemas["VelocityOut"]["properties"]) == {
        "window_start",
        "window_end",
        "window_hours",
        "transfer_volume",
        "velocity",
        "minted",
        "burned",
        "staked",
        "entries",
    }
    assert set(schemas["PercentilesOut"]["properties"]) == {"p50", "p90", "p99"}
    assert schemas["LedgerPageOut"]["required"] == ["entries", "next_before"]
    assert schemas["ErrorOut"]["properties"]["detail"]["type"] == "string"


def test_reads_write_nothing(ledger: Ledger, client: TestClient, snapshot: Snapshot) -> None:
    build_small_economy(ledger)
    before = snapshot()
    for path in (
        "/api/token/balance/alice",
        "/api/token/balance/nobody",
        "/api/token/supply",
        "/api/token/supply?window_hours=8760",
        "/api/token/ledger",
        "/api/token/ledger?account=bob&limit=2&before=9",
        "/api/token/ledger?since=2000-01-01T00:00:00Z",
        "/api/token/stakes?account=alice&open_only=false",
        "/api/token/stakes?account=bob",
    ):
        assert client.get(path).status_code in {200, 404}
    assert snapshot() == before


def test_reads_see_only_committed_state(ledger: Ledger, client: TestClient) -> None:
    ledger.create_account("alice", 5)
    with ledger.transaction() as tx:
        tx.mint("alice", 7, "pending")
        # Another connection (the API's) does not see the uncommitted mint.
        assert client.get("/api/token/balance/alice").json()["balance"] == "5.000000"
    assert client.get("/api/token/balance/alice").json()["balance"] == "12.000000"


def test_import_without_fastapi_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None\n"
        "try:\n"
        "    import tokenledger.api\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'tokenledger[api]'" in result.stdout
