"""The one signal runner: a signal cancels the run, the teardown finishes, Interrupted names it."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tunnelauth.errors import Interrupted
from tunnelauth.signals import Teardown, run_with_signals

DEADLINE = 30.0


async def _deliver(signum: int) -> None:
    """Send ``signum`` to this process and let the loop run its handler (no clock involved)."""
    os.kill(os.getpid(), signum)
    for _ in range(5):  # read the wake-up pipe, schedule the handler, run it
        await asyncio.sleep(0)


async def _forever() -> None:
    """Wait for what never comes; a run the signal failed to end fails here, not hangs."""
    await asyncio.wait_for(asyncio.Event().wait(), DEADLINE)


def test_a_signal_cancels_and_is_named() -> None:
    closed: list[str] = []

    async def main(_teardown_started: Teardown) -> None:
        try:
            await _deliver(signal.SIGTERM)
            await _forever()  # only the signal ends this
        finally:
            closed.append("listener")

    with pytest.raises(Interrupted, match="interrupted by SIGTERM; every host was closed"):
        run_with_signals(main, closed="every host was closed")
    assert closed == ["listener"]


def test_a_second_signal_does_not_cut_the_teardown_short() -> None:
    steps: list[str] = []

    async def main(_teardown_started: Teardown) -> None:
        try:
            await _deliver(signal.SIGHUP)
            await _forever()
        except asyncio.CancelledError:
            await _deliver(signal.SIGHUP)  # the user presses Ctrl-C again during the teardown
            steps.append("closed in order")
            raise

    with pytest.raises(Interrupted, match="SIGHUP"):
        run_with_signals(main)
    assert steps == ["closed in order"]


def test_again_until_teardown_cancels_a_run_that_lost_the_first_cancel() -> None:
    lost: list[bool] = []

    async def main(teardown_started: Teardown) -> None:
        try:
            await _deliver(signal.SIGTERM)
            await _forever()
        except asyncio.CancelledError:
            lost.append(True)  # as if a race inside asyncio swallowed it
        try:
            await _deliver(signal.SIGTERM)
            await _forever()
        except asyncio.CancelledError:
            teardown_started()
            await _deliver(signal.SIGTERM)  # ignored: the ordered teardown runs to its end
            raise

    with pytest.raises(Interrupted, match="SIGTERM"):
        run_with_signals(main, again_until_teardown=True)
    assert lost == [True]


def test_a_run_without_signals_returns_its_value() -> None:
    async def main(_teardown_started: Teardown) -> int:
        return 7

    assert run_with_signals(main) == 7
