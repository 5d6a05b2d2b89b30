"""Resolve each setting from flag, environment, config file or default, and remember which (pure).

``config show`` prints this resolution; ``build_settings`` turns it into frozen Settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from tunnelauth.errors import UsageError

SOURCES = ("flag", "env", "file", "default")


class Key(NamedTuple):
    """One setting: its flag, environment variable and config file key."""

    name: str
    flag: str | None
    env: str | None
    kind: type  # str, int, float, bool or list (a string or a list of strings)
    default: Any = None
    in_file: bool = True  # may appear in a [hosts.NAME] section


KEYS: tuple[Key, ...] = (
    Key("jump", "--jump", "TUNNELAUTH_JUMP", list),
    Key("user", "--login", None, str),
    Key("identity", "--identity", None, list),
    Key("port", "--port", None, int),
    Key("ssh_config", "--ssh-config", None, str),
    Key("backend", "--backend", "TUNNELAUTH_BACKEND", str, "auto"),
    Key("hermes", "--hermes", "TUNNELAUTH_HERMES", str, "hermes"),
    Key("profile", "--profile", "TUNNELAUTH_PROFILE", str),
    Key("run_as", "--run-as", "TUNNELAUTH_RUN_AS", str),
    Key("hermes_home", "--hermes-home", "TUNNELAUTH_HERMES_HOME", str),
    Key("browser_cmd", "--browser-cmd", "TUNNELAUTH_BROWSER_CMD", str),
    Key("timeout", "--timeout", "TUNNELAUTH_TIMEOUT", float),
    Key("connect_timeout", "--connect-timeout", "TUNNELAUTH_CONNECT_TIMEOUT", float, 30.0),
)
KEYS_BY_NAME = MappingProxyType({k.name: k for k in KEYS})
# The option dict from typer names the SSH user ``login``; the config file calls it ``user``.
_OPTION_NAME = MappingProxyType({"user": "login"})
TOP_LEVEL_KEYS = ("default_host", "hosts", "groups")


class Resolved(NamedTuple):
    """A setting's value and where it came from (``origin`` names the flag, variable or file)."""

    value: Any
    source: str
    origin: str


def host_section_keys(section: Mapping[str, Any], where: str) -> None:
    """Refuse unknown keys in a host section, so a typo is reported instead of ignored."""
    known = {k.name for k in KEYS if k.in_file}
    for key in section:
        if key not in known:
            raise UsageError(
                f"config: unknown key {key!r} in {where}",
                hint="known keys: " + ", ".join(sorted(known)),
            )


def check_config(config: Mapping[str, Any], path: Path) -> None:
    """Refuse unknown top-level keys and unknown keys in every host section."""
    for key in config:
        if key not in TOP_LEVEL_KEYS:
            raise UsageError(
                f"config: unknown top-level key {key!r} in {path}",
                hint="top level holds default_host, [hosts.NAME] tables and [groups]",
            )
    if "groups" in config:
        from tunnelauth.hostset import groups_of

        groups_of(config, str(path))
    hosts = config.get("hosts", {})
    if isinstance(hosts, Mapping):
        for name, section in hosts.items():
            if isinstance(section, Mapping):
                host_section_keys(section, f"[hosts.{name}] of {path}")


def _coerce(key: Key, value: Any, origin: str) -> Any:
    """Check and convert a value from the environment or the file to the key's type."""
    try:
        if key.kind is list:
            if isinstance(value, str):
                return [value]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return list(value)
            raise TypeError("a string or a list of strings")
        if key.kind is bool:
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() not in ("", "0", "false", "no")
        if key.kind is int:
            if isinstance(value, bool):
                raise TypeError("a whole number")
            return int(value)
        if key.kind is float:
            if isinstance(value, bool):
                raise TypeError("a number")
            return float(value)
        if not isinstance(value, str):
            raise TypeError("a string")
        return value
    except (TypeError, ValueError) as exc:
        what = exc.args[0] if isinstance(exc, TypeError) and exc.args else key.kind.__name__
        raise UsageError(f"{key.name} from {origin} must be {what}, not {value!r}") from None


