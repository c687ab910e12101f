"""``tokenledger chain``: the on-chain view and the bridge to a real node.

``export``, ``reconcile FILE`` and ``prove`` work from the database alone.
``deploy``, ``push``, ``status``, ``reconcile --rpc`` and ``anchor`` talk
to an EVM node (extra ``chain``): the endpoint is ``--rpc`` or
``$TOKENLEDGER_CHAIN_RPC``; the operator's key is ``$TOKENLEDGER_CHAIN_KEY``
or the file ``--key-file`` names, never an argument, and it is never
printed. See docs/chain.md.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tokenledger.chain import verify_inclusion
from tokenledger.cli._open import open_ledger
from tokenledger.cli.exits import (
    EXIT_MISSING_EXTRA,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_REJECTED,
    EXIT_USAGE,
    CommandFailed,
)
from tokenledger.cli.options import json_option, url_option
from tokenledger.cli.render import count, print_json
from tokenledger.domain.errors import NotSealed
from tokenledger.domain.records import jsonable

if TYPE_CHECKING:
    from tokenledger.chain.node import Node

__all__ = ["KEY_ENV", "RPC_ENV", "register"]

RPC_ENV = "TOKENLEDGER_CHAIN_RPC"
KEY_ENV = "TOKENLEDGER_CHAIN_KEY"


def _rpc_option(command: Any) -> Any:
    return click.option(
        "--rpc",
        metavar="URL",
        default=None,
        help=f"The node's JSON-RPC endpoint (default: ${RPC_ENV}).",
    )(command)


def _key_file_option(command: Any) -> Any:
    return click.option(
        "--key-file",
        type=click.Path(dir_okay=False, exists=True),
        default=None,
        help=f"A file holding the operator's 0x-hex private key (default: ${KEY_ENV}).",
    )(command)


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
        "snapshot_file",
        metavar="[FILE]",
        required=False,
        type=click.Path(dir_okay=False, allow_dash=True),
    )
    @_rpc_option
    @json_option
    @url_option
    def reconcile(
        snapshot_file: str | None, rpc: str | None, as_json: bool, url: str | None
    ) -> int:
        """Compare the chain with the ledger (FILE, or the node at --rpc); never writes.

        FILE ('-' for stdin) holds a JSON object mapping each address to its
        balance as an integer of 18 decimals (a string of digits also does).
        Without FILE, the node at --rpc (or $TOKENLEDGER_CHAIN_RPC) is read at
        its latest block: balanceOf of every account and of the escrow,
        totalSupply, and every Transfer log of the token contract. Exits 3
        when anything differs, naming each difference.
        """
        if snapshot_file is None:
            return _reconcile_node(rpc, as_json, url)
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

    _register_bridge(chain)


def _register_bridge(chain: click.Group) -> None:
    @chain.command("deploy")
    @_rpc_option
    @_key_file_option
    @json_option
    @url_option
    def deploy(rpc: str | None, key_file: str | None, as_json: bool, url: str | None) -> int:
        """Deploy the ledger's token contract with the operator key, and record it."""
        with _node(rpc, key_file) as node, open_ledger(url) as ledger:
            bridge = _bridge()

            deployment = bridge.deploy(ledger, node)
        if as_json:
            # Exactly the two keys CONTRACT.md names; the transaction is in the text form.
            print_json({"address": deployment.address, "chain_id": deployment.chain_id})
        else:
            click.echo(
                f"deployed the token contract at {deployment.address} on chain "
                f"{deployment.chain_id} (block {deployment.block_number}, "
                f"transaction {deployment.tx_hash})"
            )
        return EXIT_OK

    @chain.command("push")
    @click.option(
        "--batch",
        type=click.IntRange(1, 256),
        default=100,
        show_default=True,
        help="Entries per transaction (1: one mint, burn or move each).",
    )
    @click.option(
        "--window",
        type=click.IntRange(min=1),
        default=64,
        show_default=True,
        help="Transactions in flight before their receipts are awaited.",
    )
    @_rpc_option
    @_key_file_option
    @json_option
    @url_option
    def push(
        batch: int,
        window: int,
        rpc: str | None,
        key_file: str | None,
        as_json: bool,
        url: str | None,
    ) -> int:
        """Send every sealed entry not yet on chain, in chain order, and wait for the receipts.

        Exactly once: after an interruption at any moment, running it again
        sends no entry twice and skips none (the contract's record of applied
        entries is the truth). Exits 0 when everything sealed is on chain.
        """
        bridge = _bridge()

        with (
            _node(rpc, key_file) as node,
            open_ledger(url) as ledger,
            _progress(as_json) as progress,
        ):
            report = bridge.push(ledger, node, batch=batch, window=window, progress=progress)
        if as_json:
            print_json(report)
        else:
            click.echo(
                f"pushed {count(report.sent, 'entry/entries')} in "
                f"{count(report.transactions, 'transaction/transactions')}; the chain holds "
                f"{report.chain_seq} of {report.sealed_seq} sealed"
                + (f" ({report.rederived} receipts re-derived)" if report.rederived else "")
            )
        return EXIT_OK if report.chain_seq >= report.sealed_seq else EXIT_PROBLEMS

    @chain.command("status")
    @click.option(
        "--confirmations",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Blocks deep a receipt must be to count as confirmed.",
    )
    @_rpc_option
    @json_option
    @url_option
    def status(confirmations: int, rpc: str | None, as_json: bool, url: str | None) -> int:
        """Sealed, sent, confirmed and pending entries, and the node's last block."""
        bridge = _bridge()

        with _node(rpc, None, signs=False) as node, open_ledger(url) as ledger:
            state = bridge.status(ledger, node, confirmations=confirmations)
        if as_json:
            print_json(state)
        else:
            click.echo(f"token contract {state.address} on chain {state.chain_id}")
            click.echo(f"sealed:    {state.sealed}")
            click.echo(f"sent:      {state.on_chain} (applied on chain)")
            click.echo(f"confirmed: {state.confirmed} (receipts {confirmations}+ blocks deep)")
            click.echo(f"pending:   {state.pending}")
            click.echo(f"last block: {state.last_block}")
        return EXIT_OK

    @chain.command("anchor")
    @_rpc_option
    @_key_file_option
    @json_option
    @url_option
    def anchor(rpc: str | None, key_file: str | None, as_json: bool, url: str | None) -> int:
        """Record the latest checkpoint (taken now if needed) in the token contract."""
        bridge = _bridge()

        with _node(rpc, key_file) as node, open_ledger(url) as ledger:
            checkpoint = bridge.anchor(ledger, node)
        if as_json:
            print_json(
                {
                    "last_seq": checkpoint.last_seq,
                    "chain_hash": checkpoint.chain_hash,
                    "merkle_root": checkpoint.merkle_root,
                }
            )
        else:
            click.echo(
                f"anchored checkpoint {checkpoint.id} (chain position {checkpoint.last_seq}, "
                f"merkle root {checkpoint.merkle_root}) on chain"
            )
        return EXIT_OK

    @chain.command("anchor-show")
    @_rpc_option
    @url_option
    def anchor_show(rpc: str | None, url: str | None) -> int:
        """Print the anchor the token contract holds, as JSON for 'verify --anchor FILE'."""
        bridge = _bridge()

        with _node(rpc, None, signs=False) as node, open_ledger(url) as ledger:
            held = bridge.read_anchor(ledger, node)
        if held is None:
            raise CommandFailed("the token contract holds no anchor yet", EXIT_REJECTED)
        click.echo(json.dumps(held))
        return EXIT_OK


