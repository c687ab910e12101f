"""``tokenledger serve`` (the HTTP API) and ``tokenledger demo`` (the demonstration economy)."""

from __future__ import annotations

from contextlib import suppress

import click
from rich.text import Text

from tokenledger.cli._open import open_ledger, resolve, shown
from tokenledger.cli.demo import (
    DEFAULT_AGENTS,
    DEFAULT_ROUNDS,
    DEFAULT_SEED,
    MAX_AGENTS,
    MAX_ROUNDS,
    MIN_AGENTS,
    DemoConfig,
    foreign_account,
    run_demo,
)
from tokenledger.cli.exits import (
    EXIT_MISSING_EXTRA,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_REJECTED,
    CommandFailed,
)
from tokenledger.cli.options import url_option
from tokenledger.cli.render import console, demo_progress, print_demo
from tokenledger.service.ledger import Ledger

__all__ = ["register"]


def register(cli: click.Group) -> None:
    @cli.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
    @click.option(
        "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port."
    )
    @url_option
    def serve(host: str, port: int, url: str | None) -> int:
        """Serve the read-only HTTP API with uvicorn.

        The app is tokenledger.api.create_app(ledger); Ctrl-C or SIGTERM stops it.
        """
        try:
            import uvicorn  # noqa: PLC0415  (only serve needs the server)

            from tokenledger.api import create_app  # noqa: PLC0415  (the 'api' extra)
        except ImportError as exc:
            raise CommandFailed(
                f"serve needs the 'api' and 'cli' extras ({exc}): "
                "pip install 'tokenledger[api,cli]'",
                EXIT_MISSING_EXTRA,
            ) from exc
        with open_ledger(url) as ledger:
            app = create_app(ledger)
            where = shown(resolve(url))
            click.echo(f"serving {where} on http://{host}:{port} (Ctrl-C stops)", err=True)
            # uvicorn shuts down gracefully, then re-raises Ctrl-C: the
            # documented way to stop the server is not an error.
            with suppress(KeyboardInterrupt):
                uvicorn.run(app, host=host, port=port)
        return EXIT_OK

    @cli.command("demo")
    @click.option(
        "--agents",
        type=click.IntRange(MIN_AGENTS, MAX_AGENTS),
        default=DEFAULT_AGENTS,
        show_default=True,
        help="How many agents take part.",
    )
    @click.option(
        "--rounds",
        type=click.IntRange(1, MAX_ROUNDS),
        default=DEFAULT_ROUNDS,
        show_default=True,
        help="How many rounds of debates, hypotheses, auctions and payments.",
    )
    @click.option(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        show_default=True,
        help="The random seed: one seed, one economy.",
    )
    @click.option(
        "--force",
        is_flag=True,
        help="Play even in a database that holds accounts other than the demo's.",
    )
    @click.option(
        "--chain",
        "on_chain",
        is_flag=True,
        help="End on chain: deploy the token to a local anvil, push every entry, reconcile "
        "(needs the 'chain' extra and anvil).",
    )
    @url_option
    def demo(
        agents: int, rounds: int, seed: int, force: bool, on_chain: bool, url: str | None
    ) -> int:
        """Play a small agent economy, then check that the books balance.

        Agents (demo-<role>-NNN) are endowed, rewarded for debates and
        hypotheses, bid on artifacts with stakes, pay each other and burn
        fees. Running it again continues the same economy: existing demo
        accounts are reused. The journal is append-only, so the demo refuses
        a database with other accounts unless --force is given.
        """
        config = DemoConfig(agents=agents, rounds=rounds, seed=seed)
        with open_ledger(url) as ledger:
            where = shown(resolve(url))
            other = foreign_account(ledger, config.prefix)
            if other is not None and not force:
                raise CommandFailed(
                    f"{where} holds accounts that are not the demo's (such as {other!r}), and "
                    "demo entries cannot be removed from an append-only journal: use another "
                    "database (e.g. --url sqlite:///demo.db) or pass --force",
                    EXIT_REJECTED,
                )
            out = console()
            out.print(
                Text(
                    f"Demo economy: {agents} agents, {rounds} rounds, seed {seed}, on {where}",
                    style="bold",
                )
            )
            with demo_progress(out, rounds) as progress:
                result = run_demo(ledger, config, progress)
            print_demo(out, result)
            chain_ok = _demo_on_chain(ledger) if on_chain else True
        return EXIT_OK if result.integrity.ok and chain_ok else EXIT_PROBLEMS


def _demo_on_chain(ledger: Ledger) -> bool:
    """The demo's journal replayed on a local anvil, then reconciled; True when they agree."""
    try:
        from tokenledger.chain import bridge  # noqa: PLC0415
        from tokenledger.chain.local import fresh_funded_key, local_anvil  # noqa: PLC0415
        from tokenledger.chain.node import Node  # noqa: PLC0415
    except ImportError as exc:
        raise CommandFailed(str(exc), EXIT_MISSING_EXTRA) from exc
    with local_anvil() as rpc:
        node = Node(rpc, fresh_funded_key(rpc))
        deployment = bridge.deploy(ledger, node)
        click.echo(f"on chain: token contract {deployment.address} on a local anvil ({rpc})")
        report = bridge.push(ledger, node, batch=100)
        click.echo(f"on chain: pushed {report.sent} entries in {report.transactions} transactions")
        result = bridge.reconcile(ledger, node)
    if result.ok:
        click.echo(
            f"on chain: reconciled at block {result.block}: {result.accounts} accounts, the "
            f"escrow, the total supply and {result.logs} Transfer logs agree"
        )
        return True
    for divergence in result.divergences:
        click.echo(f"on chain: {divergence.message}")
    click.echo(f"on chain: {len(result.mismatches)} balances differ")
    return False
