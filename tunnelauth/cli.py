"""The typer app: options become Settings; the ONLY place that maps errors to exit statuses.

Connection options are accepted before or after the subcommand: ``normalize_argv`` moves the
ones written before it to after it, so each command declares them once.
"""

import inspect
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from tunnelauth import __version__
from tunnelauth.errors import TunnelauthError, UsageError
from tunnelauth.providers import PROVIDERS, hermes_args, validate_name
from tunnelauth.settings import (
    BACKENDS,
    VIAS,
    Settings,
    SSHTarget,
    config_path,
    host_section,
    load_config,
    resolve_host,
    validate_host,
)
from tunnelauth.status import ExitStatus

# Options shared by every login command: (parameter name, flags, type, help, takes a value).
_OPTION_SPECS: tuple[tuple[str, tuple[str, ...], Any, str, bool], ...] = (
    ("jump", ("-J", "--jump"), list[str] | None, "Jump host(s), comma list; repeatable.", True),
    ("ssh_config", ("-F", "--ssh-config"), Path | None, "ssh config file to use.", True),
    ("identity", ("-i", "--identity"), list[Path] | None, "Identity (key) file.", True),
    ("port", ("-p", "--port"), int | None, "SSH port of the host.", True),
    ("login", ("-l", "--login"), str | None, "SSH user name.", True),
    ("ssh_option", ("-o", "--ssh-option"), list[str] | None, "ssh -o option; repeatable.", True),
    ("hermes", ("--hermes",), str | None, "Remote hermes binary (~ expands remotely).", True),
    ("profile", ("--profile",), str | None, "hermes profile (hermes -p NAME).", True),
    ("timeout", ("--timeout",), float | None, "Overall deadline in seconds.", True),
    ("connect_timeout", ("--connect-timeout",), float | None, "SSH connect deadline.", True),
    ("browser_cmd", ("--browser-cmd",), str | None, "Browser command; {url} = the URL.", True),
    ("backend", ("--backend",), str | None, "SSH backend: " + "|".join(BACKENDS), True),
    ("via", ("--via",), str | None, "How the callback reaches the remote: " + "|".join(VIAS), True),
    ("config", ("--config",), Path | None, "tunnelauth config file (TOML).", True),
    ("no_browser", ("--no-browser",), bool, "Print the URL instead of opening a browser.", False),
    ("batch", ("--batch",), bool, "Never prompt (automatic without a TTY or with CI set).", False),
    ("show_secrets", ("--show-secrets",), bool, "Do not redact codes in output.", False),
    ("quiet", ("-q", "--quiet"), bool, "Only warnings, errors and what you must act on.", False),
    ("verbose", ("-v", "--verbose"), int, "More detail (repeatable).", False),
)

_METAVARS = {
    "jump": "HOST",
    "ssh_config": "FILE",
    "identity": "FILE",
    "port": "PORT",
    "login": "USER",
    "ssh_option": "OPTION",
    "hermes": "PATH",
    "profile": "NAME",
    "timeout": "SECONDS",
    "connect_timeout": "SECONDS",
    "browser_cmd": "CMD",
    "backend": "NAME",
    "via": "MODE",
    "config": "FILE",
}

_VALUE_FLAGS = {flag for _, flags, _, _, takes in _OPTION_SPECS if takes for flag in flags}
_BOOL_FLAGS = {flag for _, flags, _, _, takes in _OPTION_SPECS if not takes for flag in flags}

HostArg = Annotated[
    str | None, typer.Argument(help="SSH destination ([user@]host or alias).", metavar="HOST")
]


def _common_parameters() -> list[inspect.Parameter]:
    params = []
    for name, flags, kind, help_text, _ in _OPTION_SPECS:
        if kind is int:
            option = typer.Option(*flags, help=help_text, count=True)
            default: Any = 0
        else:
            option = typer.Option(
                *flags, help=help_text, show_default=False, metavar=_METAVARS.get(name)
            )
            default = False if kind is bool else None
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[kind, option],
            )
        )
    return params


