"""The typer app: its commands, options and help; the ONLY place that maps errors to exit
statuses. What each command does once its options are read is ``cliactions``'s.

Connection options are accepted before or after the subcommand: ``normalize_argv`` moves the
ones written before it to after it, so each command declares them once.
"""

import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Annotated, Any, NamedTuple

import typer
from typer.core import TyperCommand

from tunnelauth import __version__, cliactions
from tunnelauth.cmdline import OPTION_SPECS, VALUE_FLAGS, normalize_argv
from tunnelauth.completion import complete_choice, complete_host, complete_mcp_server
from tunnelauth.errors import TunnelauthError
from tunnelauth.exits import Shown, status_of
from tunnelauth.fleetparams import fleet_parameters
from tunnelauth.providers import PROVIDERS
from tunnelauth.recipes import RECIPES, display
from tunnelauth.settings import BACKENDS, VIAS
from tunnelauth.status import ExitStatus

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
            invocation = ctx.obj if isinstance(ctx.obj, Invocation) else Invocation()
            invocation.login(name, kwargs, invocation.run_command)

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
    action=cliactions.run_doctor,
)
_register(
    "status",
    "Show what HOST is logged in to: each provider (hermes auth status) and MCP servers with "
    "a token. Several hosts, patterns, @GROUP or --inventory: one row per host.",
    fleet_parameters(complete_host),
    action=cliactions.show_status,
)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
_register(
    "show",
    "Print the effective settings for HOST and where each came from (flag/env/file/default).",
    [_host_param()],
    action=lambda _name, options: cliactions.show_config("config", options),
    target=config_app,
)


@app.command("providers")
def _providers(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document on stdout (docs/ci.md).")
    ] = False,
) -> None:
    """List the providers and recipes, and the remote command each runs."""
    cliactions.list_providers(as_json)


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


COMPLETION_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


class Invocation(NamedTuple):
    """What ``main`` hands a command beside typer's options."""

    run_command: tuple[str, ...] = ()  # the command after `run ... --`
    login: Callable[[str, dict[str, Any], Sequence[str]], None] = cliactions.run_login


def main(
    argv: Sequence[str] | None = None,
    *,
    login: Callable[[str, dict[str, Any], Sequence[str]], None] = cliactions.run_login,
) -> int:
    """Run the CLI and return the exit status (the only place errors become codes).

    ``login``: what a login line runs with its name, options and command (a test states it).
    """
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
        invocation = Invocation(tuple(run_command), login)
        result = app(args=args, prog_name="tunnelauth", standalone_mode=False, obj=invocation)
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
