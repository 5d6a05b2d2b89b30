"""Which hosts a command names: plain hosts, ``Host`` patterns of the ssh config, config groups.

``tunnelauth status web1 'web-*' @prod`` names ``web1``, every concrete ``Host`` alias of the
ssh config (and its Includes) and of tunnelauth's ``[hosts.NAME]`` sections matching ``web-*``,
and the members of ``[groups] prod = [...]`` in tunnelauth's config file. Pure: the caller
reads the files and passes their names in.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from tunnelauth.errors import UsageError
from tunnelauth.settings import validate_host

MAX_HOSTS = 256  # one command's fleet; more is a pattern that matched far more than meant
_GLOB = frozenset("*?[")


class FleetHost(NamedTuple):
    """One host of a fleet: how it is shown, how ssh reaches it, and where it was named."""

    name: str
    host: str  # the ssh destination (an alias, an address or user@host)
    login: str | None = None
    port: int | None = None
    jump: tuple[str, ...] = ()
    origin: str = "argument"

    def options(self) -> dict[str, Any]:
        """The per-host values as command-line options (a flag the user typed still wins)."""
        values: dict[str, Any] = {"host": self.host}
        if self.login is not None:
            values["login"] = self.login
        if self.port is not None:
            values["port"] = self.port
        if self.jump:
            values["jump"] = list(self.jump)
        return values


def is_pattern(word: str) -> bool:
    """Whether a host word is a glob pattern (``*``, ``?`` or ``[``)."""
    return any(c in _GLOB for c in word)


def groups_of(config: Mapping[str, Any], where: str) -> dict[str, list[str]]:
    """The ``[groups]`` table of tunnelauth's config: name → host words (checked)."""
    raw = config.get("groups", {})
    if not isinstance(raw, Mapping):
        raise UsageError(f"config: groups in {where} must be a table of lists of hosts")
    groups: dict[str, list[str]] = {}
    for name, members in raw.items():
        if isinstance(members, str) or not isinstance(members, list):
            raise UsageError(
                f"config: group {name!r} in {where} must be a list of hosts",
                hint=f'{name} = ["host1", "host2"]',
            )
        for member in members:
            if not isinstance(member, str) or member.startswith("@"):
                raise UsageError(
                    f"config: group {name!r} in {where} holds {member!r}",
                    hint="members are host names or Host patterns, not other groups",
                )
        groups[str(name)] = list(members)
    return groups


def expand(
    words: Sequence[str],
    *,
    aliases: Iterable[str],
    groups: Mapping[str, Sequence[str]],
) -> list[FleetHost]:
    """Each word as hosts, in the order named, each host once.

    ``@NAME`` is a group; a word with ``*``, ``?`` or ``[`` matches the concrete ``aliases``
    (the ssh config's and tunnelauth's own); anything else is one host. A group or a pattern
    that names no host is an error, so a typo never silently shrinks the fleet.
    """
    known = list(dict.fromkeys(aliases))
    hosts: dict[str, FleetHost] = {}
    for word in words:
        if word.startswith("@"):
            name = word[1:]
            if name not in groups:
                hint = "groups: " + ", ".join(sorted(groups)) if groups else "none are defined"
                raise UsageError(f"no group {name!r} in the config file", hint=hint)
            members = _members(groups[name], known, origin=f"group {name}")
            if not members:
                raise UsageError(f"group {name!r} names no host")
            found = members
        elif is_pattern(word):
            found = _matching(word, known, origin=f"pattern {word}")
            if not found:
                raise UsageError(
                    f"no Host alias matches {word!r}",
                    hint="patterns match the concrete Host names of ~/.ssh/config "
                    "(and its Includes) and the [hosts.NAME] sections of the config file",
                )
        else:
            found = [FleetHost(validate_host(word), word)]
        for host in found:
            hosts.setdefault(host.name, host)
        if len(hosts) > MAX_HOSTS:
            raise UsageError(f"more than {MAX_HOSTS} hosts named", hint="narrow the patterns")
    return list(hosts.values())


def _members(words: Sequence[str], known: Sequence[str], *, origin: str) -> list[FleetHost]:
    found: list[FleetHost] = []
    for word in words:
        if is_pattern(word):
            found += _matching(word, known, origin=f"{origin} ({word})")
        else:
            found.append(FleetHost(validate_host(word), word, origin=origin))
    return found


def _matching(pattern: str, known: Sequence[str], *, origin: str) -> list[FleetHost]:
    user, at, host_pattern = pattern.rpartition("@")
    prefix = user + at
    return [
        FleetHost(prefix + name, validate_host(prefix + name), origin=origin)
        for name in known
        if fnmatch.fnmatchcase(name, host_pattern)
    ]


def single_host(options: dict[str, Any]) -> bool:
    """Whether the command names at most one plain host (then ``host`` is set for it).

    One plain host keeps the single-host output; patterns, groups, several hosts or an
    inventory make it a fleet command.
    """
    if "hosts" not in options:
        return True  # read already (or a command without fleet options)
    words = list(options.pop("hosts", None) or [])
    fleet = options.get("inventory") or len(words) > 1
    fleet = fleet or any(w.startswith("@") or is_pattern(w) for w in words)
    if options.get("limit") and not options.get("inventory"):
        raise UsageError("--limit narrows --inventory", hint="add --inventory FILE")
    if fleet:
        options["fleet_words"] = words
        return False
    for key in ("inventory", "limit", "jobs"):
        options.pop(key, None)
    options["host"] = words[0] if words else None
    return True
