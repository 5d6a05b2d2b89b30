"""The typer parameters of fleet commands: HOST..., --inventory, --limit."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated

import typer


def fleet_parameters(complete: Callable[[str], list[str]]) -> list[inspect.Parameter]:
    """Positional hosts (names, patterns, @GROUP) and the inventory options."""
    hosts = inspect.Parameter(
        "hosts",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=None,
        annotation=Annotated[
            list[str] | None,
            typer.Argument(
                help="SSH destinations, Host patterns ('web-*') or @GROUP of the config file.",
                metavar="HOST...",
                autocompletion=complete,
            ),
        ],
    )
    inventory = inspect.Parameter(
        "inventory",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--inventory",
                metavar="FILE",
                help="Hosts from an Ansible inventory (INI, YAML, plugins).",
            ),
        ],
    )
    limit = inspect.Parameter(
        "limit",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--limit", metavar="PATTERN", help="Ansible host pattern that narrows --inventory."
            ),
        ],
    )
    jobs = inspect.Parameter(
        "jobs",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            int | None,
            typer.Option(
                "--jobs",
                metavar="N",
                min=1,
                max=10,
                help="Hosts at once (default: all for device-code logins, else one by one).",
            ),
        ],
    )
    return [hosts, inventory, limit, jobs]
