"""The domain: what a ledger is, independent of any database.

Amounts and validation (``amounts``, ``inputs``), the one arithmetic of an
entry (``books``), postings computed against locked figures (``postings``),
the journal's columns (``entries``), the records the service returns
(``records``), the error tree (``errors``), and the pure functions behind
the hash chain and the on-chain mapping (``hashing``, ``addresses``).
Nothing here imports SQLAlchemy.
"""
