"""Shell completion values: host aliases from ~/.ssh/config (and its Includes), backend and via.

Read only when the shell asks; nothing here runs during a login.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path

MAX_FILES = 64  # an Include loop or a huge tree must not hang the shell


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split()


def _included(pattern: str, base: Path) -> list[Path]:
    """An Include argument: ``~`` expands, a relative path is under ~/.ssh, globs allowed."""
    expanded = os.path.expanduser(pattern)
    if not os.path.isabs(expanded):
        expanded = str(base / expanded)
    return [Path(p) for p in sorted(glob.glob(expanded))]


def config_hosts(path: Path, base: Path, seen: set[Path] | None = None) -> Iterator[str]:
    """Concrete ``Host`` names (no wildcards or negations) in an ssh config and its Includes."""
    seen = set() if seen is None else seen
    if path in seen or len(seen) >= MAX_FILES:
        return
    seen.add(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        words = _words(line.replace("=", " ", 1) if "=" in line.split("#")[0] else line)
        if not words:
            continue
        key, args = words[0].lower(), words[1:]
        if key == "host":
            for name in args:
                if not any(c in name for c in "*?!"):
                    yield name
        elif key == "include":
            for pattern in args:
                for included in _included(pattern, base):
                    yield from config_hosts(included, base, seen)


def complete_host(incomplete: str) -> list[str]:
    """Host aliases from the user's ssh config and tunnelauth's own config file.

    The shell's completion request is a command of its own: its environment is read here.
    """
    ssh_dir = Path("~/.ssh").expanduser()
    names = list(config_hosts(ssh_dir / "config", ssh_dir))
    try:
        from tunnelauth.environment import Environment
        from tunnelauth.settings import config_path, load_config

        hosts = load_config(config_path(None, Environment.current().variables)).get("hosts", {})
        if isinstance(hosts, dict):
            names += [str(name) for name in hosts]
    except Exception:  # a broken config file must not break the shell's completion
        pass
    user, at, rest = incomplete.rpartition("@")
    prefix = user + at
    found = dict.fromkeys(prefix + n for n in names if n.startswith(rest))
    return list(found)


def complete_choice(choices: tuple[str, ...]) -> object:
    """A completer offering ``choices``."""

    def complete(incomplete: str) -> list[str]:
        return [c for c in choices if c.startswith(incomplete)]

    return complete


# MCP server names live in the remote's hermes config, out of reach of a completion (which never
# connects): tunnelauth remembers the names it saw, per host, from `status` and from logins.
MCP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_REMEMBERED = 200


def _mcp_file() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tunnelauth")) / "mcp-servers.json"


def _remembered() -> dict[str, list[str]]:
    try:
        data = json.loads(_mcp_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(host): [n for n in names if isinstance(n, str) and MCP_NAME.fullmatch(n)]
        for host, names in data.items()
        if isinstance(names, list)
    }


def remember_mcp_servers(host: str, names: Iterable[str]) -> None:
    """Add ``names`` (plain names only) to what completion offers; never fails a run."""
    try:
        data = _remembered()
        known = dict.fromkeys([*data.get(host, []), *(n for n in names if MCP_NAME.fullmatch(n))])
        data[host] = list(known)[-MAX_REMEMBERED:]
        path = _mcp_file()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(dict(list(data.items())[-MAX_REMEMBERED:]), fh)
        os.replace(temp, path)
    except OSError:
        pass


def complete_mcp_server(incomplete: str) -> list[str]:
    """MCP server names seen before on any host."""
    names = dict.fromkeys(n for names in _remembered().values() for n in names)
    return [n for n in names if n.startswith(incomplete)]
