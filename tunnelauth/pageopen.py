"""Opening a login page for the runner: the remote-port check, the browser, its arrival.

The decider says which page to open and whether the remote must be seen listening first;
this module does it and watches whether a browser really fetched it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from tunnelauth.browser import BrowserLauncher
from tunnelauth.errors import TunnelauthError
from tunnelauth.flowstate import OpenPage
from tunnelauth.launchpad import LaunchPad
from tunnelauth.report import Reporter
from tunnelauth.settings import Settings
from tunnelauth.transports.base import Transport

# A browser that has not asked for the page by then did not open (a stale DISPLAY, a browser
# that silently did nothing): the URL is printed for the user instead of a silent wait.
BROWSER_ARRIVAL = 10.0
# Before the browser is sent to a loopback callback, the remote's socket table must show a
# listener on that port: the CLI may bind a moment after it printed the port, so the check is
# repeated, waiting PORT_CHECK_FIRST_WAIT and then twice as long each time (about 3 s in all).
PORT_CHECKS = 6
PORT_CHECK_FIRST_WAIT = 0.1
PORT_CHECK_DEADLINE = 10.0  # one check's remote command


class PageOpener:
    """Opens pages the decider chose; background checks end with ``stack``."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        reporter: Reporter,
        browser: BrowserLauncher,
        stack: AsyncExitStack,
        watch: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.reporter = reporter
        self.browser = browser
        self.stack = stack
        self.watch = watch

    async def open(self, page: OpenPage) -> None:
        """Open ``page`` (after the remote-port check it asks for, if any)."""
        if page.check_port is not None and not await self._remote_listens(page.check_port):
            host = self.settings.target.host
            self.reporter.warn(
                f"nothing listens on port {page.check_port} on {host}: the CLI may have moved "
                "to another port; not opening the browser on a page that would fail"
            )
            self.reporter.open_url(page.url, page.host, "printed", unusual_host=False)
            return
        if not page.safe:
            self.reporter.warn(f"not opening an unsafe URL from the remote: {page.url[:200]!r}")
            return
        url, host = page.url, page.host
        pad = None
        if self.browser.uses_system_browser():
            # The browser first fetches a local redirect to the page: its arrival is then known.
            pad = await LaunchPad.start(url)
            self.stack.push_async_callback(pad.close)
        how = await self.browser.open(pad.url if pad is not None else url)
        self.reporter.open_url(url, host, how, unusual_host=page.unusual)
        if how == "system" and pad is not None:
            self.watch(self._browser_arrival(pad, url, host))
        elif how == "command":
            self.watch(self._browser_command_result(url, host))

    async def _remote_listens(self, port: int) -> bool:
        """Whether something listens on the remote callback port (True if it cannot be told).

        Only the remote's socket table is read: no request ever goes to the port.
        """
        from tunnelauth.remotechecks import remote_port_state

        # Every user may read the socket table: no sudo for --as (a password it cannot ask).
        settings = self.settings._replace(run_as=None, hermes_home=None)
        wait = PORT_CHECK_FIRST_WAIT
        for attempt in range(PORT_CHECKS):
            try:
                state = await remote_port_state(
                    settings, self.transport, port, timeout=PORT_CHECK_DEADLINE
                )
            except (TunnelauthError, OSError, asyncio.TimeoutError) as exc:
                self.reporter.debug(f"could not check the remote port {port}: {exc}")
                return True
            if state != "free":
                if state == "unknown":
                    self.reporter.debug(f"cannot tell whether the remote listens on {port}")
                return True
            if attempt + 1 < PORT_CHECKS:
                await asyncio.sleep(wait)
                wait *= 2
        return False

    async def _browser_arrival(self, pad: LaunchPad, url: str, host: str) -> None:
        """If no browser fetched the page in time, print the URL instead of waiting silently."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pad.arrived.wait(), BROWSER_ARRIVAL)
            self.reporter.debug("the browser has fetched the login page")
            return
        self.reporter.warn(
            f"no browser has opened the login page after {BROWSER_ARRIVAL:g} s "
            "(no display, or the browser did nothing)"
        )
        self.reporter.open_url(url, host, "printed", unusual_host=False)

    async def _browser_command_result(self, url: str, host: str) -> None:
        """A --browser-cmd that fails: say so and print the URL."""
        process = self.browser.last_command()
        if process is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            code = await asyncio.wait_for(process.wait(), BROWSER_ARRIVAL)
            if code != 0:
                self.reporter.warn(f"the browser command failed (exit status {code})")
                self.reporter.open_url(url, host, "printed", unusual_host=False)
