"""``tokenledger chain``: the on-chain view (export, reconciliation, inclusion proofs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tokenledger.chain import verify_inclusion
from tokenledger.cli._open import open_ledger
from tokenledger.cli.exits import EXIT_OK, EXIT_PROBLEMS, EXIT_REJECTED, CommandFailed
from tokenledger.cli.options import json_option, url_option
from tokenledger.cli.render import count, print_json
from tokenledger.domain.errors import NotSealed
from tokenledger.domain.records import jsonable

__all__ = ["register"]


def register(cli: click.Group) -> None:
    @cli.group("chain")
    def chain() -> None:
        """The on-chain view: export, reconciliation, inclusion proofs."""

    @chain.command("export")
    @click.option("--since", default=None, metavar="ISO", help="Only entries at or after this.")
    @url_option
    def export(since: str | None, url: str | None) -> int:
        """Every entry as an ERC-20 Transfer, as JSON Lines (seals first)."""
        with open_ledger(url) as ledger:
            out = sys.stdout
            for record in ledger.export_chain(since=since):
                out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            out.flush()
        return EXIT_OK

    @chain.command("reconcile")
    @click.argument(
        "snapshot_file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True)
    )
    @url_option
    def reconcile(snapshot_file: str, url: str | None) -> int:
        """Compare on-chain balances in FILE with the ledger; never writes.

        FILE ('-' for stdin) holds a JSON object mapping each address to its
        balance as an integer of 18 decimals (a string of digits also does).
        Exits 3 when any address differs.
        """
        snapshot = _read_snapshot(snapshot_file)
        with open_ledger(url) as ledger:
            mismatches = ledger.reconcile(snapshot)
        if not mismatches:
            click.echo(f"no mismatches: the {len(snapshot)} addresses in the snapshot agree")
            return EXIT_OK
        for m in mismatches:
            who = m.account_id or "unknown to the ledger"
            click.echo(
                f"{m.address} ({who}): ledger {m.ledger_value}, chain {m.chain_value}, "
                f"difference {m.chain_value - m.ledger_value:+d}"
            )
        click.echo(count(len(mismatches), "mismatch/mismatches"))
        return EXIT_PROBLEMS

    @chain.command("prove")
    @click.argument("entry_id", type=int)
    @json_option
    @url_option
    def prove(entry_id: int, as_json: bool, url: str | None) -> int:
        """The Merkle proof that a checkpoint covers ENTRY_ID."""
        with open_ledger(url) as ledger:
            try:
                proof = ledger.prove_inclusion(entry_id)
            except NotSealed as exc:
                raise CommandFailed(
                    f"{exc}: run 'tokenledger checkpoint' first", EXIT_REJECTED
                ) from exc
        valid = verify_inclusion(
            proof.entry_hash, proof.index, proof.size, proof.path, proof.merkle_root
        )
        if as_json:
            print_json({**jsonable(proof), "verified": valid})
            return EXIT_OK
        click.echo(
            f"entry {proof.entry_id} is chain position {proof.seq}, leaf {proof.index} of "
            f"{proof.size} under checkpoint {proof.checkpoint_id}"
        )
        click.echo(f"entry hash:  {proof.entry_hash}")
        click.echo(f"merkle root: {proof.merkle_root}")
        click.echo(f"audit path ({len(proof.path)} hashes):")
        for node in proof.path:
            click.echo(f"  {node}")
        click.echo(f"verified here: {'yes' if valid else 'NO'}")
        click.echo(
            "anyone can check it with tokenledger.chain.verify_inclusion("
            "entry_hash, index, size, path, merkle_root)"
        )
        return EXIT_OK if valid else EXIT_PROBLEMS


def _read_snapshot(path: str) -> dict[str, int]:
    """The address -> balance map of a reconcile FILE, or a usage error saying what is wrong."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path!r}: {exc}", param_hint="FILE") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{path!r} is not JSON: {exc}", param_hint="FILE") from exc
    if not isinstance(document, dict):
        raise click.BadParameter(
            f"{path!r} must hold a JSON object mapping addresses to balances", param_hint="FILE"
        )
    snapshot: dict[str, int] = {}
    for address, raw in document.items():
        # Big integers travel as strings in many JSON tools (JavaScript's among them).
        value = int(raw) if isinstance(raw, str) and raw.strip().lstrip("-").isdigit() else raw
        if isinstance(value, bool) or not isinstance(value, int):
            raise click.BadParameter(
                f"the balance of {address!r} must be an integer of 18 decimals, got {value!r}",
                param_hint="FILE",
            )
        snapshot[address] = value
    return snapshot
