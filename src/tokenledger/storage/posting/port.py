"""The posting port: how a computed posting, or one entry, reaches the disk.

The service validates a call and builds a ``Draft`` (one entry) or a
``Posting`` (entries computed against locked figures); a ``Poster`` is the
one adapter per dialect that owns the SQL:

* ``lock``: lock accounts in id order and read their figures and the clock;
* ``write``: append a posting's entries and save the new figures;
* ``post_one``: the whole of a one-entry write (transfer, mint, burn) in the
  fewest round trips;
* ``post_many``: several such writes in one transaction (group commit), each
  accepted or refused on its own.

Every adapter writes the journal's columns as ``domain.entries`` lists them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, Protocol

from sqlalchemy import Connection

from tokenledger.domain.errors import LedgerError
from tokenledger.domain.postings import Draft, Locked, Posting
from tokenledger.domain.records import LedgerEntry

__all__ = ["IdempotencyKeyTaken", "Outcome", "Poster", "Scope"]

# "statement": one statement, atomic on its own; "transaction": several.
Scope = Literal["transaction", "statement"]


class IdempotencyKeyTaken(Exception):
    """An entry with this idempotency key is already committed; nothing was written.

    Raised by the adapters (the key was found before writing) and by
    ``transactions.translate`` (a unique violation of the key: a concurrent
    call won); the service answers it by reading the entry under the key.
    """


# What one write of a group came to: its entry, its refusal, or its key found used.
Outcome = LedgerEntry | LedgerError | IdempotencyKeyTaken


class Poster(Protocol):
    """One dialect's way of writing postings."""

    # What ``post_one`` needs from its transaction.
    one_entry_scope: Scope

    def lock(self, connection: Connection, account_ids: Iterable[str]) -> Locked:
        """Lock the existing accounts among ``account_ids`` in id order; read them and the clock."""
        ...

    def write(self, connection: Connection, posting: Posting) -> list[int]:
        """Append the posting's entries in order and save the changed figures; the new ids."""
        ...

    def post_one(self, connection: Connection, draft: Draft) -> LedgerEntry:
        """Lock, check, append and save one entry.

        Raises:
            IdempotencyKeyTaken: an entry under the draft's key exists.
            LedgerError: the entry is refused (unknown account, funds, range).
        """
        ...

    def post_many(self, connection: Connection, drafts: Sequence[Draft]) -> list[Outcome]:
        """Post each draft on its own, all in the connection's one transaction.

        A refused draft writes nothing and leaves the others as they are; a
        key used earlier in the group reads as used. Outcomes come in the
        drafts' order.
        """
        ...
