"""What tunnelauth's commands do once typer has read their options.

A login (one host, or a fleet of them) and the commands that only ask or show: ``doctor``,
``status``, ``config show`` and ``providers``. The heavy modules are imported inside each
action, so ``--help`` and completion stay quick.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer

from tunnelauth.cmdline import build_settings
from tunnelauth.environment import Environment
from tunnelauth.errors import UsageError
from tunnelauth.options import resolve_options
from tunnelauth.providers import PROVIDERS
from tunnelauth.recipes import RECIPES, display
from tunnelauth.settings import Settings
from tunnelauth.status import ExitStatus

_T = TypeVar("_T")


def run_login(name: str, options: dict[str, Any], run_command: Sequence[str]) -> None:
    """Log in on one host, or on each host of a fleet; exit with the fleet's status."""
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


def run_doctor(name: str, options: dict[str, Any]) -> None:
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


def show_status(name: str, options: dict[str, Any]) -> None:
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


def show_config(name: str, options: dict[str, Any]) -> None:
    """Print the effective settings for HOST and where each one came from."""
    _no_login_flags("config show", options)
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


def list_providers(as_json: bool) -> None:
    """Print the providers and recipes, and the remote command each runs (or one JSON document)."""
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