app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Log a remote CLI in through SSH: runs the login on the host, carries the browser's "
    "OAuth callback back to it over the same connection, and cleans up.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tunnelauth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """tunnelauth: one command to log a remote CLI in through SSH."""


def _register(name: str, help_text: str, positional: Sequence[inspect.Parameter]) -> None:
    """Add a login command whose signature is its positionals plus the shared options."""

    def command(**kwargs: Any) -> None:
        _login(name, kwargs)

    command.__signature__ = inspect.Signature([*positional, *_common_parameters()])  # type: ignore[attr-defined]
    command.__doc__ = help_text
    app.command(name, help=help_text)(command)


def _host_param() -> inspect.Parameter:
    return inspect.Parameter(
        "host", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=HostArg
    )


for _name, _spec in PROVIDERS.items():
    if _name == "mcp":
        _server = inspect.Parameter(
            "server",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[
                str, typer.Argument(help="MCP server name from hermes config.", metavar="NAME")
            ],
        )
        _register("mcp", "Log in an MCP server: hermes mcp login NAME.", [_server, _host_param()])
    else:
        _register(
            _name,
            f"Log in {_name}: hermes {' '.join(_spec.args)} ({_spec.flow}).",
            [_host_param()],
        )

_register(
    "run",
    "Run any loopback-login command on the host: tunnelauth run [HOST] -- CMD ARGS...",
    [_host_param()],
)


@app.command("providers")
def _providers() -> None:
    """List the providers and the remote command each runs."""
    for name, spec in PROVIDERS.items():
        args = " ".join(spec.args).replace("{name}", "NAME")
        typer.echo(f"{name:<10} hermes {args:<42} {spec.flow}")


@app.command("demo")
def _demo(
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="A built-in client plays the browser.")
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only warnings and errors.")] = False,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="More detail.")] = 0,
) -> None:
    """Try it here: the real flow against a simulated host (no sshd, root or network needed)."""
    from tunnelauth.demo import main as demo_main

    demo_main(no_browser=no_browser, verbosity=-1 if quiet else verbose)


# The command after `run ... --`, split off before typer sees the arguments.
_RUN_COMMAND: list[str] = []


def _login(name: str, options: dict[str, Any]) -> None:
    settings = build_settings(name, options, run_command=_RUN_COMMAND)
    from tunnelauth import flow
    from tunnelauth.render import ConsoleReporter

    reporter = ConsoleReporter(verbosity=settings.verbosity)
    try:
        flow.run(settings, reporter)
    except TunnelauthError as exc:
        lines = getattr(exc, "last_lines", [])
        reporter.finish(False, exc.message, exc.hint, lines)
        exc.reported = True
        raise
    finally:
        reporter.close()
    reporter.finish(True, "logged in", None, [])


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def build_settings(
    name: str, options: dict[str, Any], *, run_command: Sequence[str] = ()
) -> Settings:
    """Resolve command-line options, environment and config file into Settings."""
    config = load_config(config_path(options.get("config")))
    host, host_source = resolve_host(options.get("host"), config)
    section = host_section(config, host)
    validate_host(host)

    def pick(key: str, env: str | None = None, default: Any = None) -> tuple[Any, str]:
        value = options.get(key)
        if value not in (None, [], ()):
            return value, "flag"
        if env and os.environ.get(env):
            return os.environ[env], "env"
        if key in section:
            return section[key], "file"
        return default, "default"

    jump_raw, _ = pick("jump")
    jumps = _split_jumps(jump_raw)
    hermes, _ = pick("hermes", "TUNNELAUTH_HERMES", "hermes")
    profile, _ = pick("profile")
    browser_cmd, _ = pick("browser_cmd", "TUNNELAUTH_BROWSER_CMD")
    backend, _ = pick("backend", "TUNNELAUTH_BACKEND", "auto")
    via, _ = pick("via", "TUNNELAUTH_VIA", "auto")
    if via not in VIAS:
        raise UsageError(f"unknown --via {via!r}", hint="choose " + ", ".join(VIAS))
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint="choose " + ", ".join(BACKENDS))
    identity, _ = pick("identity")
    if isinstance(identity, (str, Path)):
        identity = [identity]
    ssh_config = options.get("ssh_config")
    port, _ = pick("port")
    login, _ = pick("login", None)
    if login is None and "user" in section:
        login = section["user"]
    if name == "run":
        if not run_command:
            raise UsageError("run needs a command", hint="tunnelauth run HOST -- CMD ARGS...")
        program, args = run_command[0], tuple(run_command[1:])
        provider, default_timeout = None, 600.0
    else:
        program = str(hermes)
        provider = name
        server = options.get("server")
        args = tuple(hermes_args(name, name=server, profile=profile))
        default_timeout = PROVIDERS[name].timeout + 30.0
    if profile is not None:
        validate_name(str(profile), "profile name")
    timeout, _ = pick("timeout", "TUNNELAUTH_TIMEOUT", default_timeout)
    connect_timeout, _ = pick("connect_timeout", None, 30.0)
    batch = bool(options.get("batch")) or _env_flag("CI") or not sys.stdin.isatty()
    verbosity = -1 if options.get("quiet") else int(options.get("verbose") or 0)
    target = SSHTarget(
        host=host,
        jump=jumps,
        ssh_config=Path(ssh_config) if ssh_config else None,
        identity=tuple(Path(str(p)).expanduser() for p in identity or ()),
        port=int(port) if port is not None else None,
        login=str(login) if login is not None else None,
        options=tuple(options.get("ssh_option") or ()),
    )
    return Settings(
        target=target,
        program=program,
        args=args,
        provider=provider,
        timeout=float(timeout),
        no_browser=bool(options.get("no_browser")),
        browser_cmd=str(browser_cmd) if browser_cmd else None,
        verbosity=verbosity,
        backend=str(backend),
        connect_timeout=float(connect_timeout),
        batch=batch,
        show_secrets=bool(options.get("show_secrets")),
        via=str(via),
        sources={"host": host_source},
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
        if flag in _VALUE_FLAGS:
            width = 1 if "=" in token else 2
            leading += args[i : i + width]
            i += width
        elif flag in _BOOL_FLAGS or (token.startswith("-v") and set(token[1:]) == {"v"}):
            leading.append(token)
            i += 1
        else:
            break
    rest = args[i:]
    if not rest or rest[0].startswith("-"):
        return [*leading, *rest], []
    command, tail = rest[0], rest[1:]
    run_command: list[str] = []
    if command == "run" and "--" in tail:
        cut = tail.index("--")
        tail, run_command = tail[:cut], tail[cut + 1 :]
    return [command, *tail, *leading], run_command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit status (the only place errors become codes)."""
    args, run_command = normalize_argv(sys.argv[1:] if argv is None else argv)
    _RUN_COMMAND[:] = run_command
    try:
        app(args=args, prog_name="tunnelauth", standalone_mode=False)
    except TunnelauthError as exc:
        if not exc.reported:
            sys.stderr.write(f"tunnelauth: {exc.message}\n")
            if exc.hint:
                sys.stderr.write(f"  {exc.hint}\n")
        return int(exc.status)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        return int(ExitStatus.INTERRUPTED)
    except KeyboardInterrupt:
        return int(ExitStatus.INTERRUPTED)
    except Exception as exc:
        # click's usage errors (typer may vendor click, so match by behaviour, not by class).
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            return int(ExitStatus.USAGE)
        raise
    return int(ExitStatus.OK)
