"""The command line without typer: shared options, argv normalising, Settings from options.

Light on purpose (no typer, asyncio or rich): the entry point uses it to recognise a login, and
the login reads its settings here before the heavy imports, to give its transport a head start
(``transports.headstart``); the typer app in ``cli`` uses the same option table, so both read
a command line the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tunnelauth import preflight
from tunnelauth.environment import Environment
from tunnelauth.errors import UsageError
from tunnelauth.options import resolve_options
from tunnelauth.providers import PROVIDERS, hermes_args, validate_name
from tunnelauth.recipes import RECIPES, recipe_command
from tunnelauth.settings import BACKENDS, VIAS, Settings, SSHTarget, validate_host

# Options shared by every login command: (parameter name, flags, type, help, takes a value).
OPTION_SPECS: tuple[tuple[str, tuple[str, ...], Any, str, bool], ...] = (
    ("jump", ("-J", "--jump"), list[str] | None, "Jump host(s), comma list; repeatable.", True),
    ("ssh_config", ("-F", "--ssh-config"), Path | None, "ssh config file to use.", True),
    ("identity", ("-i", "--identity"), list[Path] | None, "Identity (key) file.", True),
    ("port", ("-p", "--port"), int | None, "SSH port of the host.", True),
    ("login", ("-l", "--login"), str | None, "SSH user name.", True),
    ("ssh_option", ("-o", "--ssh-option"), list[str] | None, "ssh -o option; repeatable.", True),
    ("hermes", ("--hermes",), str | None, "Remote hermes binary (~ expands remotely).", True),
    ("profile", ("--profile",), str | None, "hermes profile (hermes -p NAME).", True),
    ("run_as", ("--as", "--run-as"), str | None, "Run the remote login as USER (sudo).", True),
    ("hermes_home", ("--hermes-home",), str | None, "HERMES_HOME on the remote.", True),
    ("timeout", ("--timeout",), float | None, "Overall deadline in seconds.", True),
    ("connect_timeout", ("--connect-timeout",), float | None, "SSH connect deadline.", True),
    ("browser_cmd", ("--browser-cmd",), str | None, "Browser command; {url} = the URL.", True),
    ("backend", ("--backend",), str | None, "SSH backend: " + "|".join(BACKENDS), True),
    ("via", ("--via",), str | None, "How the callback reaches the remote: " + "|".join(VIAS), True),
    ("config", ("--config",), Path | None, "tunnelauth config file (TOML).", True),
    ("no_browser", ("--no-browser",), bool, "Print the URL instead of opening a browser.", False),
    ("batch", ("--batch",), bool, "Never prompt (automatic without a TTY or with CI set).", False),
    ("show_secrets", ("--show-secrets",), bool, "Do not redact codes in output.", False),
    ("json", ("--json",), bool, "JSON events on stdout, one per line (docs/ci.md).", False),
    ("verify", ("--verify",), bool, "After success, check the credential on the remote.", False),
    ("replace", ("--replace",), bool, "After success, remove older credentials.", False),
    ("no_wait", ("--no-wait",), bool, "Fail if another run holds the port (no wait).", False),
    ("reap", ("--reap",), bool, "End a stale tunnelauth run for this host on the port.", False),
    ("accept_new", ("--accept-new",), bool, "Add an unknown host key (accept-new).", False),
    ("quiet", ("-q", "--quiet"), bool, "Only warnings, errors and what you must act on.", False),
    ("verbose", ("-v", "--verbose"), int, "More detail (repeatable).", False),
)

VALUE_FLAGS = frozenset({flag for _, flags, _, _, takes in OPTION_SPECS if takes for flag in flags})
BOOL_FLAGS = frozenset(
    {flag for _, flags, _, _, takes in OPTION_SPECS if not takes for flag in flags}
)


# Commands that log in (and so may start their SSH master before the heavy imports).
LOGIN_COMMANDS = frozenset({*PROVIDERS, "run", "recipe"})
# Commands whose own command line follows `--`: run's command, a recipe's extra arguments.
DASH_COMMANDS = frozenset({"run", "recipe"})
_SPEC_BY_FLAG = MappingProxyType({flag: spec for spec in OPTION_SPECS for flag in spec[1]})
_COUNT_FLAG = re.compile(r"-v+")


def parse_login(argv: Sequence[str]) -> tuple[str, dict[str, Any], list[str]] | None:
    """A login command line read as typer would: ``(command, options, run command)``.

    Only plain forms are read (``--flag VALUE``, ``--flag=VALUE``, ``-vv``); for anything else
    (help, an unknown or clustered flag, a bad number, a missing value) the answer is None and
    typer alone reads the line, with its own messages.
    """
    args, run_command = normalize_argv(argv)
    if not args or args[0] not in LOGIN_COMMANDS:
        return None
    name, tail = args[0], args[1:]
    options: dict[str, Any] = {
        key: (0 if kind is int else False if kind is bool else None)
        for key, _, kind, _, _ in OPTION_SPECS
    }
    positionals: list[str] = []
    i = 0
    while i < len(tail):
        token = tail[i]
        i += 1
        if not token.startswith("-") or token == "-":
            positionals.append(token)
            continue
        if _COUNT_FLAG.fullmatch(token):
            options["verbose"] += len(token) - 1
            continue
        flag, eq, value = token.partition("=")
        spec = _SPEC_BY_FLAG.get(flag)
        if spec is None or (eq and not spec[4]):
            return None
        key, _, kind, _, takes_value = spec
        if not takes_value:
            options[key] = options[key] + 1 if kind is int else True
            continue
        if not eq:
            if i >= len(tail):
                return None
            value, i = tail[i], i + 1
        try:
            converted = _CONVERTERS[kind](value)
        except ValueError:
            return None
        if isinstance(converted, list):
            options[key] = (options[key] or []) + converted
        else:
            options[key] = converted
    wanted = {"mcp": ["server", "host"], "recipe": ["recipe", "host"]}.get(name, ["host"])
    if len(positionals) > len(wanted) or (len(wanted) == 2 and not positionals):
        return None  # several hosts: a fleet, which typer's reading handles
    host = positionals[len(wanted) - 1] if len(positionals) == len(wanted) else ""
    if host.startswith("@") or any(c in host for c in "*?["):
        return None  # a group or a Host pattern: a fleet too
    options.update({key: None for key in wanted}, **dict(zip(wanted, positionals, strict=False)))
    return name, options, run_command


# Each option type's reading of a flag's text (repeatable flags give a one-item list).
_CONVERTERS: Mapping[Any, Any] = MappingProxyType(
    {
        int | None: int,
        float | None: float,
        str | None: str,
        Path | None: Path,
        list[Path] | None: lambda value: [Path(value)],
        list[str] | None: lambda value: [value],
    }
)


def build_settings(
    name: str,
    options: dict[str, Any],
    *,
    run_command: Sequence[str] = (),
    environment: Environment,
) -> Settings:
    """Resolve command-line options, environment and config file into Settings.

    ``environment`` is the process's, as the command read it.
    """
    variables = environment.variables
    resolution = resolve_options(options, variables, stdin_is_tty=environment.stdin_tty)
    host = resolution.host.value
    values = resolution.values

    def pick(key: str, env: str | None = None, default: Any = None) -> tuple[Any, str]:
        """The resolved value and its source (keys options.py does not list: flag > env)."""
        if key in values:
            found = values[key]
            return (default if found.value is None else found.value), found.origin
        value = options.get(key)
        if value not in (None, [], ()):
            return value, "flag"
        if env and variables.get(env):
            return variables[env], "env"
        return default, "default"

    jump_raw, _ = pick("jump")
    jumps = _split_jumps(jump_raw)
    hermes, _ = pick("hermes", "TUNNELAUTH_HERMES", "hermes")
    profile, _ = pick("profile")
    browser_cmd, browser_origin = pick("browser_cmd", "TUNNELAUTH_BROWSER_CMD")
    if browser_cmd is not None:
        preflight.browser_command(str(browser_cmd), browser_origin, variables.get("PATH"))
    backend, _ = pick("backend", "TUNNELAUTH_BACKEND", "auto")
    via, _ = pick("via", "TUNNELAUTH_VIA", "auto")
    if via not in VIAS:
        raise UsageError(f"unknown --via {via!r}", hint="choose " + ", ".join(VIAS))
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint="choose " + ", ".join(BACKENDS))
    identity, _ = pick("identity")
    if isinstance(identity, (str, Path)):
        identity = [identity]
    ssh_config, _ = pick("ssh_config")
    port, port_origin = pick("port")
    if port is not None:
        port = preflight.tcp_port(port, port_origin)
    login, _ = pick("user")
    run_as, _ = pick("run_as")
    if run_as is not None:
        validate_name(str(run_as), "run-as user")
    hermes_home, _ = pick("hermes_home")
    env: tuple[tuple[str, str], ...] = ()
    if name in ("doctor", "config", "status"):
        program, provider, server = str(hermes), None, None
        args: tuple[str, ...] = (
            ("-p", validate_name(str(profile), "profile name")) if profile else ()
        )
        default_timeout = 600.0
    elif name == "run":
        if not run_command:
            raise UsageError("run needs a command", hint="tunnelauth run HOST -- CMD ARGS...")
        program, args = run_command[0], tuple(run_command[1:])
        provider, default_timeout, server = None, 600.0, None
        if options.get("verify") or options.get("replace"):
            raise UsageError("--verify and --replace need a provider (not `run`)")
    elif name == "recipe":
        recipe = str(options.get("recipe") or "")
        program, args, env = recipe_command(recipe, run_command)
        provider, server, hermes_home = None, None, None  # HERMES_HOME is hermes' alone
        default_timeout = RECIPES[recipe].timeout + 30.0
        hermes_only = (("--verify", "verify"), ("--replace", "replace"), ("--profile", "profile"))
        for flag, key in hermes_only:
            if options.get(key):
                raise UsageError(f"{flag} belongs to hermes providers, not to recipe {recipe}")
    else:
        program = str(hermes)
        provider = name
        server = options.get("server")
        args = tuple(hermes_args(name, name=server, profile=profile))
        default_timeout = PROVIDERS[name].timeout + 30.0
    if profile is not None:
        validate_name(str(profile), "profile name")
    timeout, origin = pick("timeout", "TUNNELAUTH_TIMEOUT", default_timeout)
    timeout = preflight.positive_seconds(timeout, "--timeout", origin)
    connect_timeout, origin = pick("connect_timeout", None, 30.0)
    connect_timeout = preflight.positive_seconds(connect_timeout, "--connect-timeout", origin)
    batch = bool(resolution.batch.value)
    verbosity = -1 if options.get("quiet") else int(options.get("verbose") or 0)
    identities = tuple(Path(str(p)).expanduser() for p in identity or ())
    target = SSHTarget(
        host=host,
        jump=jumps,
        ssh_config=Path(str(ssh_config)).expanduser() if ssh_config else None,
        identity=identities,
        port=int(port) if port is not None else None,
        login=str(login) if login is not None else None,
        # --accept-new is ssh's own option, so every backend (and ssh itself) reads it the same.
        options=tuple(options.get("ssh_option") or ())
        + (("StrictHostKeyChecking=accept-new",) if options.get("accept_new") else ()),
    )
    return Settings(
        target=target,
        program=program,
        args=args,
        provider=provider,
        timeout=float(timeout),
        no_browser=bool(options.get("no_browser")),
        browser_cmd=str(browser_cmd) if browser_cmd is not None else None,
        verbosity=verbosity,
        backend=str(backend),
        connect_timeout=float(connect_timeout),
        batch=batch,
        show_secrets=bool(options.get("show_secrets")),
        via=str(via),
        sources=resolution.sources(),
        run_as=str(run_as) if run_as is not None else None,
        hermes_home=str(hermes_home) if hermes_home is not None else None,
        server=server,
        verify=bool(options.get("verify")),
        replace=bool(options.get("replace")),
        no_wait=bool(options.get("no_wait")),
        reap=bool(options.get("reap")),
        accept_new=bool(options.get("accept_new")),
        notices=preflight.identity_notices(identities),
        env=env,
    )


def _split_jumps(raw: Any) -> tuple[str, ...]:
    """``-J a,b -J c`` (or a config string/list) → ``("a", "b", "c")``, each validated."""
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else list(raw)
    hops = tuple(h.strip() for item in items for h in str(item).split(",") if h.strip())
    for hop in hops:
        validate_host(hop)
    return hops


def normalize_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Move shared options written before the subcommand after it; split off ``run``'s command."""
    args = list(argv)
    leading: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        flag = token.split("=", 1)[0]
        if flag in VALUE_FLAGS:
            width = 1 if "=" in token else 2
            leading += args[i : i + width]
            i += width
        elif flag in BOOL_FLAGS or (token.startswith("-v") and set(token[1:]) == {"v"}):
            leading.append(token)
            i += 1
        else:
            break
    rest = args[i:]
    if not rest or rest[0].startswith("-"):
        return [*leading, *rest], []
    command, tail = rest[0], rest[1:]
    run_command: list[str] = []
    if command in DASH_COMMANDS and "--" in tail:
        cut = tail.index("--")
        tail, run_command = tail[:cut], tail[cut + 1 :]
    return [command, *tail, *leading], run_command
