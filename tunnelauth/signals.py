"""The one signal runner: a coroutine in a fresh event loop that SIGINT, SIGTERM and SIGHUP end.

A signal cancels the running task; the task closes what it opened (in reverse order) and the
runner raises ``Interrupted`` naming the signal. Used by the login, the fleet and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tunnelauth.errors import Interrupted

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Teardown = Callable[[], None]
"""Called by the task when its ordered teardown starts: later signals no longer cancel it."""


def run_with_signals(
    main: Callable[[Teardown], Awaitable[T]],
    *,
    closed: str = "everything was closed",
    again_until_teardown: bool = False,
) -> T:
    """Run ``main(teardown_started)``; a signal cancels it and raises ``Interrupted``.

    By default the first signal cancels and later ones are ignored, so the teardown it starts
    is never cut short. With ``again_until_teardown``, every signal cancels again until
    ``main`` calls ``teardown_started()``: a cancellation can be lost in a race inside asyncio
    (``wait_for`` before Python 3.12), and a second Ctrl-C must still end the run.
    """

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        received: list[int] = []
        in_teardown: list[bool] = []

        def teardown_started() -> None:
            in_teardown.append(True)

        def on_signal(signum: int) -> None:
            if not received:
                received.append(signum)
            elif not again_until_teardown:
                return
            if not in_teardown and not task.done():
                task.cancel()

        for signum in SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await main(teardown_started)
        except asyncio.CancelledError:
            if received:
                name = signal.Signals(received[0]).name
                raise Interrupted(f"interrupted by {name}; {closed}") from None
            raise

    try:
        return asyncio.run(guarded())
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {closed}") from None
