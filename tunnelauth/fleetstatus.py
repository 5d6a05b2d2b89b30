"""``tunnelauth status HOST…`` across a fleet: one row per host, failures kept in their row.

Hosts are asked concurrently in batch mode (no prompt can interleave), one after another
otherwise (a password or host-key question belongs to one host at a time). A dead host, a
refused key or a missing hermes is that host's result; it never stops the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from tunnelauth.environment import Environment
from tunnelauth.errors import TunnelauthError
from tunnelauth.hostset import FleetHost
from tunnelauth.loginstatus import LoginStatus, ask
from tunnelauth.sanitize import untrusted
from tunnelauth.settings import Settings
from tunnelauth.status import ExitStatus

if TYPE_CHECKING:
    from tunnelauth.hoppool import HopPool

BATCH_JOBS = 8  # hosts asked at once in batch mode


class AskStatus(Protocol):
    """How one host is asked (``loginstatus.ask``: over SSH)."""

    async def __call__(
        self, settings: Settings, env: Environment, *, hops: HopPool | None = None
    ) -> LoginStatus: ...


class HostResult(NamedTuple):
    """One host's answer, or why there is none."""

    host: FleetHost
    status: LoginStatus | None
    exit_status: ExitStatus
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        """One ``status --json`` line: the host's document, or its error."""
        if self.status is not None:
            return {**self.status.to_json(), "host": self.host.name}
        return {
            "v": 1,
            "kind": "status",
            "host": self.host.name,
            "error": self.error,
            "exit_status": int(self.exit_status),
        }


def exit_status(results: Sequence[HostResult]) -> ExitStatus:
    """OK when every host answered, else the first failed host's status (in the order named)."""
    for result in results:
        if result.exit_status != ExitStatus.OK:
            return result.exit_status
    return ExitStatus.OK


async def ask_host(
    host: FleetHost,
    build: Callable[[FleetHost], Settings],
    env: Environment,
    hops: HopPool | None = None,
    ask: AskStatus = ask,
) -> HostResult:
    """One host's status; every expected failure becomes its result (``env``: the process's,
    read once for the fleet; ``hops``: the fleet's shared jump chains)."""
    try:
        settings = build(host)
        return HostResult(host, await ask(settings, env, hops=hops), ExitStatus.OK)
    except TunnelauthError as exc:
        message = exc.message + (f" ({exc.hint})" if exc.hint else "")
        return HostResult(host, None, exc.status, message)
    except asyncio.TimeoutError:
        return HostResult(host, None, ExitStatus.TIMED_OUT, "status did not finish in time")
    except OSError as exc:
        return HostResult(host, None, ExitStatus.SSH_FAILED, untrusted(str(exc), limit=300))


async def ask_fleet(
    hosts: Sequence[FleetHost],
    build: Callable[[FleetHost], Settings],
    *,
    env: Environment,
    jobs: int,
    on_result: Callable[[HostResult], None] | None = None,
    hops: HopPool | None = None,
    ask: AskStatus = ask,
) -> list[HostResult]:
    """Every host's status, in the order named; at most ``jobs`` connections at once
    (``ask``: how each host is asked)."""
    slots = asyncio.Semaphore(max(1, jobs))

    async def one(host: FleetHost) -> HostResult:
        async with slots:
            result = await ask_host(host, build, env, hops, ask)
        if on_result is not None:
            on_result(result)
        return result

    tasks = [asyncio.ensure_future(one(host)) for host in hosts]
    try:
        # return_exceptions: cancelled (Ctrl-C), this waits until every host's connection is
        # closed, instead of returning at the first and cancelling the others mid-close.
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            if not task.done():  # only if this coroutine itself failed: gather never ran
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result  # ask_host keeps every expected failure in its HostResult
    return [r for r in results if isinstance(r, HostResult)]
