"""Fleet status without a network: per-host failures stay in their row; the exit status."""

from __future__ import annotations

import asyncio

import pytest

from tunnelauth.environment import Environment
from tunnelauth.errors import CommandNotFoundError, UsageError
from tunnelauth.fleetstatus import HostResult, ask_fleet, exit_status
from tunnelauth.hostset import FleetHost
from tunnelauth.loginstatus import LoginStatus
from tunnelauth.settings import Settings, SSHTarget
from tunnelauth.status import ExitStatus


def refuse(host: FleetHost) -> Settings:
    if host.name == "bad":
        raise UsageError("config: unknown key 'x'", hint="known keys: jump")
    raise CommandNotFoundError(f"hermes was not found on {host.name}")


def test_each_failure_is_its_hosts_result_in_the_order_named() -> None:
    hosts = [FleetHost("a", "a"), FleetHost("bad", "bad"), FleetHost("c", "c")]
    seen: list[str] = []
    results = asyncio.run(
        ask_fleet(
            hosts, refuse, env=Environment(), jobs=2, on_result=lambda r: seen.append(r.host.name)
        )
    )
    assert [r.host.name for r in results] == ["a", "bad", "c"]
    assert sorted(seen) == ["a", "bad", "c"]
    assert results[1].exit_status == ExitStatus.USAGE
    assert results[1].error == "config: unknown key 'x' (known keys: jump)"
    assert results[0].to_json() == {
        "v": 1,
        "kind": "status",
        "host": "a",
        "error": "hermes was not found on a",
        "exit_status": int(ExitStatus.COMMAND_NOT_FOUND),
    }
    assert exit_status(results) == ExitStatus.COMMAND_NOT_FOUND  # the first failed host's


def test_all_answered_is_ok_and_the_json_names_the_fleet_host() -> None:
    host = FleetHost("web1", "10.0.0.5")
    result = HostResult(host, LoginStatus("10.0.0.5", [], []), ExitStatus.OK)
    assert exit_status([result]) == ExitStatus.OK
    assert result.to_json()["host"] == "web1"
    assert exit_status([]) == ExitStatus.OK


def test_cancelling_waits_for_every_hosts_connection_to_close() -> None:
    """One host done closing must not cut the others' closing short."""
    hosts = [FleetHost(n, n) for n in ("a", "b", "c", "d")]
    waiting: set[str] = set()
    all_waiting = asyncio.Event()
    closed: list[str] = []
    fleet_env = Environment(variables={"SSH_AUTH_SOCK": "/run/agent"})
    given: list[Environment] = []

    async def ask(settings: Settings, env: Environment, *, hops: object = None) -> LoginStatus:
        given.append(env)
        name = settings.target.host
        waiting.add(name)
        if len(waiting) == len(hosts):
            all_waiting.set()
        try:
            await asyncio.sleep(3600)
        finally:
            for _ in range(ord(name) - ord("a")):  # host a closes at once, d takes longest
                await asyncio.sleep(0)
            closed.append(name)
        raise AssertionError("never answers")

    def build(host: FleetHost) -> Settings:
        return Settings(target=SSHTarget(host=host.host), program="hermes", args=())

    async def main() -> None:
        task = asyncio.ensure_future(ask_fleet(hosts, build, env=fleet_env, jobs=4, ask=ask))
        await asyncio.wait_for(all_waiting.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert closed == ["a", "b", "c", "d"]
    assert len(given) == 4 and all(env is fleet_env for env in given), "one for the fleet"
