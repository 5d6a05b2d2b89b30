"""One login on each host of a fleet, in one process: per-host results, one exit status.

Each host runs the same login the single-host command runs (``flow.login``), with its own
Reporter and Settings. Failures stay per host: a dead host, a refused key or a failed login is
that host's result and the others go on. Ctrl-C (SIGINT, SIGTERM, SIGHUP) cancels every
host's login; each tears down in order before the run ends (130).

Concurrency: logins whose usual flow is a device code run at once (they need no laptop
port); the others one after another, since a person completes browser logins in turn. Two
logins that do want the same laptop port wait for each other through the port lock anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from tunnelauth.errors import TunnelauthError
from tunnelauth.hostset import FleetHost
from tunnelauth.providers import PROVIDERS
from tunnelauth.report import Reporter
from tunnelauth.settings import Settings
from tunnelauth.signals import run_with_signals
from tunnelauth.status import ExitStatus

MAX_JOBS = 10  # logins at once; each holds an SSH connection and a remote process


class Outcome(NamedTuple):
    """How one host's login ended."""

    host: str
    exit_status: ExitStatus
    message: str
    login: str | None  # the flow seen on success (callback, device, paste, none)
    elapsed: float

    def to_json(self) -> dict[str, Any]:
        """One entry of the ``fleet_done`` event."""
        return {
            "host": self.host,
            "exit_status": int(self.exit_status),
            "message": self.message,
            "login": self.login,
            "elapsed": round(self.elapsed, 3),
        }


def default_jobs(command: str, count: int) -> int:
    """Logins at once: all (bounded) for device-code providers, else one after another."""
    spec = PROVIDERS.get(command)
    if spec is not None and spec.flow.startswith("device code"):
        return max(1, min(count, MAX_JOBS))
    return 1


def exit_status(outcomes: Sequence[Outcome]) -> ExitStatus:
    """OK when every host logged in, else the first failed host's status (in the order named)."""
    for outcome in outcomes:
        if outcome.exit_status != ExitStatus.OK:
            return outcome.exit_status
    return ExitStatus.OK


# One host's login: Settings and its Reporter in, success message and flow out.
LoginOne = Callable[[Settings, Reporter], Awaitable[tuple[str, str]]]


async def login_all(
    hosts: Sequence[FleetHost],
    build: Callable[[FleetHost], Settings],
    reporter_for: Callable[[FleetHost], Reporter],
    login_one: LoginOne,
    *,
    jobs: int,
) -> list[Outcome]:
    """Every host's login, at most ``jobs`` at once; results in the order named."""
    slots = asyncio.Semaphore(max(1, jobs))

    async def one(host: FleetHost) -> Outcome:
        async with slots:
            return await _login_host(host, build, reporter_for(host), login_one)

    tasks = [asyncio.ensure_future(one(host)) for host in hosts]
    try:
        # return_exceptions: cancelled, this waits until every login has torn down. Without
        # it, the first host to finish its teardown would end the wait, and cancelling the
        # others again would cut their teardown short (a master or temp dir left behind).
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            if not task.done():  # only if this coroutine itself failed: gather never ran
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result  # _login_host keeps every expected failure in its Outcome
    return [r for r in results if isinstance(r, Outcome)]


async def _login_host(
    host: FleetHost,
    build: Callable[[FleetHost], Settings],
    reporter: Reporter,
    login_one: LoginOne,
) -> Outcome:
    started = time.monotonic()
    try:
        settings = build(host)
        for notice in settings.notices:
            reporter.warn(notice)
        message, flow = await login_one(settings, reporter)
    except asyncio.CancelledError:
        reporter.finish(False, "interrupted; everything was closed", None, [], exit_status=130)
        raise
    except TunnelauthError as exc:
        lines = list(exc.last_lines)
        reporter.finish(False, exc.message, exc.hint, lines, exit_status=int(exc.status))
        return Outcome(host.name, exc.status, exc.message, None, time.monotonic() - started)
    except Exception as exc:  # one host's bug must not end the others' logins
        message = f"internal error: {exc!r}"
        reporter.finish(False, message, None, [], exit_status=int(ExitStatus.ERROR))
        return Outcome(host.name, ExitStatus.ERROR, message, None, time.monotonic() - started)
    reporter.finish(True, message, None, [], exit_status=0, login=flow)
    return Outcome(host.name, ExitStatus.OK, message, flow, time.monotonic() - started)


def run(main: Callable[[], Awaitable[list[Outcome]]]) -> list[Outcome]:
    """Run the fleet in a fresh event loop; SIGINT, SIGTERM and SIGHUP cancel every login."""
    return run_with_signals(lambda _teardown_started: main(), closed="every host was closed")
