"""The command's exit codes, and the one failure a command raises to end with one.

===  ======================================================================
0    success
1    the ledger refused the request (insufficient funds, unknown account,
     invalid amount or argument, idempotency conflict, closed stake, a
     ``db copy`` target that holds ledger rows...)
2    usage error: unknown command or option, bad or missing option value
3    a check found problems (``verify``, ``chain reconcile``, ``demo``,
     ``db current --check``, ``db check``, a ``db copy`` that does not verify)
4    the database could not be opened or used (bad or unreachable URL,
     missing driver, schema not at head, failed migration)
5    an optional extra is missing (``cli``, or ``api`` for ``serve``)
70   an unexpected internal error (``TOKENLEDGER_DEBUG=1`` shows the traceback)
130  interrupted (Ctrl-C)
===  ======================================================================
"""

from __future__ import annotations

__all__ = [
    "EXIT_DATABASE",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_MISSING_EXTRA",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_REJECTED",
    "EXIT_USAGE",
    "CommandFailed",
]

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_PROBLEMS = 3
EXIT_DATABASE = 4
EXIT_MISSING_EXTRA = 5
EXIT_INTERNAL = 70  # EX_SOFTWARE in sysexits.h
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class CommandFailed(Exception):
    """A command's own failure: a one-line message and the exit code to end with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
