"""A real replicated PostgreSQL for the tests: etcd and two PostgreSQL 15 nodes under Patroni.

Everything runs from Debian's packages (``.ci/install-services`` installs
``patroni`` and ``etcd-server``) on free loopback ports, in a temporary
directory, and is killed and removed at the end. PostgreSQL refuses to run
as root, so when the tests run as root the processes run as ``postgres``.

Settings the ledger's guarantees rest on (docs/replication.md):
``synchronous_mode`` (Patroni names the standby in
``synchronous_standby_names``, so an acknowledged commit is on both nodes),
``wal_retrieve_retry_interval = 200ms`` (a promoted standby does not sit out
the default 5 s before it notices the primary is gone) and
``hot_standby_feedback`` (fewer recovery conflicts on replica reads).
A short Patroni ``ttl`` keeps a failover within seconds. ``maximum_lag_on_failover``
stays at its default (1 MB): the dead primary's last reported WAL position may
include commits in flight that no client saw acknowledged, and a limit of 0
would then forbid the promotion of the very standby that has every
acknowledged commit.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PATRONI = "patroni"
ETCD = "etcd"
START_TIMEOUT = 90.0
# Patroni's leader lease: a dead primary's lock expires after this many seconds.
TTL = 8


def available() -> str | None:
    """Why the cluster cannot run here, or ``None`` when it can."""
    for tool in (PATRONI, ETCD):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (bash .ci/install-services installs it)"
    if not (PG_BIN / "postgres").exists():
        return f"PostgreSQL 15 is not installed at {PG_BIN}"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Node:
    """One Patroni-managed PostgreSQL."""

    name: str
    port: int
    api_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def url(self, driver: str = "psycopg2", database: str = "postgres") -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def api(self, path: str) -> tuple[int, Any]:
        """GET a Patroni REST endpoint: the status code and the JSON body."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.api_port}{path}", timeout=2
            ) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, None
        except (OSError, ValueError):
            return 0, None

    def role(self) -> str | None:
        status, body = self.api("/patroni")
        return body.get("role") if status == 200 and body else None

    def postmaster_pid(self) -> int | None:
        with suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        return None

    def pids(self) -> list[int]:
        """Patroni, the postmaster and every child of it (the whole node)."""
        pids = [self.process.pid] if self.process is not None else []
        postmaster = self.postmaster_pid()
        if postmaster is not None:
            pids.append(postmaster)
            children = subprocess.run(
                ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
            )
            pids.extend(int(p) for p in children.stdout.split())
        return pids

    def kill(self) -> None:
        """kill -9 the whole node: Patroni, the postmaster and its children."""
        for pid in self.pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    def signal_all(self, signum: int) -> None:
        for pid in self.pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signum)


@dataclass
class Cluster:
    """etcd plus two Patroni nodes; ``primary()`` / ``standby()`` ask Patroni who is who."""

    directory: Path
    nodes: list[Node]
    etcd_port: int
    etcd: subprocess.Popen[bytes] | None = None
    scope: str = field(default_factory=lambda: f"tl{os.getpid()}")

    def multi_host_url(self, driver: str = "psycopg2") -> str:
        """The primary, wherever it is: libpq tries each host until one is read-write."""
        hosts = "&".join(f"host=127.0.0.1:{node.port}" for node in self.nodes)
        return (
            f"postgresql+{driver}://postgres@/postgres?{hosts}"
            "&target_session_attrs=read-write&connect_timeout=2"
        )

    def primary(self) -> Node:
        for node in self.nodes:
            if node.role() in ("master", "primary"):
                return node
        raise RuntimeError("no node is primary")

    def standby(self) -> Node:
        for node in self.nodes:
            if node.role() == "replica":
                return node
        raise RuntimeError("no node is a standby")

    def wait_until_synchronous(self, timeout: float = START_TIMEOUT) -> None:
        """Until the primary has a streaming standby in ``sync`` state, and Patroni knows it.

        Patroni names the standby in ``synchronous_standby_names`` first and
        records it as the synchronous one in etcd a loop later; only then may
        it be promoted.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with suppress(RuntimeError):
                primary = self.primary()
                out = _psql(primary, "SELECT sync_state FROM pg_stat_replication")
                status, body = primary.api("/cluster")
                roles = [m.get("role") for m in (body or {}).get("members", [])]
                if "sync" in out.split() and status == 200 and "sync_standby" in roles:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"no synchronous standby within {timeout} s; see {self.directory}")

    def wait_for_primary(self, node: Node, timeout: float = START_TIMEOUT) -> float:
        """Seconds until ``node`` is a writable primary."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if node.api("/primary")[0] == 200:
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"{node.name} did not become primary within {timeout} s")


