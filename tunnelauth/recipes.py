"""Recipes: other CLIs' loopback logins, with the flags and environment they need over SSH.

A recipe runs its own program (not hermes). Each one is taken from the CLI's source (see
docs/recipes.md): only flags or variables that keep the loopback flow and stop the CLI from
trying a browser on the remote host, never any that weaken the CLI's own checks. A recipe's
login is judged like ``run``: a callback delivered (or a device flow seen) and exit 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

from tunnelauth.errors import UsageError


class Recipe(NamedTuple):
    """One CLI login tunnelauth knows by name."""

    name: str
    program: str  # the remote binary
    args: tuple[str, ...]  # its arguments; the user's extra arguments follow them
    env: tuple[tuple[str, str], ...]  # variables set for it on the remote (never secrets)
    flow: str  # what it usually does (a hint: the flow is detected from its output)
    usual_hosts: tuple[str, ...]  # hosts its authorize page normally lives on
    timeout: float  # the CLI's own deadline for the browser step, in seconds
    why: str  # what the flags and variables do, for `providers` and the docs
    success: str = ""  # the line it prints on success (documentation only)


RECIPES: Mapping[str, Recipe] = MappingProxyType(
    {
        r.name: r
        for r in (
            Recipe(
                "wrangler",
                "wrangler",
                ("login", "--browser=false"),
                (),
                "loopback on localhost:8976, /oauth/callback",
                ("dash.cloudflare.com",),
                120.0,
                "--browser=false: print the link instead of opening a browser on the host",
                "Successfully logged in.",
            ),
            Recipe(
                "databricks",
                "databricks",
                ("auth", "login"),
                (("BROWSER", "none"),),
                "loopback on localhost:8020; add -- --host URL --profile NAME",
                (),
                3600.0,
                "BROWSER=none: print the link instead of opening a browser on the host",
                "Profile NAME was successfully saved",
            ),
            Recipe(
                "aws",
                "aws",
                ("sso", "login", "--no-browser"),
                (),
                "loopback on 127.0.0.1, port picked per run, /oauth/callback (sso-session "
                "profiles; legacy ones use a device code); add -- --profile NAME",
                (),
                600.0,
                "--no-browser: print the link instead of opening a browser on the host",
                "Successfully logged into Start URL: URL",
            ),
        )
    }
)

# Environment names a recipe may set: plain shell names, so `env NAME=VALUE` reads them alike.
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# Values stay printable text: no control byte can reach the remote command line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def env_assignments(env: Sequence[tuple[str, str]]) -> list[str]:
    """``NAME=VALUE`` words for ``env``; refuses a name or value that is not plain."""
    words = []
    for name, value in env:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"invalid environment variable name {name!r}")
        if _CONTROL.search(value):
            raise ValueError(f"control character in the value of {name}")
        words.append(f"{name}={value}")
    return words


def recipe_command(
    name: str, extra: Sequence[str] = ()
) -> tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]:
    """``(program, args, env)`` the recipe ``name`` runs, the user's ``extra`` args appended."""
    try:
        recipe = RECIPES[name]
    except KeyError:
        raise UsageError(f"unknown recipe {name!r}", hint="known: " + ", ".join(RECIPES)) from None
    if any("\0" in word for word in extra):
        raise UsageError("NUL byte in the recipe's extra arguments")
    env_assignments(recipe.env)  # a broken table fails here, before anything connects
    return recipe.program, (*recipe.args, *extra), recipe.env


def display(recipe: Recipe) -> str:
    """The remote command as a user would type it (variables first)."""
    return " ".join([*env_assignments(recipe.env), recipe.program, *recipe.args])
