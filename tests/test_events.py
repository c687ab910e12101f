"""The event feed: every committed entry once, in one order that never changes.

On both backends: paging while writers write, consumers restarted mid-stream,
handlers failing mid-batch, positions committed (or rolled back) with the
host's own transaction, wake-ups, the HTTP page and Server-Sent Events over
a real server, and the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Column, Engine, Integer, MetaData, Table, insert, select

from services import ledger_server
from tokenledger import ConsumerConflict, InsufficientFunds, InvalidArgument, Ledger
from tokenledger.api import create_app
from tokenledger.service import events as events_module

host_metadata = MetaData()
handled = Table("host_handled", host_metadata, Column("seq", Integer, primary_key=True))


@pytest.fixture
def host_engine(engine: Engine) -> Iterator[Engine]:
    host_metadata.create_all(engine)
    yield engine
    host_metadata.drop_all(engine)


def _funded(ledger: Ledger, n: int = 4) -> list[str]:
    names = [f"agent-{i}" for i in range(n)]
    for name in names:
        ledger.create_account(name, 1000)
    return names


def test_events_come_in_chain_order_and_page_without_gaps(ledger: Ledger) -> None:
    names = _funded(ledger)
    entries = [ledger.transfer(names[0], names[1], i + 1, "pay") for i in range(7)]
    first = ledger.events(0, 5)
    assert [e.seq for e in first] == [1, 2, 3, 4, 5]
    rest = ledger.events(first[-1].seq, 100)
    assert [e.seq for e in rest] == list(range(6, 12))
    # One writer at a time: the chain order is the order of the writes.
    assert [e.id for e in first + rest] == list(range(1, 12))
    assert rest[-1].amount == entries[-1].amount
    assert rest[-1].chain_hash.startswith("0x")
    assert len(rest[-1].chain_hash) == 66
    assert ledger.events(rest[-1].seq) == []
    for bad in (-1, "1", None, 1.5, True):
        with pytest.raises(InvalidArgument):
            ledger.events(bad)  # type: ignore[arg-type]
    for bad_limit in (0, 10_001, "5"):
        with pytest.raises(InvalidArgument):
            ledger.events(0, bad_limit)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        ledger.events(0, 5, wait=-1)


def test_a_reader_paging_while_writers_write_sees_each_entry_once(ledger: Ledger) -> None:
    names = _funded(ledger, 6)
    writers, each = 4, 40
    done = threading.Event()
    counted: list[int] = []

    def write(n: int) -> None:
        for i in range(each):
            try:
                ledger.transfer(names[(n + i) % 6], names[(n + i + 1) % 6], 1, "w")
                counted.append(1)
            except InsufficientFunds:
                pass

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    seen: list[int] = []
    ids: list[int] = []

    def finished() -> None:
        for thread in threads:
            thread.join()
        done.set()

    threading.Thread(target=finished).start()
    after = 0
    while True:
        page = ledger.events(after, 7)
        seen += [e.seq for e in page]
        ids += [e.id for e in page]
        if page:
            after = page[-1].seq
        elif done.is_set():
            page = ledger.events(after, 100)  # one last look, after every writer ended
            if not page:
                break
            seen += [e.seq for e in page]
            ids += [e.id for e in page]
            after = page[-1].seq
    assert seen == list(range(1, len(seen) + 1))  # no gap, no repeat, in order
    assert len(set(ids)) == len(ids) == len(names) + len(counted)
    assert ledger.verify().counts["entries"] == len(ids)


def test_a_consumer_restarted_mid_stream_goes_on_where_it_stopped(
    ledger: Ledger, database_url: str
) -> None:
    names = _funded(ledger)
    for i in range(10):
        ledger.transfer(names[0], names[1], i + 1, "pay")
    first = ledger.consumer("reputation")
    batch = first.poll(limit=6)
    first.commit(batch[-1].seq)
    # A new process: another engine, another Ledger, the same consumer.
    again = Ledger.from_url(database_url)
    try:
        resumed = again.consumer("reputation")
        assert resumed.position() == batch[-1].seq
        rest = resumed.poll(limit=100)
        assert [e.seq for e in batch + rest] == list(range(1, 15))
        resumed.commit(rest[-1].seq)
        assert resumed.poll() == []
    finally:
        again.dispose()


def test_a_handler_failing_mid_batch_handles_each_event_once(
    ledger: Ledger, host_engine: Engine
) -> None:
    names = _funded(ledger)
    for i in range(8):
        ledger.transfer(names[i % 4], names[(i + 1) % 4], 1, "pay")
    failures = {5, 9}  # these events fail the first time their handler runs

    def handle_all() -> None:
        for event in ledger.consumer("host").poll(limit=100):
            with host_engine.connect() as connection, connection.begin():
                connection.execute(insert(handled).values(seq=event.seq))
                if event.seq in failures:
                    failures.discard(event.seq)
                    raise RuntimeError(f"handler failed at {event.seq}")
                ledger.using(connection).consumer("host").commit(event.seq)

    for _ in range(5):
        try:
            handle_all()
            break
        except RuntimeError:
            continue  # the host's transaction rolled back: that event is handled again
    with host_engine.connect() as connection:
        done = sorted(connection.execute(select(handled.c.seq)).scalars())
    assert done == list(range(1, 13))  # 4 openings and 8 transfers, each once
    assert ledger.consumer("host").position() == 12


def test_a_position_committed_in_a_rolled_back_transaction_does_not_move(
    ledger: Ledger, host_engine: Engine
) -> None:
    names = _funded(ledger)
    ledger.transfer(names[0], names[1], 1, "pay")
    assert [e.seq for e in ledger.events()] == [1, 2, 3, 4, 5]
    with host_engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(insert(handled).values(seq=5))
        ledger.using(connection).consumer("host").commit(5)
        assert ledger.using(connection).consumer("host").position() == 5  # inside: moved
        transaction.rollback()
    assert ledger.consumer("host").position() == 0
    with host_engine.connect() as connection:
        assert connection.execute(select(handled.c.seq)).all() == []


def test_a_position_moves_only_forward_and_only_within_the_chain(ledger: Ledger) -> None:
    names = _funded(ledger)
    ledger.events()  # seals the four openings
    consumer = ledger.consumer("once")
    consumer.commit(3)
    with pytest.raises(ConsumerConflict) as conflict:
        consumer.commit(3)  # another instance, or a retry, already handled up to 3
    assert conflict.value.position == 3
    with pytest.raises(ConsumerConflict):
        consumer.commit(2)
    for bad in (0, -1, "4", 10_000):
        with pytest.raises(InvalidArgument):
            consumer.commit(bad)  # type: ignore[arg-type]
    consumer.commit(4)
    assert consumer.position() == 4
    ledger.transfer(names[0], names[1], 1, "pay")
    assert [e.seq for e in consumer.poll()] == [5]
    for bad_name in ("", "x" * 256, 7):
        with pytest.raises(InvalidArgument):
            ledger.consumer(bad_name)  # type: ignore[arg-type]


def test_a_waiting_reader_wakes_for_the_next_event(
    ledger: Ledger, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _funded(ledger)
    start = ledger.events(0, 100)[-1].seq
    if backend == "postgresql":
        # Only the sealer's notice can wake the reader before this interval.
        monkeypatch.setattr(events_module, "POLL_INTERVAL", 60.0)
    woke: list[float] = []

    def wait() -> None:
        began = time.monotonic()
        got = ledger.events(start, 10, wait=30)
        woke.append(time.monotonic() - began)
        assert [e.seq for e in got] == [start + 1]

    reader = threading.Thread(target=wait)
    reader.start()
    time.sleep(0.5)
    ledger.transfer(names[0], names[1], 1, "wake up")
    if backend == "postgresql":
        ledger.seal()  # the sealer (here, this process) announces what it linked
    reader.join(timeout=40)
    assert woke, "the reader never came back"
    assert woke[0] < 30  # woken, not timed out


def test_waiting_needs_a_ledger_on_an_engine(ledger: Ledger, engine: Engine) -> None:
    with engine.connect() as connection, connection.begin():
        bound = ledger.using(connection)
        assert bound.events() == []
        with pytest.raises(InvalidArgument):
            bound.events(0, 10, wait=1)


# -- HTTP -------------------------------------------------------------------------


def test_the_http_page_of_events(ledger: Ledger) -> None:
    names = _funded(ledger)
    ledger.transfer(names[0], names[1], "1.5", "pay", memo="m")
    client = TestClient(create_app(ledger))
    page = client.get("/api/token/events", params={"after": 2, "limit": 2})
    assert page.status_code == 200
    body = page.json()
    assert [e["seq"] for e in body["events"]] == [3, 4]
    assert body["next_after"] == 4
    assert body["events"][0]["chain_hash"].startswith("0x")
    assert "idempotency_key" not in body["events"][0]
    last = client.get("/api/token/events", params={"after": 4}).json()
    assert last["events"][-1]["amount"] == "1.500000"
    assert client.get("/api/token/events", params={"after": 5}).json() == {
        "events": [],
        "next_after": 5,
    }
    for params in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"after": "x"}, {"page": 1}):
        response = client.get("/api/token/events", params=params)
        assert response.status_code == 422, params
        assert set(response.json()) == {"detail"}


def _stream_events(port: int, count: int, **headers: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    url = f"http://127.0.0.1:{port}/api/token/events/stream"
    with httpx.Client(timeout=30) as client, client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(": ")
                event[key] = value
            elif not line and "data" in event:
                found.append({"id": int(event["id"]), **json.loads(event["data"])})
                event = {}
                if len(found) == count:
                    break
    return found


def test_server_sent_events_over_real_http(
    database_url: str, ledger: Ledger, tmp_path: Path
) -> None:
    names = _funded(ledger)
    with ledger_server(database_url, tmp_path) as port:
        writer = threading.Thread(
            target=lambda: [ledger.transfer(names[0], names[1], 1, "live") for _ in range(3)]
        )
        writer.start()
        streamed = _stream_events(port, 7)  # the four openings, then three live transfers
        writer.join()
        assert [e["id"] for e in streamed] == [1, 2, 3, 4, 5, 6, 7]
        assert [e["seq"] for e in streamed] == [1, 2, 3, 4, 5, 6, 7]
        assert streamed[-1]["reason"] == "live"
        resumed = _stream_events(port, 2, **{"Last-Event-ID": "5"})
        assert [e["seq"] for e in resumed] == [6, 7]


# -- the CLI ------------------------------------------------------------------------


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenledger.cli", *args, "--url", database_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_prints_events_and_moves_a_consumer(ledger: Ledger, database_url: str) -> None:
    names = _funded(ledger)
    ledger.transfer(names[0], names[1], 2, "pay")
    printed = _cli(database_url, "events", "--json", "--after", "3")
    assert printed.returncode == 0, printed.stderr
    lines = [json.loads(line) for line in printed.stdout.splitlines()]
    assert [line["seq"] for line in lines] == [4, 5]
    assert lines[-1]["amount"] == "2.000000"
    first = _cli(database_url, "events", "--consumer", "ops", "--limit", "2")
    assert [line.split("\t")[0] for line in first.stdout.splitlines()] == ["1", "2"]
    second = _cli(database_url, "events", "--consumer", "ops")
    assert [line.split("\t")[0] for line in second.stdout.splitlines()] == ["3", "4", "5"]
    assert ledger.consumer("ops").position() == 5
    assert _cli(database_url, "events", "--after", "-1").returncode == 2


def test_the_cli_follows_the_feed(ledger: Ledger, database_url: str) -> None:
    names = _funded(ledger)
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenledger.cli", "events", "--follow", "--url", database_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
        ledger.transfer(names[0], names[1], 1, "followed")
        lines.append(process.stdout.readline())
        assert [line.split("\t")[0] for line in lines] == ["1", "2", "3", "4", "5"]
        assert "followed" in lines[-1]
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0  # SIGTERM is the documented way to stop
