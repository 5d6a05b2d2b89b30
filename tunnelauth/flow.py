"""Wiring for one login: connect, then hand the run to the runner, whose decider decides.

One run: connect once, start the remote login with a PTY (``runner``), turn its output into
events (``watch``), decide what each one means (``decide``), act on it, then tear everything
down in reverse order and return, or raise the error that names the exit status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING

from tunnelauth.browser import BrowserLauncher
from tunnelauth.environment import Environment
from tunnelauth.errors import TimedOutError
from tunnelauth.report import Reporter, Stage
from tunnelauth.runner import Runner
from tunnelauth.sanitize import redact, strip
from tunnelauth.settings import Settings
from tunnelauth.signals import run_with_signals
from tunnelauth.terminal import LineTooLong, Terminal
from tunnelauth.transports.base import Transport
from tunnelauth.verdict import Success

if TYPE_CHECKING:
    from tunnelauth.transports.headstart import HeadStart

SSH_PROMPT_DEADLINE = 300.0  # how long ssh's password or code question waits for the user
BROWSER_GRACE = 5.0  # how long a --browser-cmd may keep running after the login ended


def _ssh_asker(
    reporter: Reporter, terminal: Terminal
) -> Callable[[str, str], Awaitable[str | None]]:
    """Answers ssh's own questions (password, one-time code, passphrase) on the terminal."""

    async def ask(prompt: str, hint: str) -> str | None:
        text = strip(prompt).strip() or "ssh asks for input"
        if hint == "none":
            # A notice such as "Confirm user presence for key ...": nothing to type.
            reporter.warn(f"ssh: {text}")
            return ""
        secret = hint != "confirm"
        try:
            return await terminal.read_line(
                secret=secret,
                timeout=SSH_PROMPT_DEADLINE,
                prompt=lambda: reporter.prompt(text, secret, origin="ssh"),
            )
        except LineTooLong as exc:
            reporter.warn(f"not sent: the answer is too long ({exc})")
            return None
        except asyncio.TimeoutError:
            reporter.warn(f"no answer to ssh's question within {SSH_PROMPT_DEADLINE:g} s")
            return None
        finally:
            reporter.prompt_done()

    return ask


ssh_asker = _ssh_asker  # what fleet commands ask ssh's questions with, before their logins


# Work done on the same connection after a successful login (--verify, --replace).
AfterSuccess = Callable[[Settings, Transport, Reporter], Awaitable[None]]


def make_transport(settings: Settings, head_start: HeadStart | None = None) -> Transport:
    """The transport the settings ask for (``auto``: OpenSSH if usable, else asyncssh/paramiko),
    adopting what ``head_start`` started for it."""
    from tunnelauth.transports import resolve

    return resolve.make(settings, head_start)


def make_browser(settings: Settings, env: Environment) -> BrowserLauncher:
    """The launcher the settings ask for (``--browser-cmd``, the system browser, or printing);
    what it starts runs with ``env``'s variables."""
    return BrowserLauncher(
        command=settings.browser_cmd, no_browser=settings.no_browser, env=env.variables
    )


async def login(
    settings: Settings,
    reporter: Reporter,
    *,
    env: Environment,
    head_start: HeadStart | None = None,
    transport_factory: Callable[[Settings, HeadStart | None], Transport] = make_transport,
    browser_factory: Callable[[Settings, Environment], BrowserLauncher] = make_browser,
    after_success: AfterSuccess | None = None,
    on_teardown: Callable[[], None] | None = None,
) -> Success:
    """Run one login to its end; raises a TunnelauthError naming the exit status on failure.

    ``head_start``: what the caller started before the heavy imports, for the transport to
    adopt (the caller discards what is left). ``after_success`` runs on the same connection
    once the login succeeded, before teardown. ``env``: the process's environment, as the
    caller read it (stdin's terminal, the variables the browser and ssh run with).
    """
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        transport = transport_factory(settings, head_start)
        if transport.choice is not None:
            reporter.debug(f"backend {transport.name}: {transport.choice.reason}")
        debug_log = partial(_ssh_debug, reporter) if settings.verbosity >= 2 else None
        reporter.stage(Stage.CONNECTING, settings.target.host)
        terminal = None if settings.batch else Terminal.open(env)
        if terminal is not None:
            stack.callback(terminal.restore)
        asker = _ssh_asker(reporter, terminal) if terminal is not None else None
        stack.push_async_callback(transport.close)
        await transport.connect(asker=asker, debug_log=debug_log, env=env)
        reporter.debug(f"connected with {transport.name} in {time.monotonic() - started:.2f} s")
        reporter.stage(Stage.CONNECTED, transport.name)
        browser = browser_factory(settings, env)
        stack.push_async_callback(browser.close, BROWSER_GRACE)
        flow = Runner(settings, transport, reporter, browser, stack, terminal=terminal, env=env)

        async def login_then_check() -> Success:
            success = await flow.run()
            if after_success is not None:
                await after_success(settings, transport, reporter)
            return success

        try:
            # --verify/--replace run inside the overall deadline: a hanging remote command
            # ends with it (exit 7) like a hanging login.
            success = await asyncio.wait_for(login_then_check(), settings.timeout)
        except asyncio.CancelledError:
            if on_teardown is not None:
                on_teardown()  # the stack unwinds from here: let it finish in order
            raise
        except asyncio.TimeoutError:
            what = "the login" if after_success is None else "the login and its checks"
            raise TimedOutError(
                f"{what} did not finish within {settings.timeout:g} s",
                hint="raise --timeout if the provider needs longer",
            ) from None
    return success


def _ssh_debug(reporter: Reporter, line: str) -> None:
    """A line of ssh's (or the SSH library's) debug output, shown at ``-vv``.

    It carries server-chosen text (banners, names): control sequences are stripped and
    secrets redacted like any remote line.
    """
    reporter.debug(redact(strip(line)))


def run(
    settings: Settings,
    reporter: Reporter,
    *,
    env: Environment,
    head_start: HeadStart | None = None,
    after_success: AfterSuccess | None = None,
) -> Success:
    """Run a login in a fresh event loop; SIGINT, SIGTERM and SIGHUP end it in order (130).

    ``head_start`` and ``env`` are the caller's (see ``login``).
    """
    return run_with_signals(
        lambda teardown_started: login(
            settings,
            reporter,
            head_start=head_start,
            after_success=after_success,
            on_teardown=teardown_started,
            env=env,
        ),
        again_until_teardown=True,
    )
