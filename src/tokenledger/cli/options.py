"""The options several commands share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["entry_options", "json_option", "url_option"]

F = TypeVar("F", bound=Callable[..., Any])


def url_option(command: F) -> F:
    return click.option(
        "--url",
        metavar="URL",
        default=None,
        help="Database URL (default: $TOKENLEDGER_DATABASE_URL, else sqlite:///tokenledger.db).",
    )(command)


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(
        command
    )


def entry_options(command: F) -> F:
    """The options every single-entry write (mint, burn, transfer) shares."""
    options = [
        click.option("--reason", required=True, help="Why the tokens move (required)."),
        click.option("--reference-type", default=None, help="What the entry refers to."),
        click.option("--reference-id", default=None, help="The id of what it refers to."),
        click.option("--memo", default=None, help="Free text stored with the entry."),
        click.option(
            "--idempotency-key",
            default=None,
            help="Repeating the command with this key writes nothing more.",
        ),
        json_option,
        url_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command
