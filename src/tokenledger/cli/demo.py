"""A small agent economy run against a ledger, to watch the books under realistic use.

``run_demo(ledger, DemoConfig(...))`` plays rounds of a science economy:

* agents are endowed when their accounts are opened;
* debates and hypotheses are rewarded with new tokens (mints), a few of them
  sent twice with the same idempotency key, as a client that timed out would;
* artifacts are auctioned: bids are stakes, the winner's stake is settled to
  the author at the second-highest bid (the rest returns to the winner), the
  losers' stakes are released less a fee that is burned or paid to the
  treasury, and the author pays a marketplace fee that is burned;
* agents pay each other for reviews, compute and data (transfers), and now
  and then try to spend more than they have, which the ledger refuses.

Every random choice comes from one ``random.Random(seed)``, so on an empty
database a given seed writes the same economy every time (timestamps and the
run id aside). The demo keeps its own account of every balance and checks it
against the ledger at the end, after ``verify()``, ``seal()`` and
``checkpoint()``.

Re-running is safe: agents are named ``<prefix>-<role>-NNN`` and an account
that already exists is reused as it is (``AccountExists`` is expected), so a
second run continues the same economy. Each run has its own run id, used in
reference ids and idempotency keys, so no key of one run replays another's.
Because a journal is append-only, ``foreign_accounts`` lets a caller refuse
to play the demo in a database that holds anyone else's accounts.

This module is a library that uses only ``Ledger``: it prints nothing and
imports no CLI packages (``cli/render.py`` draws its results).
"""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

from tokenledger.domain.errors import AccountExists, InsufficientFunds, InvalidArgument, NotSealed
from tokenledger.domain.hashing import verify_inclusion
from tokenledger.domain.records import Checkpoint, LedgerEntry, Stake, SupplyReport, VerifyReport
from tokenledger.service.ledger import Ledger

__all__ = [
    "DEFAULT_AGENTS",
    "DEFAULT_ROUNDS",
    "DEFAULT_SEED",
    "MAX_AGENTS",
    "MAX_ROUNDS",
    "MIN_AGENTS",
    "ROLES",
    "DemoConfig",
    "DemoResult",
    "DemoStats",
    "Integrity",
    "ProgressCallback",
    "agent_ids",
    "foreign_account",
    "run_demo",
    "treasury_id",
]

ROLES = ("theorist", "experimentalist", "reviewer", "synthesizer", "skeptic")
DEFAULT_AGENTS = 40
DEFAULT_ROUNDS = 60
DEFAULT_SEED = 42
MIN_AGENTS = 3  # an auction needs an author and two bidders
MAX_AGENTS = 1000
MAX_ROUNDS = 10_000

CENT = Decimal("0.01")
SERVICES = ("peer_review", "compute_rental", "data_license", "replication_bounty")
BID_FEE = Decimal("0.02")  # of a losing bid, when it is released
MARKET_FEE = Decimal("0.01")  # of a sale price, burned from the author
RETRY_RATE = 0.05  # share of reward calls sent twice, as after a client timeout
OVERDRAFT_RATE = 0.15  # share of rounds in which one agent tries to overspend
SEAL_PATIENCE = 10.0  # seconds to wait for the run's last entry to be sealed

ProgressCallback = Callable[[int, int, "DemoStats"], None]
"""Called after each round with (rounds done, rounds in total, the running stats)."""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """What to play: how many agents, how many rounds, which seed, which id prefix.

    Raises:
        InvalidArgument: for sizes out of range or a prefix the ledger reserves.
    """

    agents: int = DEFAULT_AGENTS
    rounds: int = DEFAULT_ROUNDS
    seed: int = DEFAULT_SEED
    prefix: str = "demo"

    def __post_init__(self) -> None:
        if isinstance(self.agents, bool) or not MIN_AGENTS <= self.agents <= MAX_AGENTS:
            raise InvalidArgument(f"agents must be {MIN_AGENTS}..{MAX_AGENTS}, got {self.agents}")
        if isinstance(self.rounds, bool) or not 1 <= self.rounds <= MAX_ROUNDS:
            raise InvalidArgument(f"rounds must be 1..{MAX_ROUNDS}, got {self.rounds}")
        if not self.prefix or self.prefix.startswith("system") or len(self.prefix) > 64:
            raise InvalidArgument(
                f"prefix must be 1..64 characters, not 'system...': {self.prefix!r}"
            )


