"""What replication costs, and how long a failover takes: a Patroni cluster on loopback.

    python bench/replication.py              # 3 runs of 5 s per mode, 3 failovers
    python bench/replication.py --quick      # 1 run of 3 s per mode, 1 failover

It starts the test suite's cluster (``tests/cluster.py``: etcd and two
PostgreSQL 15 nodes under Patroni, synchronous mode; ``.ci/install-services``
installs them) and measures, with 8 writer threads of one process calling
``Ledger.transfer``:

* transfers per second with the session's ``synchronous_commit`` at
  ``local`` (asynchronous replication: the commit does not wait for the
  standby), ``on`` (the standby has flushed it) and ``remote_apply`` (the
  standby has applied it: visible there on the first read);
* a write and then a read of it on the replica (read-your-writes by LSN),
  against the same pair on the primary alone: the cost of the wait;
* failover: kill -9 of the primary node (Patroni, the postmaster and its
  children) under 4 keyed writers, until Patroni reports the standby as
  primary and until the writers' next acknowledged write; every acknowledged
  entry is checked on the new primary. Between trials the killed node
  rejoins as a standby from a fresh base backup.

Results print as JSON and go to bench/results/<date>-replication.json.
Figures depend on the machine and on its load; compare modes within a run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from sqlalchemy import text  # noqa: E402

import cluster as patroni  # noqa: E402  (the tests' harness, found through sys.path)
from tokenledger import Ledger, StorageError, migrations  # noqa: E402
from tokenledger.storage import create_engine  # noqa: E402

MODES = ("local", "on", "remote_apply")
WRITERS = 8


def _tps(cluster: patroni.Cluster, mode: str, seconds: float, run: int) -> float:
    engine = create_engine(
        cluster.primary().url(),
        pool_size=WRITERS,
        connect_args={"options": f"-c synchronous_commit={mode}"},
    )
    try:
        ledger = Ledger(engine)
        accounts = [f"tps-{mode}-{run}-{i}" for i in range(2 * WRITERS)]
        for account in accounts:
            ledger.create_account(account, 1_000_000)
        done = [0] * WRITERS
        stop = threading.Event()

        def writer(w: int) -> None:
            sender, receiver = accounts[2 * w], accounts[2 * w + 1]
            while not stop.is_set():
                ledger.transfer(sender, receiver, "0.01", "bench")
                done[w] += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        return sum(done) / seconds
    finally:
        engine.dispose()


def _read_your_writes(cluster: patroni.Cluster, pairs: int) -> dict[str, float]:
    primary = create_engine(cluster.primary().url())
    replica = create_engine(cluster.standby().url())
    try:
        result: dict[str, float] = {}
        for name, ledger in (
            ("primary_only", Ledger(primary)),
            ("replica_reads", Ledger(primary, replica)),
        ):
            ledger.create_account(f"ryw-{name}", 1_000_000)
            ledger.create_account(f"ryw-{name}-to", 0)
            started = time.perf_counter()
            for _ in range(pairs):
                ledger.transfer(f"ryw-{name}", f"ryw-{name}-to", 1, "bench")
                ledger.get_balance(f"ryw-{name}-to")
            result[f"{name}_ms_per_write_and_read"] = (time.perf_counter() - started) / pairs * 1000
        return result
    finally:
        primary.dispose()
        replica.dispose()


def _failover(cluster: patroni.Cluster, trial: int) -> dict[str, Any]:
    engine = create_engine(cluster.multi_host_url(), pool_size=4)
    try:
        ledger = Ledger(engine, failover_wait=60.0)
        accounts = [f"fo{trial}-{i}" for i in range(8)]
        for account in accounts:
            ledger.create_account(account, 1000)
        acknowledged: dict[str, tuple[int, float]] = {}
        stop = threading.Event()
        lock = threading.Lock()

        def writer(w: int) -> None:
            n = 0
            while not stop.is_set():
                key = f"fo{trial}-{w}-{n}"
                try:
                    entry = ledger.transfer(
                        accounts[w], accounts[w + 4], "0.01", "fo", idempotency_key=key
                    )
                except StorageError:
                    time.sleep(0.05)
                    continue  # the same key again
                with lock:
                    acknowledged[key] = (entry.id, time.monotonic())
                n += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        old, new = cluster.primary(), cluster.standby()
        killed = time.monotonic()
        old.kill()
        promoted = cluster.wait_for_primary(new, timeout=60)
        while time.monotonic() - killed < 60:
            with lock:
                after = [t for _, t in acknowledged.values() if t > killed + promoted]
            if after:
                break
            time.sleep(0.01)
        first_write = min(after) - killed
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        survivor = create_engine(new.url())
        try:
            with survivor.connect() as connection:
                stored = dict(
                    connection.execute(
                        text(
                            "SELECT idempotency_key, id FROM token_ledger "
                            "WHERE idempotency_key LIKE :prefix"
                        ),
                        {"prefix": f"fo{trial}-%"},
                    ).all()
                )
        finally:
            survivor.dispose()
        lost = sum(1 for key, (entry_id, _) in acknowledged.items() if stored.get(key) != entry_id)
        patroni.rejoin(cluster, old)
        return {
            "promoted_s": round(promoted, 2),
            "first_write_s": round(first_write, 2),
            "acknowledged": len(acknowledged),
            "lost": lost,
            "in_doubt_resolved_by_key": ledger._binding.in_doubt_retries,
        }
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run of 3 s, 1 failover")
    args = parser.parse_args()
    runs, seconds, failovers = (1, 3.0, 1) if args.quick else (3, 5.0, 3)
    missing = patroni.available()
    if missing:
        sys.exit(f"bench/replication.py: {missing}")
    with patroni.patroni_cluster() as cluster:
        migrations.upgrade(cluster.primary().url())
        tps = {
            mode: [round(_tps(cluster, mode, seconds, run)) for run in range(runs)]
            for mode in MODES
        }
        result: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {platform.python_version()}",
            "writers": WRITERS,
            "tps": tps,
            "tps_median": {mode: statistics.median(values) for mode, values in tps.items()},
            "read_your_writes": _read_your_writes(cluster, 300),
            "failover": [_failover(cluster, trial) for trial in range(failovers)],
        }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%d}-replication.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
