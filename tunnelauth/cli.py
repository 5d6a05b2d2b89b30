"""The typer app: options become Settings; the ONLY place that maps errors to exit statuses.

Connection options are accepted before or after the subcommand: ``normalize_argv`` moves the
ones written before it to after it, so each command declares them once.
"""

import inspect
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand

from tunnelauth import __version__
from tunnelauth.cmdline import OPTION_SPECS, VALUE_FLAGS, build_settings, normalize_argv
from tunnelauth.completion import complete_choice, complete_host, complete_mcp_server
from tunnelauth.environment import Environment
from tunnelauth.errors import TunnelauthError, UsageError
from tunnelauth.exits import Shown, status_of
from tunnelauth.fleetparams import fleet_parameters
from tunnelauth.options import resolve_options
from tunnelauth.providers import PROVIDERS
from tunnelauth.recipes import RECIPES, display
from tunnelauth.settings import BACKENDS, VIAS, Settings
from tunnelauth.status import ExitStatus

_T = TypeVar("_T")

_METAVARS = MappingProxyType(
    {
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
)

HostArg = Annotated[
    str | None,
    typer.Argument(
        help="SSH destination ([user@]host or alias).", metavar="HOST", autocompletion=complete_host
    ),
]
_COMPLETERS: Mapping[str, Any] = MappingProxyType(
    {
        "backend": complete_choice(BACKENDS),
        "via": complete_choice(VIAS),
    }
)


def _common_parameters() -> list[inspect.Parameter]:
    params = []
    for name, flags, kind, help_text, _ in OPTION_SPECS:
        if kind is int:
            option = typer.Option(*flags, help=help_text, count=True, show_default=False)
            default: Any = 0
        else:
            option = typer.Option(
                *flags,
                help=help_text,
                show_default=False,
                metavar=_METAVARS.get(name),
                autocompletion=_COMPLETERS.get(name),
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


class _Command(TyperCommand):
    """Usage lines as people write them: ``mcp [OPTIONS] NAME [HOST]`` (typer braces NAME)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


def _register(
    name: str,
    help_text: str,
    positional: Sequence[inspect.Parameter],
    action: Callable[[str, dict[str, Any]], None] | None = None,
    target: typer.Typer | None = None,
) -> None:
    """Add a command whose signature is its positionals plus the shared options."""

    def command(ctx: typer.Context, **kwargs: Any) -> None:
        if action is not None:
            action(name, kwargs)
        else:
            _login(name, kwargs, ctx.obj or ())

    context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
    signature = inspect.Signature([*positional, *_common_parameters(), context])
    command.__signature__ = signature  # type: ignore[attr-defined]
    command.__doc__ = help_text
    (target or app).command(name, help=help_text, cls=_Command)(command)


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
                str,
                typer.Argument(
                    help="MCP server name from hermes config.",
                    metavar="NAME",
                    autocompletion=complete_mcp_server,
                ),
            ],
        )
        _register(
            "mcp",
            "Log in an MCP server: hermes mcp login NAME.",
            [_server, *fleet_parameters(complete_host)],
        )
    else:
        _register(
            _name,
            f"Log in {_name}: runs hermes {' '.join(_spec.args)}. Usual flow: {_spec.flow}.",
            fleet_parameters(complete_host),
        )

_register(
    "run",
    "Run any loopback-login command on the host: tunnelauth run [HOST] -- CMD ARGS...",
    fleet_parameters(complete_host),
)
_RECIPE_COMPLETER: Any = complete_choice(tuple(RECIPES))
_recipe = inspect.Parameter(
    "recipe",
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    annotation=Annotated[
        str,
        typer.Argument(
            help="Recipe name: " + ", ".join(RECIPES) + " (tunnelauth providers).",
            metavar="NAME",
            autocompletion=_RECIPE_COMPLETER,
        ),
    ],
)
_register(
    "recipe",
    "Log in another CLI with the flags it needs over SSH: tunnelauth recipe NAME [HOST] "
    "[-- EXTRA ARGS]. " + "; ".join(f"{n}: {display(r)}" for n, r in RECIPES.items()) + ".",
    [_recipe, *fleet_parameters(complete_host)],
)
_register(
    "doctor",
    "Check that a login can work: ssh, host key, forwarding, hermes, ports, browser.",
    [_host_param()],
    action=lambda name, options: _doctor(name, options),
)
_register(
    "status",
    "Show what HOST is logged in to: each provider (hermes auth status) and MCP servers with "
    "a token. Several hosts, patterns, @GROUP or --inventory: one row per host.",
    fleet_parameters(complete_host),
    action=lambda name, options: _status(name, options),
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
def _providers(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document on stdout (docs/ci.md).")
    ] = False,
) -> None:
    """List the providers and recipes, and the remote command each runs."""
    rows = []
    for name, spec in PROVIDERS.items():
        args = " ".join(spec.args).replace("{name}", "NAME")
        rows.append((name, f"hermes {args}", spec.flow))
    if as_json:
        providers = [{"name": n, "command": c, "usual_flow": f} for n, c, f in rows]
        recipes = [
            {
                "name": r.name,
                "command": display(r),
                "env": dict(r.env),
                "usual_flow": r.flow,
                "why": r.why,
                "run": f"tunnelauth recipe {r.name} HOST",
            }
            for r in RECIPES.values()
        ]
        doc = {"v": 1, "kind": "providers", "providers": providers, "recipes": recipes}
        typer.echo(json.dumps(doc))
        return
    for name, command, flow in rows:
        typer.echo(f"{name:<10} {command:<49} {flow}")
    typer.echo("\nrecipes (other CLIs: tunnelauth recipe NAME HOST [-- EXTRA ARGS]):")
    for recipe in RECIPES.values():
        typer.echo(f"{recipe.name:<10} {display(recipe):<49} {recipe.flow}")
        typer.echo(f"{'':<10} {recipe.why}")


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


def _login(name: str, options: dict[str, Any], run_command: Sequence[str]) -> None:
    from tunnelauth import fleetcmd, login
    from tunnelauth.hostset import single_host

    if single_host(options):
        login.login(name, options, run_command)
        return
    code = fleetcmd.login(name, options, run_command)
    if code != ExitStatus.OK:
        raise typer.Exit(int(code))


def _no_login_flags(command: str, options: dict[str, Any]) -> None:
    """--verify/--replace belong to logins; elsewhere they would be silently ignored."""
    for flag in ("verify", "replace"):
        if options.get(flag):
            raise UsageError(f"--{flag} applies to logins, not to {command}")


def _ask_remote(
    name: str, options: dict[str, Any], ask: Callable[[Settings, Environment], _T]
) -> _T:
    """Settings for a command that only asks the remote (doctor, status), then its answer."""
    import asyncio

    from tunnelauth.errors import TimedOutError

    _no_login_flags(name, options)
    env = Environment.current()  # the process, read once for the settings and the connection
    settings = build_settings(name, options, environment=env)
    try:
        return ask(settings, env)
    except asyncio.TimeoutError:
        raise TimedOutError(f"{name} did not finish in time") from None


def _doctor(name: str, options: dict[str, Any]) -> None:
    """Run the checks, print the table (or JSON) on stdout, exit with the first failure's code."""
    from tunnelauth import doctor

    report = _ask_remote(name, options, doctor.run)
    if options.get("json"):
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        from tunnelauth.render import print_doctor

        print_doctor(report)
    if report.exit_status != ExitStatus.OK:
        raise typer.Exit(int(report.exit_status))


def _status(name: str, options: dict[str, Any]) -> None:
    """Print the remote's login state (table, or JSON with --json) on stdout."""
    from tunnelauth import fleetcmd, loginstatus
    from tunnelauth.completion import remember_mcp_servers
    from tunnelauth.hostset import single_host

    if not single_host(options):
        _no_login_flags(name, options)
        code = fleetcmd.status(options)
        if code != ExitStatus.OK:
            raise typer.Exit(int(code))
        return
    status = _ask_remote(name, options, loginstatus.run)

    remember_mcp_servers(status.host, status.mcp_servers)
    if options.get("json"):
        typer.echo(json.dumps(status.to_json(), ensure_ascii=False))
    else:
        from tunnelauth.render import print_status

        print_status(status)


def _config_show(name: str, options: dict[str, Any]) -> None:
    """Print the effective settings for HOST and where each one came from."""
    _no_login_flags("config show", options)
    from tunnelauth.environment import Environment

    env = Environment.current()
    resolution = resolve_options(
        options, env.variables, stdin_is_tty=env.stdin_tty, require_host=False
    )
    if resolution.host.value is not None:
        build_settings(name, options, environment=env)  # validated the way a login would
    if options.get("json"):
        typer.echo(json.dumps(resolution.to_json(), ensure_ascii=False))
    else:
        from tunnelauth.render import print_config

        print_config(resolution)


COMPLETION_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit status (the only place errors become codes)."""
    args, run_command = normalize_argv(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--show-completion" and args[1] in COMPLETION_SHELLS:
        # typer's flag takes no value and detects the shell it runs under; a named shell is the
        # one a script or a CI job asks for, wherever it runs.
        from typer._completion_shared import get_completion_script

        script = get_completion_script(
            prog_name="tunnelauth", complete_var="_TUNNELAUTH_COMPLETE", shell=args[1]
        )
        sys.stdout.write(script.rstrip("\n") + "\n")
        return int(ExitStatus.OK)
    try:
        if args[:1] == ["run"] and not run_command:
            from tunnelauth.preflight import run_separator

            run_separator(args[1:], VALUE_FLAGS)
        # Without standalone mode, click returns a typer.Exit's code instead of raising it.
        # The command after `run ... --` (split off before typer sees the arguments) reaches the
        # login through the context, never through module state.
        result = app(
            args=args, prog_name="tunnelauth", standalone_mode=False, obj=tuple(run_command)
        )
    except (TunnelauthError, Shown, KeyboardInterrupt) as exc:
        return status_of(exc)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        return int(ExitStatus.INTERRUPTED)
    except Exception as exc:
        # click's usage errors (typer may vendor click, so match by behaviour, not by class).
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            return int(ExitStatus.USAGE)
        raise
    return result if isinstance(result, int) else int(ExitStatus.OK)
