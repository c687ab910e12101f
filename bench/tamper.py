"""The price of tamper evidence at commit, and how far the sealed chain lags the commits.

**Cost (issue 12).** pgbench calls each option's one-entry server function,
at 1 and 8 clients, interleaved over several rounds on one database:

* ``none``: ``tokenledger_post_entry_v1``, with the digest trigger disabled
  for the measurement: the write as it was before tamper evidence;
* ``digest_v2``: ``tokenledger_post_entry_v2``, the digest through the
  per-field helper functions (revision 0005);
* ``digest``: ``tokenledger_post_entry_v3``, the digest as one inlined
  expression (revision 0007), what the library calls;
* ``account_links``: the option not taken, per-account hash links: the
  write of ``none`` plus, under the row locks it already holds, each
  party's link replaced by SHA-256 of its previous link and the entry.

**Lag.** ``tokenledger seal --follow --interval 1`` runs as a subprocess
while 4 worker processes write; a sampler notes, every 50 ms, the newest
committed entry and the newest sealed one. An entry's lag is the time from
the first sample that sees it committed to the first that sees it sealed.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from sqlalchemy import text
from writes import library, pgbench, prepare_postgres

from tokenledger.storage import create_engine

_PICK = r"""\set i random(0, :n - 1)
\set j (:i + random(1, :n - 1)) % :n
"""
_PARTIES = "'bench-' || lpad(:i::text, 2, '0'), 'bench-' || lpad(:j::text, 2, '0')"

ACCOUNT_LINKS = """
ALTER TABLE token_accounts ADD COLUMN IF NOT EXISTS bench_link bytea NOT NULL DEFAULT '';
CREATE OR REPLACE FUNCTION bench_post_entry_linked(p_sender varchar, p_receiver varchar)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE r record; encoded bytea;
BEGIN
    SELECT * INTO r FROM tokenledger_post_entry_v1(
        p_sender, p_receiver, 1, 'bench', NULL, NULL, NULL, NULL);
    encoded := convert_to(concat_ws('|', r.entry_id, r.entry_time, p_sender, p_receiver, 1,
        'bench', r.after_from, r.after_to), 'UTF8');
    UPDATE token_accounts SET bench_link = sha256(bench_link || encoded)
    WHERE account_id IN (p_sender, p_receiver);
    RETURN r.entry_id;
END
$$;
"""

OPTIONS = {
    "none": f"SELECT tokenledger_post_entry_v1({_PARTIES}, 1, 'bench', NULL, NULL, NULL, NULL);",
    "digest_v2": (
        f"SELECT tokenledger_post_entry_v2({_PARTIES}, 1, 'bench', NULL, NULL, NULL, NULL);"
    ),
    "digest": f"SELECT tokenledger_post_entry_v3({_PARTIES}, 1, 'bench', NULL, NULL, NULL, NULL);",
    "account_links": f"SELECT bench_post_entry_linked({_PARTIES});",
}


def _digest_trigger(url: str, enabled: bool) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        state = "ENABLE" if enabled else "DISABLE"
        connection.execute(text(f"ALTER TABLE token_ledger {state} TRIGGER token_ledger_digest"))
    engine.dispose()


def cost(admin_url: str, seconds: float, rounds: int = 3) -> dict[str, Any]:
    """tps of each option at 1 and 8 clients (median of ``rounds``) and its price vs none."""
    url = prepare_postgres(admin_url, "tokenledger_bench_tamper", 50)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(ACCOUNT_LINKS))
    engine.dispose()
    results: dict[str, Any] = {}
    for clients in (1, 8):
        runs: dict[str, list[float]] = {name: [] for name in OPTIONS}
        for _ in range(rounds):
            for name, call in OPTIONS.items():
                without = name in ("none", "account_links")  # nothing else fills a digest
                if without:
                    _digest_trigger(url, enabled=False)
                try:
                    runs[name].append(
                        pgbench(url, _PICK + call + "\n", clients=clients, accounts=50,
                                seconds=seconds)
                    )  # fmt: skip
                finally:
                    if without:
                        _digest_trigger(url, enabled=True)
        tps = {name: statistics.median(values) for name, values in runs.items()}
        results[f"{clients}_clients"] = {
            name: {"tps": round(value), "price": round(1 - value / tps["none"], 3)}
            for name, value in tps.items()
        }
        print("tamper cost", clients, results[f"{clients}_clients"], flush=True)
    return results


def _newest(connection: Any) -> tuple[int, int]:
    committed = connection.execute(text("SELECT coalesce(max(id), 0) FROM token_ledger"))
    sealed = connection.execute(text("SELECT last_entry_id FROM token_chain_head"))
    return int(committed.scalar_one()), int(sealed.scalar_one())


def seal_lag(admin_url: str, seconds: float, interval: float = 1.0) -> dict[str, Any]:
    """Lag of ``seal --follow --interval`` behind 4 writing processes, p50/p99/max seconds."""
    url = prepare_postgres(admin_url, "tokenledger_bench_seal_lag", 50)
    follower = subprocess.Popen(
        [sys.executable, "-c", "from tokenledger.cli import main; main()", "seal", "--follow",
         "--interval", str(interval), "--url", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    engine = create_engine(url)
    seen_committed: dict[int, float] = {}
    lags: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        last_committed = last_sealed = 0
        with engine.connect() as connection:
            while not stop.is_set():
                now = time.monotonic()
                committed, sealed = _newest(connection)
                connection.rollback()
                for entry_id in range(last_committed + 1, committed + 1):
                    seen_committed[entry_id] = now
                for entry_id in range(last_sealed + 1, sealed + 1):
                    if entry_id in seen_committed:
                        lags.append(now - seen_committed.pop(entry_id))
                last_committed, last_sealed = (
                    max(last_committed, committed),
                    max(last_sealed, sealed),
                )
                time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    try:
        time.sleep(2)  # the follower is up
        sampler.start()
        written = library(url, workers=4, accounts=50, seconds=seconds) * seconds
        time.sleep(interval * 3)  # the last entries get sealed
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join()
        follower.terminate()
        follower.wait(30)
        engine.dispose()
    lags.sort()
    result = {
        "interval_s": interval,
        "entries": round(written),
        "sealed_seen": len(lags),
        "unsealed_at_end": len(seen_committed),
        "p50_s": round(lags[len(lags) // 2], 2),
        "p99_s": round(lags[int(len(lags) * 0.99)], 2),
        "max_s": round(lags[-1], 2),
    }
    print("seal lag", result, flush=True)
    return result
