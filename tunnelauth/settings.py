"""Run settings: one frozen dataclass; precedence CLI > environment > config file > default."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from tunnelauth.errors import UsageError

BACKENDS = ("auto", "openssh", "asyncssh", "paramiko")
VIAS = ("auto", "channel", "relay", "paste")


class SSHTarget(NamedTuple):
    """Where and how to connect: everything else comes from the user's ssh config."""

    host: str
    jump: tuple[str, ...] = ()
    ssh_config: Path | None = None
    identity: tuple[Path, ...] = ()
    port: int | None = None
    login: str | None = None
    options: tuple[str, ...] = ()

    def user_and_host(self) -> tuple[str | None, str]:
        """The destination as ssh reads it: ``user@host`` splits at the last ``@``; ``-l`` wins."""
        user, at, host = self.host.rpartition("@")
        if not at:
            return self.login, self.host
        return (self.login if self.login is not None else user or None), host

    @property
    def has_connection_flags(self) -> bool:
        """Whether flags change the connection (``-F`` only selects a config and does not count)."""
        return bool(self.jump or self.identity or self.port or self.login or self.options)


class Settings(NamedTuple):
    """Everything one run needs, resolved once at the edge."""

    target: SSHTarget
    program: str  # remote binary (hermes, or the command given to `run`)
    args: tuple[str, ...]  # its arguments
    provider: str | None = None  # provider name, None for `run`
    timeout: float = 600.0
    no_browser: bool = False
    browser_cmd: str | None = None
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    backend: str = "auto"
    connect_timeout: float = 30.0
    batch: bool = False
    show_secrets: bool = False
    via: str = "auto"  # how the callback reaches the remote: auto, channel, relay or paste
    sources: Mapping[str, str] = MappingProxyType({})  # setting → where it came from
    run_as: str | None = None  # remote user the login runs as (sudo -u)
    hermes_home: str | None = None  # HERMES_HOME on the remote (~/ expands there)
    server: str | None = None  # the MCP server name, for `mcp`
    verify: bool = False  # check the credential on the remote after success
    replace: bool = False  # remove the provider's older credentials after success
    no_wait: bool = False  # another run holds the callback port: fail (exit 5) instead of waiting
    reap: bool = False  # end a stale tunnelauth run for the same host that holds the port
    accept_new: bool = False  # StrictHostKeyChecking=accept-new: add an unknown host key
    notices: tuple[str, ...] = ()  # warnings about the options, shown when the run starts
    env: tuple[tuple[str, str], ...] = ()  # variables set for the program on the remote (recipes)


def config_path(explicit: Path | None, variables: Mapping[str, str]) -> Path:
    """The TOML config file: ``--config``, ``$TUNNELAUTH_CONFIG`` (in the environment's
    ``variables``), or the platform config dir."""
    if explicit is not None:
        return explicit
    named = variables.get("TUNNELAUTH_CONFIG")
    if named:
        return Path(named)
    from platformdirs import user_config_dir

    return Path(user_config_dir("tunnelauth")) / "config.toml"


def load_config(path: Path) -> dict[str, Any]:
    """Parse the config file; a missing file is an empty config, a broken one a usage error."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from exc
    return data


def host_section(config: Mapping[str, Any], host: str) -> Mapping[str, Any]:
    """The ``[hosts."HOST"]`` table for ``host`` (empty if none)."""
    hosts = config.get("hosts", {})
    if not isinstance(hosts, Mapping):
        raise UsageError("config: [hosts] must be a table")
    section = hosts.get(host, {})
    if not isinstance(section, Mapping):
        raise UsageError(f"config: [hosts.{host!r}] must be a table")
    return section


def validate_host(host: str) -> str:
    """An ssh destination must not look like an option or hold whitespace or control bytes."""
    if not host or host.startswith("-") or any(c.isspace() or ord(c) < 32 for c in host):
        raise UsageError(f"invalid host {host!r}")
    return host
