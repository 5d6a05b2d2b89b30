"""``tunnelauth status HOST``: what the remote is logged in to, before and after a login.

One SSH connection; ``hermes auth status P`` for each provider and the names of the MCP servers
that hold a token file. Everything the remote prints is bounded and sanitized before it is
judged or shown; nothing of a token file is read but its name and size.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any, NamedTuple

from tunnelauth.environment import Environment
from tunnelauth.errors import CommandNotFoundError
from tunnelauth.postlogin import status_says_logged_in
from tunnelauth.providers import PROVIDERS
from tunnelauth.remote import NOT_FOUND_MARKER, settings_command
from tunnelauth.sanitize import untrusted
from tunnelauth.settings import Settings
from tunnelauth.transports.base import Transport

if TYPE_CHECKING:
    from tunnelauth.hoppool import HopPool

EXEC_DEADLINE = 30.0
MAX_OUTPUT = 16 * 1024  # one status answer is a line; more is cut
MAX_SERVERS = 200
_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LOGGED_OUT = re.compile(r"\b(logged out|not logged in)\b", re.IGNORECASE)

# Names of the non-empty MCP token files: $1 is the profile (may be empty).
_MCP_TOKENS = (
    'h=${HERMES_HOME:-$HOME/.hermes}; [ -n "$1" ] && h=$h/profiles/$1; '
    'for f in "$h"/mcp-tokens/*.json; do [ -s "$f" ] && basename "$f" .json; done; exit 0'
)


class ProviderState(NamedTuple):
    """One provider's state on the remote: ``logged in``, ``logged out`` or ``unknown``."""

    name: str
    state: str
    detail: str


class LoginStatus(NamedTuple):
    """What one host is logged in to."""

    host: str
    providers: list[ProviderState]
    mcp_servers: list[str]

    def to_json(self) -> dict[str, Any]:
        """The document ``status --json`` prints."""
        return {
            "v": 1,
            "kind": "status",
            "host": self.host,
            "providers": [p._asdict() for p in self.providers],
            "mcp_servers": self.mcp_servers,
        }


def judge(name: str, exit_status: int | None, output: str) -> ProviderState:
    """A provider's state from ``hermes auth status`` (sanitized, last line as the detail)."""
    text = untrusted(output, limit=MAX_OUTPUT, multiline=True)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = lines[-1][:200] if lines else f"exit status {exit_status}"
    if exit_status == 0 and status_says_logged_in(text):
        return ProviderState(name, "logged in", detail)
    if exit_status == 0 and _LOGGED_OUT.search(text):
        return ProviderState(name, "logged out", detail)
    return ProviderState(name, "unknown", detail)


def server_names(output: str) -> list[str]:
    """MCP server names from the token listing; anything that is not a plain name is dropped."""
    names = [line.strip() for line in output[:MAX_OUTPUT].splitlines()]
    return sorted({n for n in names if _SERVER_NAME.fullmatch(n)})[:MAX_SERVERS]


def _profile(settings: Settings) -> list[str]:
    return ["-p", settings.args[1]] if settings.args[:1] == ("-p",) else []


async def gather(settings: Settings, transport: Transport, env: Environment) -> LoginStatus:
    """Connect once (``env``: the process's, as the command read it), ask for every provider
    and the MCP tokens, close."""
    try:
        await transport.connect(env=env)
        states = []
        for name, spec in PROVIDERS.items():
            if not spec.verify:
                continue
            command = settings_command(settings, [*_profile(settings), *spec.verify])
            result = await transport.exec(command, timeout=EXEC_DEADLINE)
            output = (result.stdout[:MAX_OUTPUT] + result.stderr[:MAX_OUTPUT]).decode(
                "utf-8", "replace"
            )
            if NOT_FOUND_MARKER in output:
                raise CommandNotFoundError(
                    f"{settings.program} was not found on {settings.target.host}",
                    hint="name it with --hermes PATH (a leading ~ expands on the remote)",
                )
            states.append(judge(name, result.exit_status, output))
        profile = settings.args[1] if settings.args[:1] == ("-p",) else ""
        listing = await transport.exec(
            settings_command(settings, ["-c", _MCP_TOKENS, "tunnelauth", profile], program="sh"),
            timeout=EXEC_DEADLINE,
        )
        servers = server_names(listing.stdout.decode("utf-8", "replace"))
    finally:
        await transport.close()
    return LoginStatus(settings.target.host, states, servers)


async def ask(settings: Settings, env: Environment, *, hops: HopPool | None = None) -> LoginStatus:
    """Gather within the run's deadline (asyncio.TimeoutError when it passes).

    ``hops``: a fleet's shared jump chains (one host alone opens its own).
    """
    from tunnelauth.transports import resolve

    transport = resolve.make(settings, hops=hops)
    deadline = min(
        settings.timeout, settings.connect_timeout + (len(PROVIDERS) + 1) * EXEC_DEADLINE
    )
    return await asyncio.wait_for(gather(settings, transport, env), deadline)


def run(settings: Settings, env: Environment) -> LoginStatus:
    """Gather in a fresh event loop, within the run's deadline."""
    return asyncio.run(ask(settings, env))
