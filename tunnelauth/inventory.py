"""Hosts from an Ansible inventory, read by ansible-core's own parser (``tunnelauth[inventory]``).

INI, YAML and inventory plugins all work because ansible reads them. Only what ssh needs is
taken: ``ansible_host``, ``ansible_user``, ``ansible_port`` and a ProxyJump written in
``ansible_ssh_common_args``/``ansible_ssh_extra_args``. Values still holding a template
(``{{ … }}``) and a ``ProxyCommand`` are refused with the host's name: tunnelauth neither
renders templates nor runs commands from an inventory.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tunnelauth.errors import UsageError
from tunnelauth.hostset import MAX_HOSTS, FleetHost
from tunnelauth.settings import validate_host

EXTRA = "pip install 'tunnelauth[inventory]' (ansible-core reads the inventory)"


def read(path: Path, limit: str | None = None) -> list[FleetHost]:
    """The hosts of inventory ``path`` (after ``--limit``), in the inventory's order."""
    if not path.exists():
        raise UsageError(f"inventory {path} does not exist")
    with tempfile.TemporaryDirectory(prefix="tunnelauth-ansible-") as scratch:
        names_vars = _load(path, limit, scratch)
    if not names_vars:
        where = f"inventory {path}" + (f" with --limit {limit}" if limit else "")
        raise UsageError(f"no hosts in {where}")
    if len(names_vars) > MAX_HOSTS:
        raise UsageError(f"more than {MAX_HOSTS} hosts in inventory {path}", hint="use --limit")
    return [host_from_vars(name, values, str(path)) for name, values in names_vars]


def _load(path: Path, limit: str | None, scratch: str) -> list[tuple[str, dict[str, Any]]]:
    """ansible-core's view of the inventory: each host and its variables (groups applied)."""
    # An unparsable inventory is an error, not a warning and an empty fleet; ansible's scratch
    # files go to a directory removed afterwards. ansible-core takes both settings from the
    # process's environment only (its config reads os.environ), so they are set there for
    # the parse and put back as they were: the one place tunnelauth writes the environment.
    names = ("ANSIBLE_INVENTORY_UNPARSED_FAILED", "ANSIBLE_LOCAL_TEMP")
    saved = {k: os.environ.get(k) for k in names}
    os.environ["ANSIBLE_INVENTORY_UNPARSED_FAILED"] = "True"
    os.environ["ANSIBLE_LOCAL_TEMP"] = scratch
    try:
        try:
            from ansible.errors import AnsibleError
            from ansible.inventory.manager import InventoryManager
            from ansible.parsing.dataloader import DataLoader
            from ansible.vars.manager import VariableManager
        except ImportError:
            missing = "--inventory needs ansible-core, which is not installed"
            raise UsageError(missing, hint=EXTRA) from None
        try:
            loader = DataLoader()
            inventory = InventoryManager(loader=loader, sources=[str(path)])
            if limit:
                inventory.subset(limit)
            variables = VariableManager(loader=loader, inventory=inventory)
            return [
                (str(host.name), dict(variables.get_vars(host=host, include_hostvars=False)))
                for host in inventory.get_hosts()
            ]
        except AnsibleError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"cannot read inventory {path}: {first}") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def host_from_vars(name: str, values: Mapping[str, Any], where: str) -> FleetHost:
    """One inventory host as a FleetHost (pure: the variables are already resolved)."""

    def text(key: str) -> str | None:
        value = values.get(key)
        if value is None:
            return None
        shown = str(value)
        if "{{" in shown or "{%" in shown:
            raise UsageError(
                f"inventory host {name!r}: {key} is a template ({shown!r})",
                hint="tunnelauth does not render templates; write the value itself",
            )
        return shown

    address = text("ansible_host") or text("ansible_ssh_host") or name
    login = text("ansible_user") or text("ansible_ssh_user")
    port_text = text("ansible_port") or text("ansible_ssh_port")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"inventory host {name!r}: ansible_port {port_text!r} is not a port")
        port = int(port_text)
    jump: list[str] = []
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        args = text(key)
        if args:
            jump += jump_hops(args, f"inventory host {name!r}: {key}")
    validate_host(address)
    return FleetHost(name, address, login, port, tuple(jump), origin=f"inventory {where}")


def jump_hops(args: str, where: str) -> list[str]:
    """The ProxyJump hops in ssh arguments (``-J a,b``, ``-o ProxyJump=a``); other args ignored."""
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None
    hops: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        value: str | None = None
        if word in ("-J", "-o") and i + 1 < len(words):
            value, i = (words[i + 1] if word == "-J" else _option(words[i + 1], where)), i + 2
        elif word.startswith("-J") and len(word) > 2:
            value, i = word[2:], i + 1
        elif word.startswith("-o") and len(word) > 2:
            value, i = _option(word[2:], where), i + 1
        else:
            i += 1
        if value:
            hops += [h.strip() for h in value.split(",") if h.strip()]
    for hop in hops:
        validate_host(hop)
    return hops


def _option(option: str, where: str) -> str | None:
    """The ProxyJump value of one ``-o`` option, None for any other option."""
    key, _, value = option.replace("=", " ", 1).partition(" ")
    if key.lower() == "proxycommand":
        raise UsageError(
            f"{where}: ProxyCommand is not followed",
            hint="use ProxyJump (-J bastion) or put the host in ~/.ssh/config",
        )
    if key.lower() != "proxyjump":
        return None
    value = value.strip()
    return None if value.lower() == "none" else value
