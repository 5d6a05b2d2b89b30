"""The paramiko transport's view of the ssh config: one host's settings after the overrides.

The command line's ``-o``/``-i`` come before the config file (the first value wins); config
features paramiko cannot honour stop the run with a UsageError naming them.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paramiko

from tunnelauth.errors import UsageError
from tunnelauth.settings import SSHTarget

OTHER_BACKENDS = "use --backend openssh or --backend asyncssh"


class Effective:
    """One host's settings after the config lookup and the command-line overrides."""

    def __init__(self, looked: Any, alias: str, port: int | None, user: str | None) -> None:
        self.looked = looked
        self.alias = alias
        self.hostname: str = looked.get("hostname", alias)
        self.port: int = port or int(looked.get("port", 22))
        self.user: str = user or looked.get("user") or getpass.getuser()
        self.key_alias: str | None = looked.get("hostkeyalias")

    def files(self, option: str, default: Sequence[str]) -> list[str]:
        """A whitespace-separated file list option (``none`` → empty), ``~`` expanded."""
        value = self.looked.get(option)
        names = value.split() if isinstance(value, str) else list(value or default)
        return [os.path.expanduser(n) for n in names if n.lower() != "none"]


def refuse_unsupported(eff: Effective) -> None:
    """Config features paramiko cannot honour: stop with a UsageError rather than ignore them."""
    command = eff.looked.get("proxycommand")
    if command and command.strip().lower() != "none":
        unsupported("ProxyCommand from the ssh config")
    agent = eff.looked.get("identityagent")
    if agent and agent.strip().lower() not in ("none", "ssh_auth_sock", "$ssh_auth_sock"):
        unsupported("IdentityAgent")


def unsupported(feature: str) -> None:
    raise UsageError(f"the paramiko backend does not support {feature}", hint=OTHER_BACKENDS)


def read_configs(target: SSHTarget) -> tuple[Any, Any]:
    """(config for the target, with ``-o``/``-i`` first; config for jump hops)."""
    path = target.ssh_config or Path("~/.ssh/config").expanduser()
    # os.path.isfile: an unreadable ~/.ssh is skipped as ssh skips it, not an error.
    text = path.read_text(encoding="utf-8") if os.path.isfile(path) else ""
    if target.ssh_config is not None and not os.path.isfile(path):
        raise UsageError(f"ssh config file {path} not found")
    lines = []
    for option in target.options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid ssh option {option!r} (expected Key=Value)")
        lines.append(f"{key.strip()} {value.strip()}")
    lines += [f'IdentityFile "{identity}"' for identity in target.identity]
    # Lines before any Host block apply to every host, and the first value wins.
    return (
        paramiko.SSHConfig.from_text("\n".join([*lines, text])),
        paramiko.SSHConfig.from_text(text),
    )
