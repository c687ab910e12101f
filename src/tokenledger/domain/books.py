"""What one journal entry does to the accounts it touches: the books' arithmetic.

This is the single definition of an entry's effect. Writes use it to compute
new balances and each entry's ``balance_after_*``; ``verify`` uses the same
function to replay the journal. All values are integers of base units.

The effect of an entry depends on its parties:

=====================  ==================================================
from -> to             effect
=====================  ==================================================
agent -> agent         sender: balance -a, spent +a; receiver: balance +a, earned +a
system -> agent        mint: receiver balance +a, earned +a
agent -> system        burn: sender balance -a, spent +a
agent -> escrow        stake: owner balance -a, staked +a
escrow -> owner        return: owner balance +a, staked -a
escrow -> agent        payout: owner staked -a, spent +a; receiver balance +a, earned +a
escrow -> system       slash/fee burn: owner staked -a, spent +a
=====================  ==================================================

so for every account ``balance + total_staked == total_earned - total_spent``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenledger.domain.constants import ESCROW_ACCOUNT, SYSTEM_ACCOUNT, is_reserved

__all__ = ["Balances", "UnknownParty", "apply_entry"]


@dataclass(slots=True)
class Balances:
    """An account's running figures, in base units."""

    balance: int = 0
    total_earned: int = 0
    total_spent: int = 0
    total_staked: int = 0


class UnknownParty(Exception):
    """An entry names an account that is not in the books it is applied to."""

    def __init__(self, account_id: str) -> None:
        super().__init__(account_id)
        self.account_id = account_id


def apply_entry(
    books: dict[str, Balances],
    from_account: str,
    to_account: str,
    amount: int,
    stake_owner: str | None = None,
) -> tuple[int | None, int | None]:
    """Apply one entry to ``books`` in place.

    Args:
        books: running figures of (at least) the accounts the entry touches.
        stake_owner: whose stake the escrow side belongs to; required when a
            party is the escrow account.

    Returns:
        ``(balance_after_from, balance_after_to)``, ``None`` on a reserved side.

    Raises:
        UnknownParty: an account the entry touches is missing from ``books``.
        ValueError: an escrow entry without a stake owner, or between two
            reserved parties other than escrow -> system.

    Negative results are not refused here: the caller decides whether that
    is insufficient funds (a write) or a problem to report (a replay).
    """
    if to_account == ESCROW_ACCOUNT:
        owner = _owner(books, stake_owner, from_account)
        if from_account != stake_owner:
            raise ValueError("a stake is paid into escrow by its owner")
        owner.balance -= amount
        owner.total_staked += amount
        return owner.balance, None

    if from_account == ESCROW_ACCOUNT:
        owner = _owner(books, stake_owner, from_account)
        owner.total_staked -= amount
        if to_account == stake_owner:
            owner.balance += amount
            return None, owner.balance
        owner.total_spent += amount
        if to_account == SYSTEM_ACCOUNT:
            return None, None
        receiver = _account(books, to_account)
        receiver.balance += amount
        receiver.total_earned += amount
        return None, receiver.balance

    after_from: int | None = None
    after_to: int | None = None
    from_reserved, to_reserved = is_reserved(from_account), is_reserved(to_account)
    if from_reserved and to_reserved:
        raise ValueError(f"no entry moves tokens from {from_account!r} to {to_account!r}")
    if not from_reserved:
        sender = _account(books, from_account)
        sender.balance -= amount
        sender.total_spent += amount
        after_from = sender.balance
    if not to_reserved:
        receiver = _account(books, to_account)
        receiver.balance += amount
        receiver.total_earned += amount
        after_to = receiver.balance
    return after_from, after_to


def _owner(books: dict[str, Balances], stake_owner: str | None, party: str) -> Balances:
    if stake_owner is None:
        raise ValueError(f"an entry with {party!r} needs the stake's owner")
    return _account(books, stake_owner)


def _account(books: dict[str, Balances], account_id: str) -> Balances:
    try:
        return books[account_id]
    except KeyError:
        raise UnknownParty(account_id) from None