def resolve(
    options: Mapping[str, Any],
    section: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    file_origin: str,
) -> dict[str, Resolved]:
    """Every key's value with its source: flag > environment > host section > default."""
    result: dict[str, Resolved] = {}
    for key in KEYS:
        flag_value = options.get(_OPTION_NAME.get(key.name, key.name))
        if flag_value not in (None, [], ()):
            value = list(flag_value) if key.kind is list else flag_value
            result[key.name] = Resolved(value, "flag", key.flag or key.name)
        elif key.env and env.get(key.env):
            origin = "$" + key.env
            result[key.name] = Resolved(_coerce(key, env[key.env], origin), "env", origin)
        elif key.in_file and key.name in section:
            result[key.name] = Resolved(
                _coerce(key, section[key.name], file_origin), "file", file_origin
            )
        else:
            result[key.name] = Resolved(key.default, "default", "built-in")
    return result


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """Whether an environment variable is set to something other than empty/0/false/no."""
    return env.get(name, "").strip().lower() not in ("", "0", "false", "no")


def resolve_batch(flag: bool, env: Mapping[str, str], stdin_is_tty: bool) -> Resolved:
    """Batch mode: ``--batch``, else ``CI`` set, else automatic when stdin is not a terminal."""
    if flag:
        return Resolved(True, "flag", "--batch")
    if env_flag(env, "CI"):
        return Resolved(True, "env", "$CI")
    if not stdin_is_tty:
        return Resolved(True, "default", "stdin is not a terminal")
    return Resolved(False, "default", "stdin is a terminal")


class Resolution(NamedTuple):
    """The effective settings for one host, each with its source, and the config file used."""

    host: Resolved
    config_file: Path
    values: Mapping[str, Resolved]
    batch: Resolved

    def sources(self) -> dict[str, str]:
        """``{setting: source}`` for Settings.sources."""
        found = {name: r.source for name, r in self.values.items()}
        return {**found, "host": self.host.source, "batch": self.batch.source}

    def to_json(self) -> dict[str, Any]:
        """The document ``config show --json`` prints."""
        rows = {"host": self.host, **self.values, "batch": self.batch}
        return {
            "v": 1,
            "kind": "config",
            "config_file": str(self.config_file),
            "settings": {
                name: {"value": _plain(r.value), "source": r.source, "origin": r.origin}
                for name, r in rows.items()
            },
        }

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(setting, value as text, source, origin) for the human table."""
        rows = {"host": self.host, **self.values, "batch": self.batch}
        return [(name, _text(name, r.value), r.source, r.origin) for name, r in rows.items()]


def _plain(value: Any) -> Any:
    """A JSON-friendly copy (paths become strings)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _text(name: str, value: Any) -> str:
    """How a value reads in the table."""
    if value is None:
        return "(the flow's own + 30 s)" if name == "timeout" else "(unset)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def resolve_options(
    options: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    stdin_is_tty: bool,
    require_host: bool = True,
) -> Resolution:
    """Read the config file and resolve the host and every setting with its source.

    Without ``require_host`` a missing host resolves to None and only the global settings apply.
    """
    from tunnelauth.preflight import config_file
    from tunnelauth.settings import config_path, host_section, load_config, validate_host

    path = config_path(options.get("config"), env)
    if options.get("config"):
        config_file(path, "--config")
    elif env.get("TUNNELAUTH_CONFIG"):
        config_file(path, "$TUNNELAUTH_CONFIG")
    config = load_config(path)
    check_config(config, path)
    cli_host = options.get("host")
    if cli_host:
        host = Resolved(cli_host, "flag", "HOST argument")
    elif env.get("TUNNELAUTH_HOST"):
        host = Resolved(env["TUNNELAUTH_HOST"], "env", "$TUNNELAUTH_HOST")
    elif isinstance(config.get("default_host"), str) and config["default_host"]:
        host = Resolved(config["default_host"], "file", f"{path} default_host")
    elif not require_host:
        values = resolve(options, {}, env, file_origin=str(path))
        batch = resolve_batch(bool(options.get("batch")), env, stdin_is_tty)
        return Resolution(Resolved(None, "default", "no host given"), path, values, batch)
    else:
        raise UsageError(
            "no host given",
            hint="name one (tunnelauth xai user@host), set TUNNELAUTH_HOST, "
            "or set default_host in the config file",
        )
    validate_host(host.value)
    section = host_section(config, host.value)
    values = resolve(options, section, env, file_origin=f"{path} [hosts.{host.value}]")
    batch = resolve_batch(bool(options.get("batch")), env, stdin_is_tty)
    return Resolution(host, path, values, batch)