@dataclass(slots=True)
class DemoStats:
    """What the run wrote, counted as it goes."""

    writes: Counter[str] = field(default_factory=Counter)
    """Ledger writes by kind (``debate_reward``, ``artifact_bid``, ``transfer``...)."""
    minted: Decimal = Decimal(0)
    burned: Decimal = Decimal(0)
    transferred: Decimal = Decimal(0)
    """Tokens that changed hands between agents (transfers and sales)."""
    retries: int = 0
    """Reward calls sent a second time with the same idempotency key."""
    retries_that_wrote: int = 0
    """Of those, how many wrote a second entry (the ledger must keep this at 0)."""
    refused: int = 0
    """Overdrafts attempted on purpose and refused with ``InsufficientFunds``."""
    accounts_created: int = 0
    accounts_reused: int = 0

    @property
    def total_writes(self) -> int:
        """Every ledger write of the run, all kinds together."""
        return sum(self.writes.values())


@dataclass(frozen=True, slots=True)
class Integrity:
    """The end-of-run checks that the books balance."""

    report: VerifyReport
    sealed: int
    checkpoint: Checkpoint | None
    conserved: bool
    """minted - burned equals the total supply (balances plus stakes)."""
    tracked_accounts: int
    mismatched_accounts: list[str]
    """Accounts whose ledger balance differs from the demo's own bookkeeping."""
    proof_entry_id: int | None
    proof_valid: bool | None
    """Whether the last entry's Merkle proof checks against its checkpoint's root
    (``None``: not checked, the entry was not sealed in time)."""
    duplicated_retries: int
    """Retried rewards that wrote a second entry despite their idempotency key."""

    @property
    def ok(self) -> bool:
        """True when every check passed (a proof not checked does not fail the run)."""
        return (
            self.report.ok
            and self.conserved
            and not self.mismatched_accounts
            and self.proof_valid is not False
            and not self.duplicated_retries
        )


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What ``run_demo`` played and found: counts, the supply report, the checks."""

    config: DemoConfig
    run_id: str
    agents: list[str]
    treasury: str
    stats: DemoStats
    supply: SupplyReport
    integrity: Integrity
    seconds: float
    statement: list[LedgerEntry] = field(default_factory=list)


def agent_ids(config: DemoConfig) -> list[str]:
    """The demo's agent account ids, e.g. ``demo-theorist-001``."""
    return [f"{config.prefix}-{ROLES[n % len(ROLES)]}-{n + 1:03d}" for n in range(config.agents)]


def treasury_id(config: DemoConfig) -> str:
    """The account that collects the fees not burned."""
    return f"{config.prefix}-treasury"


def foreign_account(ledger: Ledger, prefix: str = "demo") -> str | None:
    """An account in the ledger's database that is not the demo's (by id prefix), if any.

    ``None`` when the ledger is bound to a caller's transaction, where the
    caller decides what it plays in.
    """
    if ledger.engine is None:
        return None
    after: str | None = None
    while True:
        page = ledger.list_accounts(after=after, limit=1000)
        for account in page:
            if not account.account_id.startswith(f"{prefix}-"):
                return account.account_id
        if len(page) < 1000:
            return None
        after = page[-1].account_id


def run_demo(
    ledger: Ledger,
    config: DemoConfig | None = None,
    progress: ProgressCallback | None = None,
) -> DemoResult:
    """Play ``config.rounds`` rounds on ``ledger``, then check the books.

    Args:
        ledger: where to write; the demo's accounts are created or reused.
        config: the size, seed and id prefix (defaults: 40 agents, 60 rounds).
        progress: called after every round, e.g. to draw a progress bar.

    Returns:
        What was written, the supply report and the integrity checks.
    """
    config = config or DemoConfig()
    started = time.perf_counter()
    economy = _Economy(ledger, config)
    economy.open_accounts()
    for number in range(1, config.rounds + 1):
        economy.play_round(number)
        if progress is not None:
            progress(number, config.rounds, economy.stats)
    integrity = economy.check()
    supply = ledger.supply_report()
    top = supply.distribution.top_holders
    return DemoResult(
        config=config,
        run_id=economy.run_id,
        agents=economy.agents,
        treasury=economy.treasury,
        stats=economy.stats,
        supply=supply,
        integrity=integrity,
        seconds=time.perf_counter() - started,
        # The richest agent's latest entries, as a statement would show them.
        statement=ledger.get_statement(top[0].account_id, limit=5) if top else [],
    )


