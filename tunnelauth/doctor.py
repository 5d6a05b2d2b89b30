"""``tunnelauth doctor``: can a login work from here to that host? Checks, each with a fix.

It connects the way a login would (same transport, same jump chain), then asks the remote a
few short questions over that one connection (``remotechecks``), and checks this machine
(``laptopchecks``); the rows and the verdict are ``doctorreport``'s.
"""

from __future__ import annotations

import asyncio
import time

from tunnelauth.doctorreport import FAIL, OK, SKIP, WARN, Check, Report
from tunnelauth.environment import Environment
from tunnelauth.errors import HostKeyError, TunnelauthError
from tunnelauth.laptopchecks import check_browser, check_ports
from tunnelauth.remotechecks import (
    EXEC_DEADLINE,
    PROBE_DEADLINE,
    check_forwarding,
    check_hermes,
    check_home,
)
from tunnelauth.settings import Settings
from tunnelauth.status import ExitStatus
from tunnelauth.transports.base import Transport


def check_master(transport: Transport) -> Check:
    """Whether an existing ControlMaster was reused (OpenSSH only)."""
    if transport.name != "openssh":
        return Check("controlmaster", SKIP, f"backend {transport.name} keeps its own connection")
    path = transport.config.get("controlpath", "none")
    if transport.reused_master:
        return Check("controlmaster", OK, f"reusing your live master {path}: no new login")
    if path and path.lower() != "none":
        return Check(
            "controlmaster", OK, f"ControlPath {path} configured but no live master: private one"
        )
    return Check("controlmaster", OK, "none configured: each run opens a private master")


def _ssh_detail(settings: Settings, transport: Transport, seconds: float) -> str:
    jump = ",".join(settings.target.jump) or transport.config.get("proxyjump", "none")
    via = f" via {jump}" if jump and jump.lower() != "none" else ""
    return f"authenticated to {settings.target.host}{via} ({transport.name}, {seconds:.2f} s)"


def _not_reached() -> list[Check]:
    """The remote checks, skipped: the table keeps the same rows whatever failed."""
    names = ("controlmaster", "forwarding", "hermes", "hermes home")
    return [Check(name, SKIP, "no connection") for name in names]


async def remote_checks(settings: Settings, transport: Transport, env: Environment) -> list[Check]:
    """Connect (as the command found the process: ``env``), then ask the remote; a failed
    connection skips what needs it."""
    started = time.monotonic()
    try:
        await transport.connect(env=env)
    except HostKeyError as exc:
        return [
            Check("ssh", FAIL, exc.message, exc.hint or "", ExitStatus.HOST_KEY),
            Check("host key", FAIL, exc.message, exc.hint or "", ExitStatus.HOST_KEY),
            *_not_reached(),
        ]
    except TunnelauthError as exc:
        tail = getattr(exc, "stderr_tail", "").strip().splitlines()[-1:]
        detail = exc.message
        if tail and tail[0].removeprefix("ssh: ") not in detail:
            detail += f" [{tail[0]}]"
        fix = exc.hint or "check `ssh HOST true` works with the same options"
        return [
            Check("ssh", FAIL, detail, fix, exc.status),
            Check("host key", SKIP, "not reached"),
            *_not_reached(),
        ]
    checks = [
        Check("ssh", OK, _ssh_detail(settings, transport, time.monotonic() - started)),
        Check("host key", OK, "known and verified (StrictHostKeyChecking as configured)"),
        check_master(transport),
    ]
    for probe in (check_forwarding, check_hermes, check_home):
        try:
            checks.append(await probe(settings, transport))
        except (TunnelauthError, OSError, asyncio.TimeoutError) as exc:
            name = probe.__name__.removeprefix("check_")
            checks.append(Check(name, WARN, f"could not check: {exc!s}"[:300]))
    return checks


async def diagnose(settings: Settings, transport: Transport, env: Environment) -> Report:
    """Run every check; the transport is closed afterwards whatever happened."""
    report = Report(settings.target.host)
    try:
        report.checks += await remote_checks(settings, transport, env)
    finally:
        await transport.close()
    report.checks += [check_ports(), check_browser(settings, env.variables)]
    return report


def run(settings: Settings, env: Environment) -> Report:
    """Diagnose in a fresh event loop, within an overall deadline (``env``: the process's, as
    the command read it)."""
    from tunnelauth.transports import resolve

    transport = resolve.make(settings)
    deadline = settings.connect_timeout + 4 * EXEC_DEADLINE + PROBE_DEADLINE

    async def main() -> Report:
        return await asyncio.wait_for(diagnose(settings, transport, env), deadline)

    return asyncio.run(main())
