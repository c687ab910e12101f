"""Real components the suite starts on free loopback ports: PgBouncer (and, elsewhere, more).

Each is a real process of the Debian package or npm binary that ``.ci/run``
installs; a test that needs one fails (never skips) when it is missing and
PostgreSQL is required.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

REQUIRE_ENV = "TOKENLEDGER_TEST_REQUIRE_POSTGRES"

__all__ = [
    "free_port",
    "ledger_server",
    "pgbouncer",
    "require_binary",
    "through",
    "wait_for_port",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts connections on ``port`` (fail, never hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process for port {port} exited with {process.returncode}")
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nothing listened on port {port} within {timeout}s")


def require_binary(name: str, *candidates: str) -> str:
    """The path of an installed program; a failure (or a skip, if PostgreSQL is optional)."""
    for candidate in (shutil.which(name), *candidates):
        if candidate and Path(candidate).exists():
            return candidate
    message = f"{name} is not installed (.ci/run installs it)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _as_postgres(command: list[str]) -> list[str]:
    """PgBouncer refuses to run as root: run it as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def pgbouncer(postgres_url: str, pool_mode: str, server_connections: int = 20) -> Iterator[int]:
    """A PgBouncer in ``pool_mode`` (session or transaction) in front of the test server.

    Yields its port; every database of the server is reachable through it by
    name, with the user of ``postgres_url`` (trust authentication, as the
    test server has), over at most ``server_connections`` server connections
    per database. In session mode a client connection keeps its server
    connection until it disconnects, so the clients' pools must fit in that.
    """
    binary = require_binary("pgbouncer", "/usr/sbin/pgbouncer")
    server = make_url(postgres_url)
    user = server.username or "postgres"
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="tokenledger-pgbouncer-"))
    directory.chmod(0o777)
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {directory / 'userlist.txt'}\n"
        f"pool_mode = {pool_mode}\n"
        "max_client_conn = 500\n"
        f"default_pool_size = {server_connections}\n"
        f"admin_users = {user}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {directory / 'pgbouncer.log'}\n"
        f"pidfile = {directory / 'pgbouncer.pid'}\n"
    )
    for path in directory.iterdir():
        path.chmod(0o666)
    process = subprocess.Popen(
        _as_postgres([binary, str(config)]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_port(port, process=process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def through(url: str, port: int, driver: str | None = None) -> str:
    """``url`` pointed at 127.0.0.1:``port`` (optionally with another driver)."""
    parsed = make_url(url).set(host="127.0.0.1", port=port)
    if driver is not None:
        parsed = parsed.set(drivername=f"postgresql+{driver}")
    return parsed.render_as_string(hide_password=False)


@contextmanager
def ledger_server(database_url: str, cwd: Path) -> Iterator[int]:
    """A real ``tokenledger serve`` process on a free loopback port; yields the port."""
    port = free_port()
    command = [sys.executable, "-m", "tokenledger.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--url", database_url],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30, process=process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)
