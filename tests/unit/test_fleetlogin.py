"""Fleet logins without a network: order, concurrency, per-host failures, the board's lines."""

from __future__ import annotations

import asyncio
import io
import sys

import pytest
from rich.console import Console

from tunnelauth.errors import SSHError, UsageError
from tunnelauth.fleetboard import FleetBoard, HostReporter
from tunnelauth.fleetlogin import Outcome, default_jobs, exit_status, login_all
from tunnelauth.hostset import FleetHost
from tunnelauth.report import Reporter, Stage
from tunnelauth.settings import Settings, SSHTarget
from tunnelauth.status import ExitStatus

HOSTS = [FleetHost(n, n) for n in ("a", "b", "c", "d")]


def board_and_output() -> tuple[FleetBoard, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False, color_system=None)
    return FleetBoard([h.name for h in HOSTS], console=console), out


class Fake:
    """Builds stand-in Settings and logs in: fails on named hosts, records concurrency."""

    def __init__(self, failing: dict[str, Exception]) -> None:
        self.failing = failing
        self.running = 0
        self.most = 0
        self.started: list[str] = []

    def build(self, host: FleetHost) -> Settings:
        if host.name == "bad-config":
            raise UsageError("config: unknown key 'x'")
        return Settings(target=SSHTarget(host=host.host), program="hermes", args=())

    async def login(self, settings: Settings, reporter: Reporter) -> tuple[str, str]:
        name = settings.target.host
        self.started.append(name)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            reporter.stage(Stage.CONNECTING, name)
            await asyncio.sleep(0)
            if name in self.failing:
                raise self.failing[name]
            reporter.device_code("https://idp.test/device", f"CODE-{name.upper()}")
            return "logged in", "device"
        finally:
            self.running -= 1


def run_fleet(fake: Fake, jobs: int, hosts: list[FleetHost] = HOSTS) -> tuple[list[Outcome], str]:
    board, out = board_and_output()
    outcomes = asyncio.run(
        login_all(hosts, fake.build, lambda h: HostReporter(board, h.name), fake.login, jobs=jobs)
    )
    board.close()
    return outcomes, out.getvalue()


def test_a_failed_host_is_its_own_result_and_the_others_log_in() -> None:
    fake = Fake({"b": SSHError("cannot connect to b: No route to host")})
    outcomes, shown = run_fleet(fake, jobs=4)
    assert [o.host for o in outcomes] == ["a", "b", "c", "d"]
    assert [o.exit_status for o in outcomes] == [0, ExitStatus.SSH_FAILED, 0, 0]
    assert exit_status(outcomes) == ExitStatus.SSH_FAILED
    assert "tunnelauth: b: ✗ cannot connect to b: No route to host" in shown
    assert "tunnelauth: c: enter the code CODE-C at https://idp.test/device" in shown
    # The final table has every host's row and result.
    assert "✗ (exit 3) cannot connect to b" in shown and shown.count("✓ logged in") >= 3


def test_jobs_bounds_the_logins_at_once() -> None:
    fake = Fake({})
    run_fleet(fake, jobs=1)
    assert fake.most == 1 and fake.started == ["a", "b", "c", "d"]
    fake = Fake({})
    run_fleet(fake, jobs=3)
    assert fake.most == 3


def test_a_bad_config_for_one_host_and_a_bug_in_another_stay_in_their_rows() -> None:
    hosts = [FleetHost(n, n) for n in ("bad-config", "buggy", "ok")]
    fake = Fake({"buggy": RuntimeError("boom")})
    board, _ = board_and_output()
    board.rows = {h.name: type(board.rows["a"])(h.name) for h in hosts}
    outcomes = asyncio.run(
        login_all(hosts, fake.build, lambda h: HostReporter(board, h.name), fake.login, jobs=2)
    )
    assert [o.exit_status for o in outcomes] == [ExitStatus.USAGE, ExitStatus.ERROR, 0]
    assert outcomes[1].message == "internal error: RuntimeError('boom')"


def test_cancelling_ends_every_login_and_marks_the_rows() -> None:
    started = asyncio.Event()

    async def hang(settings: Settings, reporter: Reporter) -> tuple[str, str]:
        started.set()
        await asyncio.sleep(3600)
        return "never", "none"

    board, out = board_and_output()

    async def main() -> None:
        task = asyncio.ensure_future(
            login_all(HOSTS, Fake({}).build, lambda h: HostReporter(board, h.name), hang, jobs=4)
        )
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert out.getvalue().count("interrupted; everything was closed") == 4


def test_default_jobs_by_the_providers_usual_flow() -> None:
    assert default_jobs("xai", 20) == 10  # device code: side by side, bounded
    assert default_jobs("xai", 3) == 3
    assert default_jobs("spotify", 5) == 1  # a browser login at a time
    assert default_jobs("run", 5) == 1
    assert exit_status([]) == ExitStatus.OK


def test_remote_text_on_the_board_is_shown_literally() -> None:
    board, out = board_and_output()
    reporter = HostReporter(board, "a")
    reporter.warn("evil \x1b]52;c;aGk=\x07 [bold]x[/bold]")
    assert "\x1b" not in out.getvalue() and "[bold]x[/bold]" in out.getvalue()


def test_the_live_table_leaves_stdout_to_the_json_events() -> None:
    before = sys.stdout
    console = Console(file=io.StringIO(), width=200, force_terminal=True)
    board = FleetBoard(["a"], console=console)
    try:
        assert board._live is not None, "a terminal gets the live table"
        assert sys.stdout is before, "stdout (--json events) must not be drawn into the table"
    finally:
        board.close()


def test_cancelling_waits_for_every_hosts_teardown_to_finish() -> None:
    """One host done tearing down must not cut the others' teardown short."""
    waiting: set[str] = set()
    all_waiting = asyncio.Event()
    closed: list[str] = []

    async def login_with_teardown(settings: Settings, reporter: Reporter) -> tuple[str, str]:
        name = settings.target.host
        waiting.add(name)
        if len(waiting) == len(HOSTS):
            all_waiting.set()
        try:
            await asyncio.sleep(3600)
        finally:
            for _ in range(ord(name) - ord("a")):  # host a closes at once, d takes longest
                await asyncio.sleep(0)
            closed.append(name)
        return "never", "none"

    board, _ = board_and_output()

    async def main() -> None:
        task = asyncio.ensure_future(
            login_all(
                HOSTS,
                Fake({}).build,
                lambda h: HostReporter(board, h.name),
                login_with_teardown,
                jobs=4,
            )
        )
        await asyncio.wait_for(all_waiting.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert closed == ["a", "b", "c", "d"]
