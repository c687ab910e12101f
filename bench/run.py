"""Run the benchmark and write its results into docs/performance.md.

    TOKENLEDGER_BENCH_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/postgres \\
        python bench/run.py            # the full run (about 15 minutes)
    python bench/run.py --quick         # shorter runs, a 100k-entry read side

Every ratio compares the library with its reference measured in the same
run on the same machine, so machine noise mostly cancels out. The results
go between the RESULTS markers of docs/performance.md and into
bench/results/<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chain
import cpu
import ledger_copy
import reads
import tamper
import writes

from tokenledger import Ledger
from tokenledger.storage import create_engine

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"

SECTIONS = {"writes", "cpu", "tamper", "sqlite", "reads", "chain"}
# Run only when asked (--only copy): building and copying 1,000,000 entries takes minutes.
OPTIONAL_SECTIONS = {"copy"}

TARGETS = {
    "pg_single_vs_a": 1.0,
    "pg_eight_vs_b": 0.6,
    "sqlite_vs_raw": 0.7,
    "batch_per_second": 30_000,  # issue 16 (issue 3: 20,000)
    "client_cpu_vs_driver": 1.3,  # issue 16
    "group_commit_8x8_vs_b": 1.5,  # issue 16
}


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    server = subprocess.run(
        ["pgbench", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}; Python {platform.python_version()}; "
        f"{server}; SQLite {__import__('sqlite3').sqlite_version}"
    )


def run_writes(admin_url: str, seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for accounts in (50, 2):
        url = writes.prepare_postgres(admin_url, f"tokenledger_bench_{accounts}", accounts)
        for clients in (1, 8):
            key = f"{accounts}_accounts_{clients}_workers"
            # Interleaved, so that drift on a noisy machine hits all three alike.
            a = writes.pgbench(
                url, writes.SCRIPT_CLIENT_SIDE, clients=clients, accounts=accounts, seconds=seconds
            )
            b = writes.pgbench(
                url, writes.SCRIPT_SERVER_SIDE, clients=clients, accounts=accounts, seconds=seconds
            )
            library = writes.library(url, workers=clients, accounts=accounts, seconds=seconds)
            driver = writes.library(
                url, workers=clients, accounts=accounts, seconds=seconds, driver_only=True
            )
            results[key] = {
                "reference_a_tps": round(a),
                "reference_b_tps": round(b),
                "driver_only_tps": round(driver),
                "library_tps": round(library),
                "ratio_a": round(library / a, 2),
                "ratio_b": round(library / b, 2),
                "driver_only_ratio_b": round(driver / b, 2),
            }
            if clients == 8:
                # 8 processes of 8 threads each, one ledger per process, without and with
                # group commit; (b) again right after, for a reference on the same footing.
                threads = writes.library(
                    url, workers=8, accounts=accounts, seconds=seconds, threads=8
                )
                grouped = writes.library(
                    url, workers=8, accounts=accounts, seconds=seconds, threads=8,
                    group_commit=True,
                )  # fmt: skip
                b_again = writes.pgbench(
                    url, writes.SCRIPT_SERVER_SIDE, clients=8, accounts=accounts, seconds=seconds
                )
                b_mean = (b + b_again) / 2
                results[key] |= {
                    "reference_b_again_tps": round(b_again),
                    "threads_8x8_tps": round(threads),
                    "group_commit_8x8_tps": round(grouped),
                    "threads_8x8_ratio_b": round(threads / b_mean, 2),
                    "group_commit_8x8_ratio_b": round(grouped / b_mean, 2),
                }
            print(key, results[key], flush=True)
        if accounts == 50:
            batch = writes.batch_throughput(url, batch=1000, batches=20)
            results["batch_1000_per_second"] = round(batch)
            print("batch", results["batch_1000_per_second"], flush=True)
    return results


def run_sqlite(seconds: float) -> dict[str, Any]:
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for synchronous in ("FULL", "NORMAL"):
            pair = writes.sqlite_pair(Path(directory), synchronous, seconds)
            results[synchronous] = {
                "raw_tps": round(pair.raw),
                "library_tps": round(pair.library),
                "ratio": round(pair.library / pair.raw, 2),
            }
            print("sqlite", synchronous, results[synchronous], flush=True)
    return results


def run_cpu(admin_url: str, calls: int) -> dict[str, Any]:
    url = writes.prepare_postgres(admin_url, "tokenledger_bench_cpu", 50)
    results = {"postgresql": cpu.postgres(url, calls=calls)}
    with tempfile.TemporaryDirectory() as directory:
        results["sqlite"] = cpu.sqlite(Path(directory), seconds=calls / 1000)
    return results


def run_tamper(admin_url: str, seconds: float) -> dict[str, Any]:
    return {
        "cost": tamper.cost(admin_url, seconds),
        "seal_lag": tamper.seal_lag(admin_url, seconds * 2),
    }


def run_reads(admin_url: str, accounts: int, entries: int, repeat: int) -> dict[str, Any]:
    url = writes.fresh_database(admin_url, "tokenledger_bench_reads")
    engine = create_engine(url)
    results: dict[str, Any] = {"accounts": accounts, "entries": entries}
    results["load_seconds"] = round(reads.load_postgres(engine, accounts, entries), 1)
    ledger = Ledger(engine)
    results["latency"] = reads.read_latencies(ledger, accounts, repeat)
    print("reads", results["latency"], flush=True)
    started = time.perf_counter()
    results["seal_entries"] = ledger.seal()
    results["seal_seconds"] = round(time.perf_counter() - started, 1)
    results["verify"] = reads.verify_in_subprocess(url)
    print("verify", results["verify"], flush=True)
    engine.dispose()
    return results


def render(results: dict[str, Any]) -> str:
    w = results.get("writes", {})
    lines = [
        f"Measured {results['date']} on {results['machine']}.",
        "",
        f"Command: `{results['command']}`",
        "",
    ]
    if w:
        lines += [
            "| PostgreSQL, `Ledger.transfer` | reference (a) tps | reference (b) tps "
            "| library tps | vs (a) | vs (b) | driver only tps | driver only vs (b) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key in (
            "50_accounts_1_workers",
            "50_accounts_8_workers",
            "2_accounts_1_workers",
            "2_accounts_8_workers",
        ):
            row = w[key]
            label = key.replace("_", " ").replace("1 workers", "1 worker")
            lines.append(
                f"| {label} | {row['reference_a_tps']} | {row['reference_b_tps']} | "
                f"{row['library_tps']} | {row['ratio_a']}x | {row['ratio_b']}x | "
                f"{row['driver_only_tps']} | {row['driver_only_ratio_b']}x |"
            )
        lines += [
            "",
            "8 processes of 8 threads each (one ledger per process), against (b) at 8 "
            "clients (the mean of a run before and one after):",
            "",
            "| PostgreSQL, 8 x 8 threads | (b) tps | without group commit | vs (b) "
            "| with group commit | vs (b) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key in ("50_accounts_8_workers", "2_accounts_8_workers"):
            row = w[key]
            if "group_commit_8x8_tps" in row:
                b_mean = round((row["reference_b_tps"] + row["reference_b_again_tps"]) / 2)
                lines.append(
                    f"| {key.split('_')[0]} accounts | {b_mean} | {row['threads_8x8_tps']} | "
                    f"{row['threads_8x8_ratio_b']}x | {row['group_commit_8x8_tps']} | "
                    f"{row['group_commit_8x8_ratio_b']}x |"
                )
        lines += [
            "",
            "`transfer_many`, batches of 1,000 on 50 accounts: "
            f"**{w['batch_1000_per_second']:,} transfers/s**.",
            "",
        ]
    t = results.get("tamper", {})
    if t:
        lines += [
            "Tamper evidence at commit: pgbench calling each option's one-entry server "
            "function (median of 3 rounds, interleaved); price = throughput lost against "
            "`none`:",
            "",
            "| option | 1 client tps | price | 8 clients tps | price |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name in t["cost"]["1_clients"]:
            one, eight = t["cost"]["1_clients"][name], t["cost"]["8_clients"][name]
            lines.append(
                f"| `{name}` | {one['tps']} | {one['price']:.1%} | {eight['tps']} | "
                f"{eight['price']:.1%} |"
            )
        lag = t["seal_lag"]
        lines += [
            "",
            f"`seal --follow --interval {lag['interval_s']:g}` behind 4 writing processes "
            f"({lag['entries']:,} entries): lag p50 {lag['p50_s']} s, p99 {lag['p99_s']} s, "
            f"max {lag['max_s']} s; {lag['unsealed_at_end']} unsealed at the end.",
            "",
        ]
    c = results.get("cpu", {})
    if c:
        lines += [
            "Client CPU per transfer (`time.process_time()`, this process only), "
            "against the bare driver sending the same server call:",
            "",
            "| driver | bare driver µs | `transfer` µs | ratio "
            "| group commit, 8 threads µs | ratio |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for driver, row in c["postgresql"].items():
            lines.append(
                f"| {driver} | {row['bare_driver_us']} | {row['library_us']} | {row['ratio']}x | "
                f"{row['group_commit_8_threads_us']} | {row['group_commit_ratio']}x |"
            )
        lines += [
            "",
            "| SQLite | raw sqlite3 µs | `transfer` µs | ratio |",
            "| --- | ---: | ---: | ---: |",
        ]
        for sync, row in c["sqlite"].items():
            lines.append(
                f"| synchronous={sync} | {row['raw_us']} | {row['library_us']} | {row['ratio']}x |"
            )
        lines.append("")
    s = results.get("sqlite", {})
    if s:
        lines += [
            "| SQLite, one process | raw sqlite3 tps | library tps | ratio |",
            "| --- | ---: | ---: | ---: |",
        ]
        for sync, row in s.items():
            lines.append(
                f"| synchronous={sync} | {row['raw_tps']} | {row['library_tps']} "
                f"| {row['ratio']}x |"
            )
        lines.append("")
    r = results.get("reads", {})
    if r:
        lat = r["latency"]
        lines += [
            f"Read side on PostgreSQL, {r['entries']:,} entries over {r['accounts']:,} accounts "
            f"(loaded in {r['load_seconds']} s):",
            "",
            "| read | p50 ms | p99 ms |",
            "| --- | ---: | ---: |",
        ]
        for name, row in lat.items():
            lines.append(f"| `{name}` | {row['p50_ms']} | {row['p99_ms']} |")
        v = r["verify"]
        lines += [
            "",
            f"`seal` of {r['seal_entries']:,} entries: {r['seal_seconds']} s. "
            f"`verify` of {v['entries']:,} entries: {v['seconds']} s, ok={v['ok']}, "
            f"peak RSS {v['peak_rss_mib']} MiB (process baseline {v['baseline_rss_mib']} MiB).",
        ]
    k = results.get("copy", {})
    if k:
        lines += [
            "",
            f"`db copy` SQLite -> PostgreSQL, {k['source_entries']:,} sealed entries over "
            f"{k['accounts']:,} accounts ({k['rows']:,} rows, pages of {k['page_size']:,}): "
            f"copy {k['copy_seconds']} s ({k['rows_per_second']:,} rows/s), then the checks "
            f"and `verify` {k['verify_seconds']} s, ok={k['ok']}; peak RSS "
            f"{k['copy_peak_rss_mib']} MiB during the copy, {k['peak_rss_mib']} MiB with "
            f"`verify` (baseline {k['baseline_rss_mib']} MiB).",
        ]
    if "chain" in results:
        c = results["chain"]
        lines += [
            "",
            "| chain push on anvil (issue 14) | entries | transactions | s | entries/s | target |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for mode, target in (
            ("single", chain.TARGETS["single_per_second"]),
            ("batched", chain.TARGETS["batched_per_second"]),
        ):
            row = c[mode]
            lines.append(
                f"| {mode} ({row['batch']} per transaction) | {row['entries']:,} | "
                f"{row['transactions']:,} | {row['seconds']} | {row['per_second']:,} | "
                f">= {target:,} |"
            )
    return "\n".join(lines) + "\n"


def write_doc(text_block: str) -> None:
    current = DOC.read_text() if DOC.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n{text_block}{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs and a 100k-entry read side"
    )
    parser.add_argument("--only", choices=sorted(SECTIONS | OPTIONAL_SECTIONS), action="append")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args()
    admin_url = os.environ.get(
        "TOKENLEDGER_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    )
    sections = set(args.only or SECTIONS)
    seconds = 4.0 if args.quick else 10.0
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "command": "python bench/run.py"
        + (" --quick" if args.quick else "")
        + "".join(f" --only {name}" for name in args.only or ()),
    }
    if "writes" in sections:
        results["writes"] = run_writes(admin_url, seconds)
    if "tamper" in sections:
        results["tamper"] = run_tamper(admin_url, seconds)
    if "cpu" in sections:
        results["cpu"] = run_cpu(admin_url, calls=2400 if args.quick else 6000)
    if "sqlite" in sections:
        results["sqlite"] = run_sqlite(seconds)
    if "reads" in sections:
        accounts, entries = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
        results["reads"] = run_reads(
            admin_url, accounts, entries, repeat=200 if args.quick else 1000
        )
    if "copy" in sections:
        entries = 100_000 if args.quick else 1_000_000
        results["copy"] = ledger_copy.run(admin_url, accounts=entries // 10, entries=entries)
    if "chain" in sections:
        results["chain"] = chain.run(
            single=300 if args.quick else 1_000, batched=3_000 if args.quick else 10_000
        )
    out = ROOT / "bench" / "results" / f"{results['date']}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    block = render(results)
    print(block)
    if not args.no_doc and sections == SECTIONS:
        write_doc(block)


if __name__ == "__main__":
    main()