class _Economy:
    """One run: the random source, the demo's own view of balances, the counters."""

    def __init__(self, ledger: Ledger, config: DemoConfig) -> None:
        self.ledger = ledger
        self.config = config
        self.rng = random.Random(config.seed)  # noqa: S311  (a reproducible simulation, no secret)
        # Not from the seeded generator: two runs with one seed on one database
        # must not share idempotency keys, or the second would replay the first.
        self.run_id = f"run-{secrets.token_hex(4)}"
        self.agents = agent_ids(config)
        self.treasury = treasury_id(config)
        # Some agents are better scientists than others: skill weights who wins
        # debates and how often hypotheses come, so wealth does not stay even.
        self.skill = {agent: self.rng.paretovariate(1.5) for agent in self.agents}
        self.balances: dict[str, Decimal] = {}
        self.stats = DemoStats()
        self.last_entry_id: int | None = None

    # -- setup -------------------------------------------------------------

    def open_accounts(self) -> None:
        for agent in self.agents:
            # Drawn even for an existing account, so one seed draws one sequence.
            endowment = self._tokens(500, 2000)
            self._open(agent, endowment)
        self._open(self.treasury, Decimal(0))

    def _open(self, account_id: str, initial: Decimal) -> None:
        try:
            self.ledger.create_account(account_id, initial)
        except AccountExists:
            self.balances[account_id] = self.ledger.get_balance(account_id)
            self.stats.accounts_reused += 1
            return
        self.balances[account_id] = initial
        self.stats.accounts_created += 1
        if initial:
            self.stats.writes["endowment"] += 1
            self.stats.minted += initial

    # -- one round ---------------------------------------------------------

    def play_round(self, number: int) -> None:
        for debate in range(1, max(1, len(self.agents) // 8) + 1):
            self._debate(number, debate)
        for agent in self.agents:
            if self.rng.random() < min(0.6, 0.12 * self.skill[agent]):
                self._hypothesis(number, agent)
        for artifact in range(1, max(1, len(self.agents) // 16) + 1):
            self._auction(number, artifact)
        for _ in range(max(1, len(self.agents) // 4)):
            self._service_payment(number)
        if self.rng.random() < OVERDRAFT_RATE:
            self._overdraft(number)

    def _debate(self, number: int, debate: int) -> None:
        size = min(len(self.agents), self.rng.randint(3, 5))
        participants = self.rng.sample(self.agents, size)
        reference = f"{self.run_id}/round-{number}/debate-{debate}"
        for agent in participants:
            self._reward(agent, self._tokens(5, 25), "debate_reward", "debate", reference)
        winner = self.rng.choices(participants, weights=[self.skill[a] for a in participants])[0]
        self._reward(winner, self._tokens(10, 40), "debate_win", "debate", reference)

    def _hypothesis(self, number: int, agent: str) -> None:
        reference = f"{self.run_id}/round-{number}/hypothesis-{agent}"
        self._reward(agent, self._tokens(2, 15), "hypothesis_reward", "hypothesis", reference)

    def _reward(self, agent: str, amount: Decimal, reason: str, kind: str, reference: str) -> None:
        key = f"{reference}/{reason}/{agent}"
        entry = self.ledger.mint(agent, amount, reason, kind, reference, idempotency_key=key)
        self._record(entry)
        self.stats.writes[reason] += 1
        self.stats.minted += amount
        if self.rng.random() < RETRY_RATE:
            # The same call again, as a client would send it after a timeout:
            # the ledger must answer with the first entry and write nothing.
            again = self.ledger.mint(agent, amount, reason, kind, reference, idempotency_key=key)
            self.stats.retries += 1
            if again.id != entry.id:
                self.stats.retries_that_wrote += 1
                self._record(again)

    def _auction(self, number: int, artifact: int) -> None:
        author = self.rng.choice(self.agents)
        others = [agent for agent in self.agents if agent != author]
        bidders = self.rng.sample(others, min(len(others), self.rng.randint(2, 5)))
        reference = f"{self.run_id}/round-{number}/artifact-{artifact}"
        bids: list[tuple[Decimal, Stake]] = []
        for bidder in bidders:
            amount = self._share(self.balances[bidder], 2, 15)
            if amount < 1:
                continue
            stake = self.ledger.stake(bidder, amount, "artifact_bid", "artifact", reference)
            self.balances[bidder] -= amount
            self.stats.writes["artifact_bid"] += 1
            bids.append((amount, stake))
        if not bids:
            return
        # A Vickrey auction: the best bid wins and pays the second-best price.
        bids.sort(key=lambda bid: (-bid[0], bid[1].id))
        best, winning = bids[0]
        price = bids[1][0] if len(bids) > 1 else (best * Decimal("0.8")).quantize(CENT)
        self.ledger.settle(winning.id, author, "artifact_sale", amount=price)
        self.balances[author] += price
        self.balances[winning.account_id] += best - price
        self.stats.writes["artifact_sale"] += 1
        self.stats.transferred += price
        for amount, stake in bids[1:]:
            self._release_losing_bid(amount, stake)
        fee = (price * MARKET_FEE).quantize(CENT, rounding=ROUND_DOWN)
        if fee > 0:
            entry = self.ledger.burn(author, fee, "marketplace_fee", "artifact", reference)
            self._record(entry)
            self.stats.writes["marketplace_fee"] += 1
            self.stats.burned += fee

    def _release_losing_bid(self, amount: Decimal, stake: Stake) -> None:
        fee = (amount * BID_FEE).quantize(CENT, rounding=ROUND_DOWN)
        to_treasury = self.rng.random() < 0.5
        if fee <= 0:
            self.ledger.release(stake.id, "bid_lost")
        elif to_treasury:
            self.ledger.release(stake.id, "bid_lost", fee=fee, fee_account=self.treasury)
            self.balances[self.treasury] += fee
        else:
            self.ledger.release(stake.id, "bid_lost", fee=fee)
            self.stats.burned += fee
        self.balances[stake.account_id] += amount - fee
        self.stats.writes["bid_released"] += 1

    def _service_payment(self, number: int) -> None:
        payer, payee = self.rng.sample(self.agents, 2)
        service = self.rng.choice(SERVICES)
        amount = self._share(self.balances[payer], 1, 8)
        if amount <= 0:
            return
        reference = f"{self.run_id}/round-{number}/{service}"
        entry = self.ledger.transfer(payer, payee, amount, service, "service", reference)
        self._record(entry)
        self.stats.writes["transfer"] += 1
        self.stats.transferred += amount

    def _overdraft(self, number: int) -> None:
        payer, payee = self.rng.sample(self.agents, 2)
        too_much = self.balances[payer] + self._tokens(1, 100)
        reference = f"{self.run_id}/round-{number}/overdraft"
        try:
            self.ledger.transfer(payer, payee, too_much, "overdraft_attempt", "service", reference)
        except InsufficientFunds:
            self.stats.refused += 1
        else:  # the ledger let an agent overspend: the checks at the end will show it
            self.balances[payer] -= too_much
            self.balances[payee] += too_much

    # -- bookkeeping -------------------------------------------------------

    def _record(self, entry: LedgerEntry) -> None:
        """Apply an entry to the demo's own view of the balances."""
        if entry.from_account in self.balances:
            self.balances[entry.from_account] -= entry.amount
        if entry.to_account in self.balances:
            self.balances[entry.to_account] += entry.amount
        self.last_entry_id = entry.id

    def _tokens(self, low: int, high: int) -> Decimal:
        """A random amount of ``low``..``high`` tokens, to the cent."""
        return Decimal(self.rng.randint(low * 100, high * 100)).scaleb(-2)

    def _share(self, balance: Decimal, low_percent: int, high_percent: int) -> Decimal:
        """A random share of ``balance``, rounded down to the cent."""
        percent = Decimal(self.rng.randint(low_percent * 100, high_percent * 100)).scaleb(-4)
        return (balance * percent).quantize(CENT, rounding=ROUND_DOWN)

    # -- the end -----------------------------------------------------------

    def check(self) -> Integrity:
        ledger = self.ledger
        sealed, checkpoint, proof_valid = self._seal_and_prove()
        report = ledger.verify()
        supply = ledger.get_total_supply()
        summary = ledger.supply_report()
        mismatched = [
            account
            for account, expected in sorted(self.balances.items())
            if ledger.get_balance(account) != expected
        ]
        return Integrity(
            report=report,
            sealed=sealed,
            checkpoint=checkpoint,
            conserved=summary.minted - summary.burned == supply == summary.total_supply,
            tracked_accounts=len(self.balances),
            mismatched_accounts=mismatched,
            proof_entry_id=self.last_entry_id,
            proof_valid=proof_valid,
            duplicated_retries=self.stats.retries_that_wrote,
        )

    def _seal_and_prove(self) -> tuple[int, Checkpoint | None, bool | None]:
        """Seal, checkpoint, and check the Merkle proof of the run's last entry.

        On PostgreSQL, ``seal`` links only entries whose writers ended before
        every transaction still open on the server, so a transaction open
        elsewhere can hold the newest entries back for a moment: try again
        for up to ``SEAL_PATIENCE`` seconds, then report the proof unchecked.
        """
        ledger = self.ledger
        deadline = time.monotonic() + SEAL_PATIENCE
        sealed = ledger.seal()
        checkpoint = ledger.checkpoint()
        if self.last_entry_id is None:
            return sealed, checkpoint, None
        while True:
            try:
                proof = ledger.prove_inclusion(self.last_entry_id)
            except NotSealed:  # not sealed, or not under a checkpoint, yet
                if time.monotonic() > deadline:
                    return sealed, checkpoint, None
                time.sleep(0.05)
                sealed += ledger.seal()
                checkpoint = ledger.checkpoint() or checkpoint
                continue
            valid = verify_inclusion(
                proof.entry_hash, proof.index, proof.size, proof.path, proof.merkle_root
            )
            return sealed, checkpoint, valid