def _psql(node: Node, sql: str) -> str:
    done = subprocess.run(
        [
            str(PG_BIN / "psql"),
            *("-h", "127.0.0.1", "-p", str(node.port), "-U", "postgres"),
            *("-d", "postgres", "-At", "-c", sql),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    return done.stdout


def _as_postgres() -> dict[str, Any]:
    """Popen arguments that drop root to the postgres user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _node_config(cluster: Cluster, node: Node) -> str:
    # JSON is YAML: no YAML library needed to write Patroni's configuration.
    config = {
        "scope": cluster.scope,
        "name": node.name,
        "log": {"dir": str(node.directory), "level": "INFO"},
        "restapi": {
            "listen": f"127.0.0.1:{node.api_port}",
            "connect_address": f"127.0.0.1:{node.api_port}",
        },
        "etcd3": {"hosts": [f"127.0.0.1:{cluster.etcd_port}"]},
        "bootstrap": {
            "dcs": {
                "ttl": TTL,
                "loop_wait": 1,
                "retry_timeout": 3,
                "synchronous_mode": True,
                "postgresql": {
                    "use_pg_rewind": False,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "hot_standby_feedback": "on",
                        "wal_retrieve_retry_interval": "200ms",
                        "max_connections": 60,
                        "max_wal_senders": 5,
                        "synchronous_commit": "on",
                        "shared_buffers": "32MB",
                        "fsync": "on",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"auth-local": "trust"}, {"auth-host": "trust"}],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{node.port}",
            "connect_address": f"127.0.0.1:{node.port}",
            "data_dir": str(node.data_dir),
            "bin_dir": str(PG_BIN),
            "pgpass": str(node.directory / "pgpass"),
            "authentication": {
                "superuser": {"username": "postgres"},
                "replication": {"username": "postgres"},
            },
            "parameters": {"unix_socket_directories": str(node.directory)},
            "pg_hba": [
                "local all all trust",
                "local replication all trust",
                "host all all 127.0.0.1/32 trust",
                "host replication all 127.0.0.1/32 trust",
            ],
        },
    }
    return json.dumps(config, indent=2)


def _start_node(cluster: Cluster, node: Node) -> None:
    node.directory.mkdir()
    _chown(node.directory)
    config = node.directory / "patroni.yml"
    config.write_text(_node_config(cluster, node))
    _chown(config)
    log = (node.directory / "patroni.out").open("wb")
    node.process = subprocess.Popen(
        [PATRONI, str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=node.directory,
        start_new_session=True,
        **_as_postgres(),
    )


@contextmanager
def patroni_cluster() -> Iterator[Cluster]:
    """Start etcd and two nodes; yield once node0 is primary with node1 as its sync standby."""
    directory = Path(tempfile.mkdtemp(prefix="tokenledger-cluster-"))
    _chown(directory)
    directory.chmod(0o755)
    cluster = Cluster(
        directory=directory,
        nodes=[
            Node(f"node{i}", free_port(), free_port(), directory / f"node{i}") for i in range(2)
        ],
        etcd_port=free_port(),
    )
    peer_port = free_port()
    try:
        etcd_log = (directory / "etcd.out").open("wb")
        cluster.etcd = subprocess.Popen(
            [
                ETCD,
                *("--name", "tl", "--data-dir", str(directory / "etcd")),
                *("--listen-client-urls", f"http://127.0.0.1:{cluster.etcd_port}"),
                *("--advertise-client-urls", f"http://127.0.0.1:{cluster.etcd_port}"),
                *("--listen-peer-urls", f"http://127.0.0.1:{peer_port}"),
                *("--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}"),
                *("--initial-cluster", f"tl=http://127.0.0.1:{peer_port}"),
            ],
            stdout=etcd_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_for_port(cluster.etcd_port, "etcd")
        first, second = cluster.nodes
        _start_node(cluster, first)
        cluster.wait_for_primary(first)
        _start_node(cluster, second)
        cluster.wait_until_synchronous()
        yield cluster
    finally:
        for node in cluster.nodes:
            node.kill()
        if cluster.etcd is not None:
            cluster.etcd.kill()
            cluster.etcd.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def rejoin(cluster: Cluster, node: Node) -> None:
    """Bring a killed node back as a standby: a fresh base backup of the current primary.

    Its old data may hold WAL the new primary never had (the commits that were
    in flight when it died, none of them acknowledged), so it is not reused.
    """
    if node.process is not None and node.process.poll() is None:
        raise RuntimeError(f"{node.name} is still running")
    shutil.rmtree(node.directory, ignore_errors=True)
    _start_node(cluster, node)
    cluster.wait_until_synchronous()


def _wait_for_port(port: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")
