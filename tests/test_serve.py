"""``tokenledger serve``: the HTTP API over real sockets, from a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tokenledger import Ledger, migrations
from tokenledger.storage import create_engine

STARTUP_SECONDS = 30.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(base: str, path: str) -> tuple[int, Any]:
    """GET ``base + path``; the status code and the decoded JSON body."""
    try:
        with urllib.request.urlopen(base + path, timeout=10) as response:  # noqa: S310  (http to loopback)
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())


def wait_until_serving(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(base + "/api/token/supply", timeout=1):  # noqa: S310
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise AssertionError(f"serve did not answer within {STARTUP_SECONDS}s: {log.read_text()}")


def test_serve_answers_every_endpoint_over_http(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    migrations.upgrade(url)
    ledger = Ledger(create_engine(url))
    ledger.create_account("alice", 1000)
    ledger.create_account("bob", 50)
    payment = ledger.transfer("alice", "bob", "12.5", "payment", "invoice", "inv-1")
    bid = ledger.stake("bob", 20, "artifact_bid", "artifact", "a-7")
    ledger.dispose()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != migrations.URL_ENV}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tokenledger.cli", "serve", "--port", str(port), "--url", url],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
        try:
            wait_until_serving(process, base, log)

            status, alice = get(base, "/api/token/balance/alice")
            assert status == 200
            assert (alice["account_id"], alice["balance"]) == ("alice", "987.500000")
            assert alice["total_spent"] == "12.500000"
            status, bob = get(base, "/api/token/balance/bob")
            assert (status, bob["balance"], bob["total_staked"]) == (200, "42.500000", "20.000000")
            status, missing = get(base, "/api/token/balance/nobody")
            assert status == 404
            assert "nobody" in missing["detail"]

            status, supply = get(base, "/api/token/supply")
            assert status == 200
            assert (supply["total_supply"], supply["staked"]) == ("1050.000000", "20.000000")
            assert supply["velocity"]["transfer_volume"] == "12.500000"
            assert supply["distribution"]["top_holders"][0]["account_id"] == "alice"

            status, page = get(base, "/api/token/ledger?account=alice&limit=50")
            assert status == 200
            assert [(e["id"], e["reason"], e["amount"]) for e in page["entries"]] == [
                (payment.id, "payment", "12.500000"),
                (1, "initial_balance", "1000.000000"),
            ]
            status, _ = get(base, "/api/token/ledger?limit=1001")
            assert status == 422

            status, stakes = get(base, "/api/token/stakes?account=bob")
            assert status == 200
            assert [(s["id"], s["amount"], s["status"]) for s in stakes["stakes"]] == [
                (bid.id, "20.000000", "open")
            ]
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
    output_text = log.read_text()
    # uvicorn shuts down gracefully on SIGTERM, then ends by that signal as
    # process managers expect.
    assert process.returncode in {0, -signal.SIGTERM}, output_text
    assert "Application shutdown complete" in output_text
    assert f"on http://127.0.0.1:{port}" in output_text
    assert "Traceback" not in output_text
