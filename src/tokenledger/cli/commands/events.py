"""``tokenledger events``: the sealed journal in chain order, once or as it grows."""

from __future__ import annotations

import json
import signal
import threading

import click

from tokenledger.cli._open import open_ledger
from tokenledger.cli.exits import EXIT_OK
from tokenledger.cli.options import json_option, url_option
from tokenledger.cli.render import amount
from tokenledger.domain.records import Event, jsonable

__all__ = ["register"]

# How long one wait for new events lasts with --follow before it looks again.
FOLLOW_WAIT = 5.0


def register(cli: click.Group) -> None:
    @cli.command("events")
    @click.option(
        "--after",
        type=click.IntRange(min=0),
        default=None,
        help="Start after this chain position (default: 0, or the consumer's position).",
    )
    @click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
    @click.option("--follow", is_flag=True, help="Keep printing events as they are sealed.")
    @click.option(
        "--consumer",
        "consumer_name",
        default=None,
        metavar="NAME",
        help="Start after this durable consumer's position, and commit it after each "
        "batch printed (at least once: a crash between the two prints a batch again).",
    )
    @json_option
    @url_option
    def events(
        after: int | None,
        limit: int,
        follow: bool,
        consumer_name: str | None,
        as_json: bool,
        url: str | None,
    ) -> int:
        """Print the sealed journal in chain order (seals what is committed first).

        Each line is one event: its chain position, entry id, parties, amount
        and reason, or with --json one JSON object per line (JSON Lines).
        """
        stop = threading.Event()
        if follow:
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with open_ledger(url) as ledger:
            consumer = None if consumer_name is None else ledger.consumer(consumer_name)
            position = after if after is not None else (consumer.position() if consumer else 0)
            try:
                while not stop.is_set():
                    page = ledger.events(position, limit, wait=FOLLOW_WAIT if follow else None)
                    for event in page:
                        click.echo(_line(event, as_json))
                    if page:
                        position = page[-1].seq
                        if consumer is not None:
                            consumer.commit(position)
                    if not follow:
                        break
            except KeyboardInterrupt:
                pass
        return EXIT_OK


def _line(event: Event, as_json: bool) -> str:
    if as_json:
        return json.dumps(jsonable(event), ensure_ascii=False, separators=(",", ":"))
    return (
        f"{event.seq}\tentry {event.id}\t{event.from_account} -> {event.to_account}\t"
        f"{amount(event.amount)}\t{event.reason}"
    )
