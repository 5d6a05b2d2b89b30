"""The edge of fleet commands: which hosts the command line names, and ``status`` across them.

Reads the config file, the ssh config's Host names and an inventory; builds each host's
Settings (a flag the user typed wins over an inventory's value); prints the fleet table or one
JSON document per host.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from tunnelauth.errors import UsageError
from tunnelauth.hostset import FleetHost, expand, groups_of, is_pattern
from tunnelauth.status import ExitStatus


def single_host(options: dict[str, Any]) -> bool:
    """Whether the command names at most one plain host (then ``host`` is set for it).

    One plain host keeps the single-host output; patterns, groups, several hosts or an
    inventory make it a fleet command.
    """
    words = list(options.pop("hosts", None) or [])
    fleet = options.get("inventory") or len(words) > 1
    fleet = fleet or any(w.startswith("@") or is_pattern(w) for w in words)
    if options.get("limit") and not options.get("inventory"):
        raise UsageError("--limit narrows --inventory", hint="add --inventory FILE")
    if fleet:
        options["fleet_words"] = words
        return False
    options.pop("inventory", None)
    options.pop("limit", None)
    options["host"] = words[0] if words else None
    return True


def fleet_hosts(options: dict[str, Any]) -> list[FleetHost]:
    """The hosts named by words, patterns, groups and ``--inventory``, each once, in order."""
    from tunnelauth.completion import config_hosts
    from tunnelauth.settings import config_path, load_config

    path = config_path(options.get("config"))
    config = load_config(path)
    groups = groups_of(config, str(path))
    ssh_config = options.get("ssh_config")
    ssh_dir = Path("~/.ssh").expanduser()
    ssh_file = Path(str(ssh_config)).expanduser() if ssh_config else ssh_dir / "config"
    aliases = list(config_hosts(ssh_file, ssh_dir))
    sections = config.get("hosts", {})
    if isinstance(sections, dict):
        aliases += [str(name) for name in sections]
    hosts = expand(options.get("fleet_words") or [], aliases=aliases, groups=groups)
    if options.get("inventory"):
        from tunnelauth import inventory

        limit = options.get("limit")
        known = {h.name for h in hosts}
        found = inventory.read(Path(str(options["inventory"])).expanduser(), limit)
        hosts += [h for h in found if h.name not in known]
    if not hosts:
        raise UsageError("no host given", hint="name hosts, patterns, @GROUP or --inventory FILE")
    return hosts


def host_options(options: dict[str, Any], host: FleetHost) -> dict[str, Any]:
    """The options for one host: its own values, except where the user typed a flag."""
    merged = {k: v for k, v in options.items() if k not in ("fleet_words", "inventory", "limit")}
    for key, value in host.options().items():
        if key == "host" or merged.get(key) in (None, [], ()):
            merged[key] = value
    return merged


def status(options: dict[str, Any]) -> ExitStatus:
    """``status`` across the fleet: the table (or JSON lines) on stdout; the exit status."""
    from tunnelauth.cmdline import build_settings
    from tunnelauth.completion import remember_mcp_servers
    from tunnelauth.fleetstatus import BATCH_JOBS, HostResult, ask_fleet, exit_status
    from tunnelauth.options import resolve_batch

    hosts = fleet_hosts(options)
    batch = resolve_batch(bool(options.get("batch")), os.environ, sys.stdin.isatty()).value
    as_json = bool(options.get("json"))

    def build(host: FleetHost) -> Any:
        return build_settings("status", host_options(options, host))

    def progress(result: HostResult) -> None:
        if not as_json and options.get("verbose"):
            word = "answered" if result.status is not None else "failed"
            sys.stderr.write(f"tunnelauth: {result.host.name}: {word}\n")

    jobs = BATCH_JOBS if batch else 1
    results = asyncio.run(ask_fleet(hosts, build, jobs=jobs, on_result=progress))
    for result in results:
        if result.status is not None:
            remember_mcp_servers(result.host.name, result.status.mcp_servers)
    if as_json:
        for result in results:
            sys.stdout.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        from tunnelauth.render import print_fleet_status

        print_fleet_status(results)
    return exit_status(results)