def _reconcile_node(rpc: str | None, as_json: bool, url: str | None) -> int:
    bridge = _bridge()

    with _node(rpc, None, signs=False) as node, open_ledger(url) as ledger:
        result = bridge.reconcile(ledger, node)
    if as_json:
        print_json({**jsonable(result), "ok": result.ok})
        return EXIT_OK if result.ok else EXIT_PROBLEMS
    problems = 0
    for m in result.mismatches:
        who = m.account_id or "unknown to the ledger"
        click.echo(
            f"balance of {m.address} ({who}): ledger {m.ledger_value}, chain {m.chain_value}, "
            f"difference {m.chain_value - m.ledger_value:+d}"
        )
        problems += 1
    if result.ledger_supply != result.chain_supply:
        click.echo(f"total supply: ledger {result.ledger_supply}, chain {result.chain_supply}")
        problems += 1
    if result.sealed_seq != result.chain_seq:
        click.echo(
            f"the chain holds {result.chain_seq} of {result.sealed_seq} sealed entries: "
            "run 'tokenledger chain push'"
        )
        problems += 1
    for divergence in result.divergences:
        click.echo(divergence.message)
        problems += 1
    if not problems:
        click.echo(
            f"the chain agrees at block {result.block}: "
            f"{count(result.accounts, 'account/accounts')}, the escrow, the total supply "
            f"and {count(result.logs, 'Transfer log/Transfer logs')}"
        )
        return EXIT_OK
    click.echo(f"{count(problems, 'difference/differences')} at block {result.block}")
    return EXIT_PROBLEMS


def _bridge() -> Any:
    """``tokenledger.chain.bridge``, or exit 5 naming the extra it needs."""
    try:
        from tokenledger.chain import bridge  # noqa: PLC0415 -- the 'chain' extra
    except ImportError as exc:
        raise CommandFailed(str(exc), EXIT_MISSING_EXTRA) from exc
    return bridge


@contextmanager
def _node(rpc: str | None, key_file: str | None, *, signs: bool = True) -> Iterator[Node]:
    """The node to talk to; with the operator key for a command that ``signs``.

    A read-only command never reads the key, so a bad one cannot stop it.
    """
    endpoint = rpc or os.environ.get(RPC_ENV)
    if not endpoint:
        raise CommandFailed(f"no node: pass --rpc URL or set {RPC_ENV}", EXIT_USAGE)
    try:
        from tokenledger.chain.node import Node  # noqa: PLC0415
    except ImportError as exc:
        raise CommandFailed(str(exc), EXIT_MISSING_EXTRA) from exc
    key: str | None
    if not signs:
        key = None
    elif key_file is not None:
        try:
            key = Path(key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CommandFailed(f"cannot read the key file: {exc.strerror}", EXIT_USAGE) from None
        except UnicodeDecodeError:
            # Not the decoder's message: it quotes the bytes it stopped at.
            raise CommandFailed("the key file is not text", EXIT_USAGE) from None
    else:
        key = os.environ.get(KEY_ENV) or None
    yield Node(endpoint, key)


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when it is a terminal; nothing otherwise (logs stay clean)."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    out = Console(stderr=True)
    if quiet or not out.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("pushing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("entries"),
        TimeRemainingColumn(),
        console=out,
    )
    task = bar.add_task("push", total=None)

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield advance


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
