"""A login from parsed options to its exit status, without typer.

The typer app (``cli``) calls ``login`` for every login command. The entry point calls
``run`` directly for a login command line that ``cmdline.parse_login`` reads as typer would,
so a login never waits for typer's import (~50 ms before the first SSH packet).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunnelauth.cmdline import build_settings
from tunnelauth.environment import Environment
from tunnelauth.errors import TunnelauthError, UsageError
from tunnelauth.exits import Shown, status_of
from tunnelauth.report import Reporter
from tunnelauth.status import ExitStatus
from tunnelauth.transports.headstart import HeadStart, prepare


def run(name: str, options: dict[str, Any], run_command: Sequence[str]) -> int:
    """Run one login and return its exit status (errors not yet shown are printed)."""
    try:
        login(name, options, run_command)
    except (TunnelauthError, Shown, KeyboardInterrupt) as exc:
        return status_of(exc)
    return int(ExitStatus.OK)


def login(
    name: str,
    options: dict[str, Any],
    run_command: Sequence[str],
    env: Environment | None = None,
) -> None:
    """Run one login; raises ``Shown`` (or a TunnelauthError not shown yet) on failure.

    ``env`` is the process's environment, read here once if the caller has not.
    """
    from tunnelauth.hostset import single_host
    from tunnelauth.terminal import modes_kept

    if not single_host(options):
        raise UsageError(f"{name}: several hosts need the fleet command line")
    env = Environment.current() if env is None else env
    # However the run ends (errors included), the terminal's modes are written back as found.
    with modes_kept(env):
        _login(name, options, run_command, env)


def head_start(
    name: str, options: dict[str, Any], run_command: Sequence[str], env: Environment
) -> HeadStart:
    """Start what the run's transport can use before the heavy imports (``prepare``).

    Settings or a backend that cannot be had give an empty head start: the same error comes
    again once the reporter exists, which reports it.
    """
    from tunnelauth.transports.choice import choose

    try:
        settings = build_settings(name, options, run_command=run_command, environment=env)
        return prepare(choose(settings), settings)
    except TunnelauthError:
        return HeadStart()


def _login(
    name: str, options: dict[str, Any], run_command: Sequence[str], env: Environment
) -> None:
    # e.g. the batch master authenticates meanwhile; what the transport did not adopt is
    # discarded when the login is over, however it ends.
    with head_start(name, options, run_command, env) as ahead:
        _login_with(name, options, run_command, ahead, env)


def _login_with(
    name: str,
    options: dict[str, Any],
    run_command: Sequence[str],
    ahead: HeadStart,
    env: Environment,
) -> None:
    from tunnelauth import flow, postlogin

    # Made before the settings, so a bad option or config still ends the JSON stream properly.
    reporter = reporter_for(options)
    try:
        settings = build_settings(name, options, run_command=run_command, environment=env)
        for notice in settings.notices:
            reporter.warn(notice)
        hook = postlogin.after_login if settings.verify or settings.replace else None
        success = flow.run(settings, reporter, head_start=ahead, after_success=hook, env=env)
    except TunnelauthError as exc:
        lines = list(exc.last_lines)
        reporter.finish(False, exc.message, exc.hint, lines, exit_status=int(exc.status))
        raise Shown(exc) from exc
    except Exception as exc:
        reporter.finish(False, f"internal error: {exc!r}", None, [], exit_status=ExitStatus.ERROR)
        raise
    finally:
        reporter.close()
    if settings.provider == "mcp" and settings.server:
        from tunnelauth.completion import remember_mcp_servers

        remember_mcp_servers(settings.target.host, [settings.server])
    reporter.finish(
        True, success.message, None, [], exit_status=ExitStatus.OK, login=success.login.value
    )


def reporter_for(options: dict[str, Any]) -> Reporter:
    """Human output on stderr; with --json, events on stdout as well."""
    from tunnelauth.render import ConsoleReporter

    verbosity = -1 if options.get("quiet") else int(options.get("verbose") or 0)
    human = ConsoleReporter(verbosity=verbosity)
    if not options.get("json"):
        return human
    from tunnelauth.jsonout import JsonReporter

    return JsonReporter(inner=human, host=str(options.get("host") or ""))
