"""The typer app: options become Settings; the ONLY place that maps errors to exit statuses.

Connection options are accepted before or after the subcommand: ``normalize_argv`` moves the
ones written before it to after it, so each command declares them once.
"""

import contextlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from tunnelauth import __version__
from tunnelauth.errors import TunnelauthError, UsageError
from tunnelauth.options import resolve_options
from tunnelauth.providers import PROVIDERS, hermes_args, validate_name
from tunnelauth.report import Reporter
from tunnelauth.settings import (
    BACKENDS,
    VIAS,
    Settings,
    SSHTarget,
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

_METAVARS = {
    "jump": "HOST",
    "ssh_config": "FILE",
    "identity": "FILE",
    "port": "PORT",
    "login": "USER",
    "ssh_option": "OPTION",
    "hermes": "PATH",
    "profile": "NAME",
    "run_as": "USER",
    "hermes_home": "PATH",
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


def _register(
    name: str,
    help_text: str,
    positional: Sequence[inspect.Parameter],
    action: Callable[[str, dict[str, Any]], None] | None = None,
    target: typer.Typer | None = None,
) -> None:
    """Add a command whose signature is its positionals plus the shared options."""

    def command(**kwargs: Any) -> None:
        (action or _login)(name, kwargs)

    command.__signature__ = inspect.Signature([*positional, *_common_parameters()])  # type: ignore[attr-defined]
    command.__doc__ = help_text
    (target or app).command(name, help=help_text)(command)


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
_register(
    "doctor",
    "Check that a login can work: ssh, host key, forwarding, hermes, ports, browser.",
    [_host_param()],
    action=lambda name, options: _doctor(name, options),
)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
_register(
    "show",
    "Print the effective settings for HOST and where each came from (flag/env/file/default).",
    [_host_param()],
    action=lambda name, options: _config_show("config", options),
    target=config_app,
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
    from tunnelauth.terminal import modes_kept

    # However the run ends (errors included), the terminal's modes are written back as found.
    with modes_kept():
        _run_login(name, options)


def _run_login(name: str, options: dict[str, Any]) -> None:
    _start_early(name, options)
    from tunnelauth import flow, postlogin

    # Made before the settings, so a bad option or config still ends the JSON stream properly.
    reporter = _reporter(options)
    try:
        settings = build_settings(name, options, run_command=_RUN_COMMAND)
        hook = postlogin.after_login if settings.verify or settings.replace else None
        flow.run(settings, reporter, after_success=hook)
    except TunnelauthError as exc:
        lines = list(getattr(exc, "last_lines", []))
        reporter.finish(False, exc.message, exc.hint, lines, exit_status=int(exc.status))
        exc.reported = True
        raise
    except Exception as exc:
        reporter.finish(False, f"internal error: {exc!r}", None, [], exit_status=ExitStatus.ERROR)
        raise
    finally:
        reporter.close()
    reporter.finish(True, "logged in", None, [], exit_status=ExitStatus.OK)


def _start_early(name: str, options: dict[str, Any]) -> None:
    """In batch runs, start the SSH master now: it authenticates while the rest imports."""
    try:
        settings = build_settings(name, options, run_command=_RUN_COMMAND)
    except TunnelauthError:
        return  # reported below, once the reporter exists
    if not settings.batch or settings.backend not in ("auto", "openssh"):
        return  # interactive runs may be asked questions: those come after the imports
    from tunnelauth.transports import early

    with contextlib.suppress(OSError):
        early.start(settings.target)


def _reporter(options: dict[str, Any]) -> Reporter:
    """Human output on stderr; with --json, events on stdout as well."""
    from tunnelauth.render import ConsoleReporter

    verbosity = -1 if options.get("quiet") else int(options.get("verbose") or 0)
    human = ConsoleReporter(verbosity=verbosity)
    if not options.get("json"):
        return human
    from tunnelauth.jsonout import JsonReporter

    return JsonReporter(inner=human, host=str(options.get("host") or ""))


def _no_login_flags(command: str, options: dict[str, Any]) -> None:
    """--verify/--replace belong to logins; elsewhere they would be silently ignored."""
    for flag in ("verify", "replace"):
        if options.get(flag):
            raise UsageError(f"--{flag} applies to logins, not to {command}")


def _doctor(name: str, options: dict[str, Any]) -> None:
    """Run the checks, print the table (or JSON) on stdout, exit with the first failure's code."""
    import asyncio

    from tunnelauth import doctor
    from tunnelauth.errors import TimedOutError

    _no_login_flags(name, options)
    settings = build_settings(name, options)
    try:
        report = doctor.run(settings)
    except asyncio.TimeoutError:
        raise TimedOutError("doctor did not finish in time") from None
    if options.get("json"):
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        from tunnelauth.render import print_doctor

        print_doctor(report)
    if report.exit_status != ExitStatus.OK:
        raise typer.Exit(int(report.exit_status))


def _config_show(name: str, options: dict[str, Any]) -> None:
    """Print the effective settings for HOST and where each one came from."""
    _no_login_flags("config show", options)
    build_settings(name, options)  # validates everything the way a login would
    resolution = resolve_options(options, os.environ, stdin_is_tty=sys.stdin.isatty())
    if options.get("json"):
        typer.echo(json.dumps(resolution.to_json(), ensure_ascii=False))
    else:
        from tunnelauth.render import print_config

        print_config(resolution)


def build_settings(
    name: str, options: dict[str, Any], *, run_command: Sequence[str] = ()
) -> Settings:
    """Resolve command-line options, environment and config file into Settings."""
    resolution = resolve_options(options, os.environ, stdin_is_tty=sys.stdin.isatty())
    host = resolution.host.value
    values = resolution.values

    def pick(key: str, env: str | None = None, default: Any = None) -> tuple[Any, str]:
        """The resolved value and its source (keys options.py does not list: flag > env)."""
        if key in values:
            found = values[key]
            return (default if found.value is None else found.value), found.source
        value = options.get(key)
        if value not in (None, [], ()):
            return value, "flag"
        if env and os.environ.get(env):
            return os.environ[env], "env"
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
    ssh_config, _ = pick("ssh_config")
    port, _ = pick("port")
    login, _ = pick("user")
    run_as, _ = pick("run_as")
    if run_as is not None:
        validate_name(str(run_as), "run-as user")
    hermes_home, _ = pick("hermes_home")
    if name in ("doctor", "config"):
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
    batch = bool(resolution.batch.value)
    verbosity = -1 if options.get("quiet") else int(options.get("verbose") or 0)
    target = SSHTarget(
        host=host,
        jump=jumps,
        ssh_config=Path(str(ssh_config)).expanduser() if ssh_config else None,
        identity=tuple(Path(str(p)).expanduser() for p in identity or ()),
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
        browser_cmd=str(browser_cmd) if browser_cmd else None,
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
        # Without standalone mode, click returns a typer.Exit's code instead of raising it.
        result = app(args=args, prog_name="tunnelauth", standalone_mode=False)
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
    return result if isinstance(result, int) else int(ExitStatus.OK)
