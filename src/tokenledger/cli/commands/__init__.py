"""The command groups, one module each; ``create_cli`` registers them in this order."""

from tokenledger.cli.commands import accounts, audit, chain, db, events, serve, stakes, writes

__all__ = ["COMMAND_GROUPS"]

COMMAND_GROUPS = (
    db.register,
    accounts.register,
    writes.register,
    stakes.register,
    audit.register,
    events.register,
    chain.register,
    serve.register,
)
