"""The repository: every SQL statement the ledger runs that is not a posting, by table.

Functions take an open SQLAlchemy ``Connection`` and never commit: the
service layer asks ``storage.transactions`` for a transaction and hands its
connection over. Postings (locking accounts, appending entries, saving
figures) are the posting port's (``storage.posting``).
"""
