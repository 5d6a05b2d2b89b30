"""The edge of fleet commands: which hosts the command line names, and ``status`` across them.

Reads the process's environment once (``Environment.current``) and passes it to every host;
reads the config file, the ssh config's Host names and an inventory; builds each host's
Settings (a flag the user typed wins over an inventory's value); owns the run's shared jump
hosts (``hoppool.HopPool``: opened up front, closed after every host); prints the fleet table
or one JSON document per host.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunnelauth.environment import Environment
from tunnelauth.errors import TunnelauthError, UsageError
from tunnelauth.hostset import FleetHost, expand, groups_of
from tunnelauth.status import ExitStatus

if TYPE_CHECKING:
    from tunnelauth.hoppool import HopPool
    from tunnelauth.settings import Settings
    from tunnelauth.transports.headstart import HeadStart


def fleet_hosts(options: dict[str, Any], env: Environment) -> list[FleetHost]:
    """The hosts named by words, patterns, groups and ``--inventory``, each once, in order."""
    from tunnelauth.completion import config_hosts
    from tunnelauth.settings import config_path, load_config

    path = config_path(options.get("config"), env.variables)
    config = load_config(path)
    groups = groups_of(config, str(path))
    ssh_config = options.get("ssh_config")
    ssh_dir = Path("~/.ssh").expanduser()
    ssh_file = Path(str(ssh_config)).expanduser() if ssh_config else ssh_dir / "config"
    aliases = list(config_hosts(ssh_file, ssh_dir))
    sections = config.get("hosts", {})
    if isinstance(sections, dict):
        aliases += [str(name) for name in sections]
    hosts = expand(options.get("fleet_words") or [], aliases=aliases, groups=groups)
    if options.get("inventory"):
        from tunnelauth import inventory

        limit = options.get("limit")
        known = {h.name for h in hosts}
        found = inventory.read(Path(str(options["inventory"])).expanduser(), limit)
        hosts += [h for h in found if h.name not in known]
    if not hosts:
        raise UsageError("no host given", hint="name hosts, patterns, @GROUP or --inventory FILE")
    return hosts


def host_options(options: dict[str, Any], host: FleetHost) -> dict[str, Any]:
    """The options for one host: its own values, except where the user typed a flag."""
    fleet_only = ("fleet_words", "inventory", "limit", "jobs")
    merged = {k: v for k, v in options.items() if k not in fleet_only}
    for key, value in host.options().items():
        if key == "host" or merged.get(key) in (None, [], ()):
            merged[key] = value
    return merged


async def open_shared_hops(
    pool: HopPool, hosts: Sequence[FleetHost], build: Any, *, verbosity: int, env: Environment
) -> None:
    """On a terminal, open each host's jump chain once before any login: ssh's questions (a
    bastion's one-time code) are asked here, once for the fleet, while nothing else is on the
    terminal. Logins side by side run as in batch mode and could not ask them.

    ``build`` gives a host's Settings as the user runs them. A batch run asks nothing: its
    chains are opened by the first host that needs each (the others wait for that one). A
    chain that fails is not reported here: each host behind it reports it in its row.
    ``env``: the process's, as the fleet command read it (stdin a terminal or not).
    """
    from tunnelauth.transports import resolve

    if not env.stdin_tty:
        return
    reporter: Any = None
    terminal: Any = None
    try:
        for host in hosts:
            try:
                settings: Settings = build(host)
                if settings.batch:
                    continue
                transport = resolve.make(settings, hops=pool)
            except TunnelauthError:
                continue  # the host's own run reports it
            if terminal is None:
                from tunnelauth.flow import ssh_asker
                from tunnelauth.render import ConsoleReporter
                from tunnelauth.report import Stage
                from tunnelauth.terminal import Terminal

                terminal = Terminal.open(env)
                reporter = ConsoleReporter(verbosity=verbosity)
                reporter.stage(Stage.CONNECTING, "jump hosts")
            asker = ssh_asker(reporter, terminal) if terminal is not None else None
            try:
                await transport.open_hops(asker=asker, env=env)
            except (TunnelauthError, OSError, asyncio.TimeoutError):
                pass  # every host behind the chain gets this failure in its row
            finally:
                await transport.close()
    finally:
        if terminal is not None:
            terminal.restore()
        if reporter is not None:
            reporter.close()


def status(options: dict[str, Any]) -> ExitStatus:
    """``status`` across the fleet: the table (or JSON lines) on stdout; the exit status."""
    from tunnelauth.cmdline import build_settings
    from tunnelauth.completion import remember_mcp_servers
    from tunnelauth.fleetstatus import BATCH_JOBS, HostResult, ask_fleet, exit_status
    from tunnelauth.options import resolve_batch

    env = Environment.current()  # once for the fleet: every host's run gets this one
    hosts = fleet_hosts(options, env)
    batch = resolve_batch(bool(options.get("batch")), env.variables, env.stdin_tty).value
    as_json = bool(options.get("json"))

    def build(host: FleetHost) -> Any:
        return build_settings("status", host_options(options, host), environment=env)

    def progress(result: HostResult) -> None:
        if not as_json and options.get("verbose"):
            word = "answered" if result.status is not None else "failed"
            sys.stderr.write(f"tunnelauth: {result.host.name}: {word}\n")

    jobs = int(options.get("jobs") or (BATCH_JOBS if batch else 1))
    verbosity = -1 if options.get("quiet") else int(options.get("verbose") or 0)

    async def main() -> list[HostResult]:
        from tunnelauth.hoppool import HopPool

        # One connection per jump chain for the whole fleet; closed after every host.
        async with HopPool() as pool:
            await open_shared_hops(pool, hosts, build, verbosity=verbosity, env=env)
            return await ask_fleet(hosts, build, env=env, jobs=jobs, on_result=progress, hops=pool)

    results = asyncio.run(main())
    for result in results:
        if result.status is not None:
            remember_mcp_servers(result.host.name, result.status.mcp_servers)
    if as_json:
        for result in results:
            sys.stdout.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        from tunnelauth.render import print_fleet_status

        print_fleet_status(results)
    return exit_status(results)


def login(name: str, options: dict[str, Any], run_command: Sequence[str]) -> ExitStatus:
    """One login per host of the fleet; the table (or JSON events) and the exit status."""
    from tunnelauth import flow, postlogin
    from tunnelauth.cmdline import build_settings
    from tunnelauth.fleetboard import FleetBoard, HostReporter
    from tunnelauth.fleetlogin import Outcome, default_jobs, exit_status, login_all, run
    from tunnelauth.options import resolve_batch
    from tunnelauth.report import Reporter
    from tunnelauth.transports import resolve
    from tunnelauth.transports.base import Transport

    env = Environment.current()  # once for the fleet: every host's login gets this one
    hosts = fleet_hosts(options, env)
    batch = resolve_batch(bool(options.get("batch")), env.variables, env.stdin_tty).value
    jobs = int(options.get("jobs") or default_jobs(name, len(hosts)))
    # Logins side by side cannot share the terminal: they run as in batch mode.
    foreground = jobs == 1 and not batch
    verbosity = -1 if options.get("quiet") else int(options.get("verbose") or 0)
    boards: list[FleetBoard] = []
    order = {h.name: i for i, h in enumerate(hosts, 1)}

    def as_typed(host: FleetHost) -> Settings:
        return build_settings(
            name, host_options(options, host), run_command=run_command, environment=env
        )

    def build(host: FleetHost) -> Settings:
        settings = as_typed(host)
        return settings if foreground else settings._replace(batch=True)

    def reporter_for(host: FleetHost) -> Reporter:
        board = boards[0]
        human: Reporter = HostReporter(board, host.name)
        if foreground:
            from tunnelauth.render import ConsoleReporter

            board.line(host.name, f"login {order[host.name]} of {len(hosts)}", style="bold")
            human = ConsoleReporter(verbosity=verbosity)
        if not options.get("json"):
            return human
        from tunnelauth.jsonout import JsonReporter

        return JsonReporter(inner=human, host=host.name, fleet=True)

    async def main() -> list[Outcome]:
        from tunnelauth.hoppool import HopPool

        # One connection per jump chain for the whole fleet: opened up front (ssh's questions
        # asked once, on the terminal), closed after every host, whatever happened.
        async with HopPool() as pool:
            await open_shared_hops(pool, hosts, as_typed, verbosity=verbosity, env=env)
            boards.append(
                FleetBoard([h.name for h in hosts], verbosity=verbosity, live=not foreground)
            )

            def transport_for(settings: Settings, head_start: HeadStart | None) -> Transport:
                return resolve.make(settings, head_start, hops=pool)

            async def login_one(settings: Settings, reporter: Reporter) -> tuple[str, str]:
                return await login_host(settings, reporter, transport_for)

            return await login_all(hosts, build, reporter_for, login_one, jobs=jobs)

    async def login_host(
        settings: Settings,
        reporter: Reporter,
        transport_for: Callable[[Settings, HeadStart | None], Transport],
    ) -> tuple[str, str]:
        hook = postlogin.after_login if settings.verify or settings.replace else None
        try:
            success = await flow.login(
                settings, reporter, env=env, after_success=hook, transport_factory=transport_for
            )
        finally:
            if foreground:
                reporter.close()
        if settings.provider == "mcp" and settings.server:
            from tunnelauth.completion import remember_mcp_servers

            remember_mcp_servers(settings.target.host, [settings.server])
        return success.message, success.login.value

    try:
        outcomes = run(main)
    finally:
        for board in boards:
            board.close()
    board = boards[0]
    code = exit_status(outcomes)
    if options.get("json"):
        from tunnelauth.jsonout import JsonReporter

        summary = [o.to_json() for o in outcomes]
        JsonReporter().emit("fleet_done", exit_status=int(code), hosts=summary)
    done = sum(1 for o in outcomes if o.exit_status == ExitStatus.OK)
    if verbosity >= 0:
        board.line("fleet", f"{done} of {len(outcomes)} hosts logged in")
    return code
