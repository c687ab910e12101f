"""``tokenledger verify``, ``seal``, ``checkpoint``: the audit trail, and its anchors."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from tokenledger.cli._open import open_ledger
from tokenledger.cli.exits import EXIT_OK, EXIT_PROBLEMS
from tokenledger.cli.options import json_option, url_option
from tokenledger.cli.render import count
from tokenledger.domain.errors import InvalidArgument, StorageError
from tokenledger.domain.records import jsonable
from tokenledger.service.ledger import Ledger
from tokenledger.service.verification import Anchor, anchors_from

__all__ = ["register"]


def register(cli: click.Group) -> None:
    @cli.command("verify")
    @click.option(
        "--anchor",
        "anchor_file",
        metavar="FILE",
        type=click.Path(dir_okay=False, allow_dash=True),
        default=None,
        help="Anchors kept outside the database (checkpoint --json output, one per line): "
        "the books must extend every one.",
    )
    @json_option
    @url_option
    def verify(anchor_file: str | None, as_json: bool, url: str | None) -> int:
        """Check the whole books: exit 0 when whole (and extending every anchor), 3 when not."""
        anchors = None if anchor_file is None else _read_anchors(anchor_file)
        with open_ledger(url) as ledger:
            report = ledger.verify(anchor=anchors)
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        else:
            counts = report.counts
            scope = ", ".join(
                (
                    count(counts.get("entries", 0), "entry/entries"),
                    count(counts.get("accounts", 0), "account/accounts"),
                    count(counts.get("stakes", 0), "stake/stakes"),
                    f"{counts.get('sealed', 0)} sealed",
                    count(counts.get("checkpoints", 0), "checkpoint/checkpoints"),
                )
            )
            if report.ok:
                click.echo(f"OK: the books are whole ({scope})")
            else:
                found = count(len(report.problems), "problem/problems")
                click.echo(f"FAILED: {found} found ({scope})")
                for problem in report.problems:
                    click.echo(f"  {problem.kind}: {problem.message}")
                if counts.get("problems_not_listed"):
                    click.echo(f"  ... and {counts['problems_not_listed']} more")
        return EXIT_OK if report.ok else EXIT_PROBLEMS

    @cli.command("seal")
    @click.option(
        "--follow",
        is_flag=True,
        help="Keep sealing, every --interval seconds, until stopped (SIGTERM or Ctrl-C).",
    )
    @click.option(
        "--interval",
        type=click.FloatRange(min=0.01, max=3600),
        default=1.0,
        show_default=True,
        help="Seconds between seals with --follow: the chain's lag behind the commits.",
    )
    @url_option
    def seal(follow: bool, interval: float, url: str | None) -> int:
        """Link every committed, unsealed entry into the hash chain."""
        with open_ledger(url) as ledger:
            if follow:
                _seal_until_stopped(ledger, interval)
            else:
                click.echo(f"sealed {count(ledger.seal(), 'entry/entries')}")
        return EXIT_OK

    @cli.command("checkpoint")
    @json_option
    @url_option
    def checkpoint(as_json: bool, url: str | None) -> int:
        """Seal, then store a Merkle root over the new chain positions.

        With --json, print the checkpoint (the newest one when nothing is new)
        as one JSON object: append it to a file kept outside the database, and
        'tokenledger verify --anchor FILE' proves the books still extend it.
        """
        with open_ledger(url) as ledger:
            made = ledger.checkpoint()
            latest = made or ledger.latest_checkpoint()
        if as_json:
            if latest is None:
                click.echo("nothing sealed yet: no checkpoint to print", err=True)
                return EXIT_PROBLEMS
            click.echo(json.dumps(_anchor_json(latest), separators=(",", ":")))
            return EXIT_OK
        if made is None:
            click.echo("nothing new since the last checkpoint")
            return EXIT_OK
        size = made.last_seq - made.first_seq + 1
        click.echo(
            f"checkpoint {made.id}: chain positions {made.first_seq}..{made.last_seq} "
            f"({size} entries)"
        )
        click.echo(f"merkle root: {made.merkle_root}")
        click.echo(f"chain hash:  {made.chain_hash}")
        return EXIT_OK


def _seal_until_stopped(ledger: Ledger, interval: float) -> None:
    """Seal every ``interval`` seconds until SIGTERM or Ctrl-C; a failed seal is retried."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"sealing every {interval:g}s (SIGTERM or Ctrl-C stops)", err=True)
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                sealed = ledger.seal()
            except StorageError as exc:  # the database went away: try again later
                click.echo(f"seal failed, retrying: {exc}", err=True)
            else:
                if sealed:
                    click.echo(f"sealed {count(sealed, 'entry/entries')}")
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass


def _anchor_json(checkpoint: Any) -> dict[str, Any]:
    return dict(jsonable(checkpoint))


def _read_anchors(path: str) -> tuple[Anchor, ...]:
    """The anchors of a FILE: a JSON object, a JSON list, or JSON Lines of objects.

    Raises:
        click.BadParameter: the file cannot be read or holds no well-formed anchor.
    """
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path!r}: {exc}", param_hint="--anchor") from exc
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        documents = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                documents.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise click.BadParameter(
                    f"{path!r} line {number} is not JSON: {exc}", param_hint="--anchor"
                ) from exc
    else:
        documents = whole if isinstance(whole, list) else [whole]
    if not documents:
        raise click.BadParameter(f"{path!r} holds no anchor", param_hint="--anchor")
    try:
        return anchors_from(documents)
    except InvalidArgument as exc:
        raise click.BadParameter(f"{path!r}: {exc}", param_hint="--anchor") from exc
