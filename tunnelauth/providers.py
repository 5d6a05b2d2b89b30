"""Provider names mapped to the remote hermes command they run, and the flow each usually uses.

The flow listed here is only a hint for messages: tunnelauth always detects the real flow from
what the remote prints, because hermes changes between versions (xAI moved from a loopback
listener to a device code in 0.19.0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from tunnelauth.errors import UsageError


class Provider(NamedTuple):
    """One provider tunnelauth knows by name."""

    name: str
    args: tuple[str, ...]  # hermes arguments, {name} is replaced for MCP servers
    flow: str  # what recent hermes versions usually do (a hint, never relied on)
    usual_hosts: tuple[str, ...]  # hosts its authorize / verification page normally lives on
    timeout: float  # the flow's own deadline on the remote, in seconds
    verify: tuple[str, ...] = ()  # hermes arguments that report whether the login stuck
    success: str = ""  # what its success line looks like (for messages; watch.py matches it)


PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {
        p.name: p
        for p in (
            Provider(
                "xai",
                ("auth", "add", "xai-oauth", "--no-browser"),
                "device code (older hermes: loopback on 56121)",
                ("auth.x.ai", "accounts.x.ai"),
                900.0,
                ("auth", "status", "xai-oauth"),
                "Login successful!",
            ),
            Provider(
                "spotify",
                ("auth", "spotify", "login", "--no-browser"),
                "loopback on 43827, /spotify/callback",
                ("accounts.spotify.com",),
                180.0,
                ("auth", "status", "spotify"),
                "Spotify login successful!",
            ),
            Provider(
                "mcp",
                ("mcp", "login", "{name}"),
                "loopback, port picked per server",
                (),
                300.0,
                ("mcp", "test", "{name}"),
                "✓ Authenticated — N tool(s) available",
            ),
            Provider(
                "anthropic",
                ("auth", "add", "anthropic"),
                "paste the code the provider shows",
                ("claude.ai", "console.anthropic.com"),
                900.0,
                ("auth", "status", "anthropic"),
                'Added anthropic OAuth credential #1: "..."',
            ),
            Provider(
                "openrouter",
                ("auth", "add", "openrouter", "--type", "oauth"),
                "paste the code (hermes 0.21 over SSH: OpenRouter's headless flow)",
                (),
                900.0,
                ("auth", "status", "openrouter"),
                'Added openrouter OAuth credential #1: "..."',
            ),
            Provider(
                "codex",
                ("auth", "add", "openai-codex"),
                "device code",
                ("auth.openai.com",),
                900.0,
                ("auth", "status", "openai-codex"),
                "Login successful!",
            ),
            Provider(
                "minimax",
                ("auth", "add", "minimax-oauth"),
                "device code",
                (),
                900.0,
                ("auth", "status", "minimax-oauth"),
                "✓ MiniMax OAuth login successful.",
            ),
            Provider(
                "nous",
                ("auth", "add", "nous"),
                "device code",
                (),
                900.0,
                ("auth", "status", "nous"),
                "Login successful!",
            ),
        )
    }
)

# Names the user gives (MCP server, hermes profile) travel to the remote as data: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate_name(value: str, what: str) -> str:
    """Return ``value`` if it is a safe plain name (letters, digits, ``._-``), else raise."""
    if not _NAME.fullmatch(value):
        raise UsageError(
            f"invalid {what} {value!r}",
            hint="use letters, digits, '.', '_' and '-' (at most 64; not starting with '-' or '.')",
        )
    return value


def hermes_args(provider: str, *, name: str | None = None, profile: str | None = None) -> list[str]:
    """The hermes argv (without the binary) for ``provider``; validates every user-given name."""
    try:
        spec = PROVIDERS[provider]
    except KeyError:
        raise UsageError(f"unknown provider {provider!r}") from None
    args: list[str] = []
    if profile is not None:
        args += ["-p", validate_name(profile, "profile name")]
    for arg in spec.args:
        if arg == "{name}":
            if name is None:
                raise UsageError(f"{provider} needs a server name")
            arg = validate_name(name, "MCP server name")
        args.append(arg)
    return args
