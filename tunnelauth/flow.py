"""The orchestrator: the only module that decides. Transports move bytes; the watcher reads text.

One run: connect once, start the remote login with a PTY, turn its output into events, and act
on them (listen on the callback port, open the browser, relay a prompt answer), then tear
everything down in reverse order and return, or raise the error that names the exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tunnelauth import clipboard, httpreq, ports, relay, verdict
from tunnelauth.browser import BrowserLauncher, is_safe_browser_url
from tunnelauth.errors import (
    ChannelRefusedError,
    LoginFailedError,
    PortUnavailableError,
    SSHError,
    TimedOutError,
    TunnelauthError,
)
from tunnelauth.events import (
    AuthorizeUrl,
    BrowserRequest,
    Callback,
    DeviceCode,
    Event,
    Outcome,
    Prompt,
    PromptKind,
    RejectedUrl,
    RemoteLine,
    Status,
)
from tunnelauth.hints import HintFilter
from tunnelauth.httpreq import local_response
from tunnelauth.launchpad import LaunchPad
from tunnelauth.listener import NO_ANSWER, NO_ANSWER_PAGE, CallbackListener, ListenerEvent
from tunnelauth.portlock import Owner, PortLock, end_stale_run, is_tunnelauth_for
from tunnelauth.providers import PROVIDERS
from tunnelauth.remote import settings_command
from tunnelauth.report import Reporter, Stage
from tunnelauth.sanitize import redact, strip
from tunnelauth.settings import Settings
from tunnelauth.signals import run_with_signals
from tunnelauth.terminal import LineTooLong, Terminal
from tunnelauth.transports.base import Channel, RemoteProcess, Transport
from tunnelauth.verdict import LoginSeen, Success
from tunnelauth.watch import Watcher

if TYPE_CHECKING:
    from tunnelauth.transports.headstart import HeadStart

PROBE_DEADLINE = 5.0  # the forwarding probe's answer
PASTE_DEADLINE = 60.0  # the remote's verdict after a pasted redirect
PTY_LINE_LIMIT = 4000  # a canonical-mode PTY line holds at most 4095 bytes
SSH_PROMPT_DEADLINE = 300.0  # how long ssh's password or code question waits for the user
IDLE_WINDOW = 0.3  # seconds of silence after which a partial line counts as a prompt
EXIT_WAIT = 15.0  # how long the remote may take to exit after its output ended
LAST_LINES = 12  # remote lines shown with a failure
BROWSER_GRACE = 5.0  # how long a --browser-cmd may keep running after the login ended
LISTENER_GRACE = 5.0  # how long a callback page still on its way to the browser may take
# A browser that has not asked for the page by then did not open (a stale DISPLAY, a browser
# that silently did nothing): the URL is printed for the user instead of a silent wait.
BROWSER_ARRIVAL = 10.0
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# Before the browser is sent to a loopback callback, the remote's socket table must show a
# listener on that port: the CLI may bind a moment after it printed the port, so the check is
# repeated, waiting PORT_CHECK_FIRST_WAIT and then twice as long each time (about 3 s in all).
PORT_CHECKS = 6
PORT_CHECK_FIRST_WAIT = 0.1
PORT_CHECK_DEADLINE = 10.0  # one check's remote command


def _is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at a loopback host (its port is then the laptop port)."""
    try:
        return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS
    except ValueError:
        return False


def _loopback_port(url: str) -> int | None:
    """The port of a loopback ``url`` (None for any other URL)."""
    try:
        return urlsplit(url).port if _is_loopback_url(url) else None
    except ValueError:
        return None


class Login:
    """One login in progress: state read from events and the resources it opened."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        reporter: Reporter,
        browser: BrowserLauncher,
        stack: AsyncExitStack,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.reporter = reporter
        self.browser = browser
        self.stack = stack
        self.watcher = Watcher()
        self.process: RemoteProcess | None = None
        self.listener: CallbackListener | None = None
        self.listen_source = ""
        self.remote_host = "127.0.0.1"
        self.remote_port: int | None = None
        self.authorize: AuthorizeUrl | None = None
        self.opened: set[str] = set()
        self.status: Status | None = None
        self.prompt: Prompt | None = None
        self.last_lines: deque[str] = deque(maxlen=LAST_LINES)
        self.hints = HintFilter()  # hermes's manual-tunnel advice is hidden unless -v
        self.hint_noted = False
        self.via = settings.via
        self.probe: asyncio.Task[str] | None = None
        self.paste_prompt: Prompt | None = None  # the remote accepts a pasted redirect URL
        self.seen = LoginSeen.NONE  # the login flow carried out so far (the newest wins)
        self.finished = asyncio.Event()  # set at the status line that ends the login
        self.fatal: TunnelauthError | None = None  # a failure found outside the main loop
        self.terminal: Terminal | None = None  # the user's terminal (interactive runs only)
        self.port_lock: PortLock | None = None  # this run's claim on the laptop callback port
        self.callback_path: str | None = None  # the redirect URI's path, once the remote says
        usual = PROVIDERS[settings.provider].usual_hosts if settings.provider else ()
        self.usual_hosts = usual

    # -- the main loop -------------------------------------------------------------------

    async def run(self) -> Success:
        """Start the remote command, follow its output to the end, and judge the result."""
        command = settings_command(self.settings, self.settings.args, pty=True)
        self.reporter.stage(Stage.RUNNING, self._display_command())
        self.process = await self.transport.start(command)
        self.stack.push_async_callback(self.process.close)
        if self.via == "auto":
            # Learn whether the server allows forwarding while the remote login starts up, so
            # the verdict costs the user no time and is known before the browser arrives.
            self.probe = asyncio.ensure_future(self._probe())
            self.stack.push_async_callback(_cancel, self.probe)
        # Pushed before the listener's close, so the port's lock is released only after it.
        self.stack.callback(self._release_lock)
        self.stack.push_async_callback(self._close_listener)
        self._watch_stdin()
        await self._follow(self.process)
        exit_status = await self._wait_exit(self.process)
        if exit_status == 255 and not await self._link_alive():
            exit_status = None  # ssh's own failure status: the link died, not the login
        return self._judge(exit_status)

    async def _link_alive(self) -> bool:
        """Whether the SSH connection still answers (transports without a check: assume so)."""
        try:
            return await asyncio.wait_for(self.transport.alive(), PROBE_DEADLINE)
        except (asyncio.TimeoutError, OSError):
            return False

    async def _follow(self, process: RemoteProcess) -> None:
        """Feed remote output to the watcher until it ends; idle silence may reveal a prompt."""
        # One read stays pending across idle turns, awaited with asyncio.wait: wait_for could
        # swallow a Ctrl-C that lands as a read completes (Python < 3.12), and the read itself
        # then never has to be cancelled.
        reading: asyncio.Future[bytes] | None = None
        try:
            while True:
                if self.fatal is not None:
                    raise self.fatal
                if reading is None:
                    reading = asyncio.ensure_future(process.read())
                done, _ = await asyncio.wait({reading}, timeout=IDLE_WINDOW)
                if not done:
                    await self._handle_all(self.watcher.idle())
                    await self._maybe_open_browser(idle=True)
                    continue
                chunk, reading = reading.result(), None
                if not chunk:
                    await self._handle_all(self.watcher.close())
                    return
                await self._handle_all(self.watcher.feed(chunk))
        finally:
            if reading is not None:
                await _cancel(reading)

    async def _wait_exit(self, process: RemoteProcess) -> int | None:
        """The remote exit status once its output ended."""
        try:
            return await asyncio.wait_for(process.wait(), EXIT_WAIT)
        except asyncio.TimeoutError:
            return None

    def _judge(self, exit_status: int | None) -> Success:
        """Decide the outcome from what was seen and the exit status; raise on failure."""
        return verdict.judge(
            verdict.Facts(
                host=self.settings.target.host,
                program=self.settings.program,
                provider=self.settings.provider,
                run_as=self.settings.run_as,
                status=self.status,
                exit_status=exit_status,
                last_lines=tuple(self.last_lines),
                seen=self.seen,
            )
        )

    # -- events --------------------------------------------------------------------------

    async def _handle_all(self, events: list[Event]) -> None:
        for event in events:
            await self._handle(event)

    async def _handle(self, event: Event) -> None:
        if isinstance(event, RemoteLine):
            if event.text.strip():
                self.last_lines.append(self._redacted(event.text))
            if self.hints.shows(event.text) or self.settings.verbosity > 0:
                self.reporter.remote_line(self._redacted(event.text))
            elif not self.hint_noted:
                self.hint_noted = True
                self.reporter.remote_line("(hermes's steps for a manual ssh -L tunnel: not needed)")
            if self.prompt is not None:
                self._end_prompt()
        elif isinstance(event, Callback):
            await self._on_callback(event)
        elif isinstance(event, AuthorizeUrl):
            self.authorize = event
            await self._maybe_open_browser(idle=False)
        elif isinstance(event, BrowserRequest):
            # The helper's line itself is not shown: its URL follows as the usual events.
            self.reporter.info("the remote CLI asked to open a browser (its URL is checked)")
        elif isinstance(event, DeviceCode):
            await self._on_device_code(event)
        elif isinstance(event, RejectedUrl):
            # Said at once: a login URL that is never opened must not leave the user waiting
            # for the timeout without a word.
            url = self._redacted(event.url)
            self.reporter.warn(f"not opening a URL the remote printed ({event.reason}): {url}")
        elif isinstance(event, Prompt):
            self._on_prompt(event)
        elif isinstance(event, Status):
            self._on_status(event)

    async def _on_callback(self, event: Callback) -> None:
        """Listen on the redirect URI's port on the laptop; carry to the remote's listener."""
        self.remote_port = event.port
        self.remote_host = event.host  # "localhost" is resolved by the remote sshd
        if event.path:
            self.callback_path = urlsplit(event.path).path or "/"
        if self.listener is not None:
            if self.listener.port == event.port:
                await self._refine_listener(event)
                return
            if event.source == "announcement" and self.listen_source == "redirect_uri":
                # The redirect URI fixes the laptop port; a later announcement only moves the
                # remote end (hermes prints the port it really bound).
                self.reporter.debug(f"remote listener moved to port {event.port}")
                return
            await self._close_listener()
        await self._lock_port(event.port)
        self.listener = await self._open_listener(event)
        self.listen_source = event.source
        self.reporter.stage(Stage.LISTENING, f"127.0.0.1:{event.port} → remote port {event.port}")
        await self._maybe_open_browser(idle=False)

    async def _refine_listener(self, event: Callback) -> None:
        """A later line about the same port: its host and path win, the sockets stay open."""
        assert self.listener is not None
        if event.source == "announcement" and self.listen_source == "redirect_uri":
            return  # the browser comes back where the redirect URI says, not a waiting line
        await self.listener.refine(event.host, event.path)
        self.listen_source = event.source

    async def _lock_port(self, port: int) -> None:
        """Claim the laptop port against other tunnelauth runs (wait, refuse or reap)."""
        if self.port_lock is not None and self.port_lock.port == port:
            return
        self._release_lock()
        lock = PortLock(port, host=self.settings.target.host)

        def waiting(owner: Owner | None) -> None:
            who = owner.describe() if owner else "another tunnelauth run"
            self.reporter.warn(f"port {port} is in use by {who}; waiting for it to finish")

        if self.settings.reap:
            self.reporter.debug(f"--reap: a stale tunnelauth run for this host on {port} ends")
        await lock.acquire(
            wait=not self.settings.no_wait,
            deadline=self.settings.timeout,
            on_wait=waiting,
            reap=self.settings.reap,
        )
        self.port_lock = lock

    def _release_lock(self) -> None:
        lock, self.port_lock = self.port_lock, None
        if lock is not None:
            lock.release()

    async def _open_listener(self, event: Callback) -> CallbackListener:
        """Bind the callback port; a stale tunnelauth for this host holding it may be reaped."""

        async def attempt() -> CallbackListener:
            return await CallbackListener.open(
                host=event.host,
                port=event.port,
                path=event.path,
                open_channel=self._open_channel,
                on_event=self._on_listener_event,
                on_refused=self._fallback,
            )

        try:
            return await attempt()
        except PortUnavailableError as exc:
            pid = await asyncio.to_thread(ports.holder_pid, event.port)
            host = self.settings.target.host
            if pid is None or not is_tunnelauth_for(pid, host):
                raise
            if not self.settings.reap:
                exc.hint = (
                    f"pid {pid} is a tunnelauth run for {host}: if it is stale, "
                    "--reap ends it (SIGTERM, it tears down in order) and this run goes on"
                )
                raise
        self.reporter.warn(f"--reap: ending the stale tunnelauth run (pid {pid}) for {host}")
        await end_stale_run(pid, host=host)
        return await attempt()

    async def _open_channel(self) -> Channel:
        """A channel to the remote listener, unless the server refuses them (then: fallback)."""
        assert self.remote_port is not None
        if self.via in ("relay", "paste"):
            raise ChannelRefusedError(f"--via {self.via}", administratively=True)
        if self.via == "auto" and await self._verdict() == "refused":
            raise ChannelRefusedError("the server refuses forwarding", administratively=True)
        return await self.transport.open_channel(self.remote_host, self.remote_port)

    async def _probe(self) -> str:
        """Open a channel to a closed remote port: the answer says whether forwarding works."""
        channel = await self.transport.open_channel("127.0.0.1", relay.PROBE_PORT)
        try:
            data = await asyncio.wait_for(channel.reader.read(1), PROBE_DEADLINE)
            refusal = None if data else await channel.refusal()
        finally:
            await channel.close()
        verdict = relay.probe_verdict(refusal, bool(data))
        if verdict == "refused":
            self.reporter.info(
                f"the SSH server refuses forwarding ({refusal}): the callback will be relayed "
                "through a session on the same connection"
            )
        elif verdict == "allowed":
            self.reporter.debug("the SSH server allows forwarding: direct channel")
        else:
            self.reporter.debug(f"forwarding probe inconclusive ({refusal}): trying a channel")
        return verdict

    async def _verdict(self) -> str:
        """The probe's verdict (``unknown`` if it failed or took too long)."""
        if self.probe is None:
            return "unknown"
        try:
            return await asyncio.wait_for(asyncio.shield(self.probe), PROBE_DEADLINE)
        except Exception:
            return "unknown"

    async def _fallback(self, request: bytes, why: str) -> bytes | None:
        """The channel was refused: relay the held request, or paste it into the remote."""
        assert self.remote_port is not None
        if self.via == "channel":
            self.fatal = SSHError(
                f"the SSH server refused the forwarding channel ({why})",
                host=self.settings.target.host,
                hint="use --via auto (the default) or --via relay on hosts that forbid forwarding",
            )
            return None
        if self.via != "paste":
            answer = await self._relay(request, why)
            if answer is not None or self.via == "relay":
                return answer
        if self.paste_prompt is not None or self.via == "paste":
            return await self._paste(request)
        return None

    async def _relay(self, request: bytes, why: str) -> bytes | None:
        """Replay the request to the remote listener through an exec session."""
        assert self.remote_port is not None
        self.reporter.info(f"relaying the callback through an SSH session ({why})")
        command = relay.relay_command(self.settings.program, self.remote_host, self.remote_port)
        stdin = relay.relay_input(request, self.remote_host, self.remote_port)
        try:
            result = await self.transport.exec(command, stdin=stdin, timeout=relay.SESSION_DEADLINE)
            outcome = relay.relay_outcome(result.exit_status, result.stdout)
        except asyncio.TimeoutError:
            outcome = "late"
        if outcome == "late":
            # The request may well have reached the CLI: nothing else (no paste) is tried.
            self.reporter.warn(
                f"the relay got no answer from the remote CLI within {relay.ANSWER_DEADLINE:g} s"
            )
            return local_response(504, "No answer", "See the tunnelauth terminal.")
        if outcome == "no_answer":
            self._warn_no_answer()
            return local_response(502, *NO_ANSWER_PAGE)
        if outcome == "failed":
            detail = relay.stderr_detail(result.stderr)
            self.reporter.warn(f"the relay failed (exit {result.exit_status}): {detail}")
            return None
        self.seen = LoginSeen.CALLBACK
        return result.stdout

    def _warn_no_answer(self) -> None:
        """The remote CLI took the callback and closed without answering the browser."""
        if self.status is not None and self.status.outcome is Outcome.SUCCEEDED:
            self.reporter.debug("a request after the login got no answer from the remote")
            return
        self.reporter.warn(
            "the remote CLI took the callback but closed the connection without answering "
            "(it may have exited); the browser shows that no answer came"
        )

    async def _paste(self, request: bytes) -> bytes:
        """Type the captured redirect URL into the remote's paste prompt; page = the result."""
        assert self.remote_port is not None and self.process is not None
        try:
            parsed: httpreq.Request | None = httpreq.parse_request(request)
        except httpreq.LocalAnswer:
            parsed = None
        if parsed is not None and (parsed.method == "POST" or parsed.body):
            # A form_post callback carries its code in the body: the URL alone would lose
            # it, and a body is never typed into a terminal.
            self.fatal = LoginFailedError(
                "the callback came as a form POST (response_mode=form_post): its code is in "
                "the request body, which a paste prompt cannot take, so nothing was pasted",
                hint="log in where the callback can be carried: without --via paste, on a host "
                "that allows forwarding (AllowTcpForwarding) or has python, bash or curl for "
                "the relay",
            )
            text = "A POSTed callback cannot be pasted. See the tunnelauth terminal."
            return local_response(502, "Callback not pasted", text)
        target = parsed.target if parsed is not None else ""
        url = httpreq.paste_url(self.remote_host, self.remote_port, target)
        if url is None or len(url) >= PTY_LINE_LIMIT:
            # Only a well-formed callback URL is ever typed: a control byte (CR, Ctrl-C) in
            # the target would become keystrokes in the remote's terminal.
            self.reporter.warn("the browser's request is not a callback URL; nothing was pasted")
            return local_response(400, "Not a callback", "See the tunnelauth terminal.")
        self.reporter.info("passing the redirect to the remote's paste prompt")
        self.process.write(url.encode() + b"\r")
        self.watcher.input_sent()
        self.prompt = None
        self.seen = LoginSeen.PASTE
        try:
            await asyncio.wait_for(self.finished.wait(), PASTE_DEADLINE)
        except asyncio.TimeoutError:
            return local_response(504, "No answer yet", "See the tunnelauth terminal.")
        status = self.status
        if status is not None and status.outcome is Outcome.SUCCEEDED:
            text = f"{self.settings.target.host} says: {status.line.strip()}"
            return local_response(200, "Login complete: you can close this tab", text)
        line = status.line.strip() if status else "the login ended"
        return local_response(502, "Login failed", f"{self.settings.target.host}: {line}")

    def _on_listener_event(self, event: ListenerEvent) -> None:
        self.reporter.debug(f"browser: {event.kind} {event.path} {event.detail}".rstrip())
        if event.kind == "request_carried":
            known = self.callback_path or self.listener_path()
            if known is None or urlsplit(event.path).path == known:
                self.seen = LoginSeen.CALLBACK
                self.reporter.info("the callback reached the remote over a direct SSH channel")
            else:
                # A page of the remote's own login (its start page), not the callback.
                self.reporter.debug(f"carried the browser's request for {event.path} to the remote")
        elif event.kind == "carry_failed" and event.detail == NO_ANSWER:
            self._warn_no_answer()
        elif event.kind == "request_local" and event.status == 421:
            # The Host it named is the sender's text: not shown.
            self.reporter.warn(
                "refused a request to the callback port that named another host "
                "(a web page trying DNS rebinding?); it never reached the remote"
            )

    def listener_path(self) -> str | None:
        """The path the laptop listener carries (None: every path of the remote's origin)."""
        return self.listener.path if self.listener is not None else None

    async def _close_listener(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            await listener.close(grace=LISTENER_GRACE)

    async def _maybe_open_browser(self, *, idle: bool) -> None:
        """Open the authorize URL once the laptop end is ready for its redirect."""
        auth = self.authorize
        if auth is None or auth.url in self.opened:
            return
        redirect = auth.redirect_uri
        needs_listener = _is_loopback_url(auth.url) or (
            redirect is not None and _is_loopback_url(redirect)
        )
        if needs_listener and self.listener is None:
            return
        if not needs_listener and redirect is None and self.listener is None and not idle:
            return  # a callback announcement may still follow the URL
        self.opened.add(auth.url)  # decided once, whatever the check below finds
        listener = self.listener
        if listener is not None and _loopback_port(auth.url) == listener.port:
            # The CLI's own page (rclone's /auth): its origin's pages are the login's.
            listener.carry_whole_origin()
        if needs_listener and not await self._remote_listens():
            host, port = self.settings.target.host, self.remote_port
            self.reporter.warn(
                f"nothing listens on port {port} on {host}: the CLI may have moved to another "
                "port; not opening the browser on a page that would fail"
            )
            self.reporter.open_url(auth.url, auth.host, "printed", unusual_host=False)
        else:
            await self._open(auth.url, auth.host)
        self.reporter.stage(Stage.WAITING_BROWSER)

    async def _remote_listens(self) -> bool:
        """Whether something listens on the remote callback port (True if it cannot be told).

        Only the remote's socket table is read: no request ever goes to the port.
        """
        port = self.remote_port
        if port is None or self.settings.provider is not None:
            # hermes prints the port it really bound (a later line moves it): no check, so its
            # logins open the browser the moment the URL is known.
            return True
        from tunnelauth.doctor import remote_port_state

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

    async def _on_device_code(self, event: DeviceCode) -> None:
        self.seen = LoginSeen.DEVICE
        if event.url not in self.opened:
            await self._open(event.url, urlsplit(event.url).hostname or "")
        self.reporter.device_code(event.url, event.code)
        if event.code and not self.settings.batch and await clipboard.copy(event.code):
            self.reporter.info("the code is on the clipboard")
        self.reporter.stage(Stage.WAITING_APPROVAL)

    async def _open(self, url: str, host: str) -> None:
        self.opened.add(url)
        if not is_safe_browser_url(url):
            self.reporter.warn(f"not opening an unsafe URL from the remote: {url[:200]!r}")
            return
        unusual = bool(self.usual_hosts) and not any(
            host == h or host.endswith("." + h) for h in self.usual_hosts
        )
        pad = None
        if self.browser.uses_system_browser():
            # The browser first fetches a local redirect to the page: its arrival is then known.
            pad = await LaunchPad.start(url)
            self.stack.push_async_callback(pad.close)
        how = await self.browser.open(pad.url if pad is not None else url)
        self.reporter.open_url(url, host, how, unusual_host=unusual and not _is_loopback_url(url))
        if how == "system" and pad is not None:
            self._watch(self._browser_arrival(pad, url, host))
        elif how == "command":
            self._watch(self._browser_command_result(url, host))

    def _watch(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background check that ends with the run."""
        task = asyncio.ensure_future(coro)
        self.stack.push_async_callback(_cancel, task)

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

    def _on_prompt(self, event: Prompt) -> None:
        self.prompt = event
        if event.kind is PromptKind.PASTE:
            self.paste_prompt = event
        if self.listener is not None and event.kind is PromptKind.PASTE:
            self.reporter.debug("the remote also accepts a pasted redirect URL")
            return
        if self.settings.batch:
            # Nobody can answer: fail now, naming the prompt, instead of waiting for a timeout.
            raise LoginFailedError(
                f"the remote asks {event.text.strip()!r} and this run cannot answer it",
                last_lines=list(self.last_lines),
                hint="run tunnelauth from a terminal, or set the value on the remote beforehand",
            )
        if event.kind.is_secret and self.terminal is not None:
            # The remote PTY does not echo (stty -echo); the local terminal must not either,
            # from before the prompt shows: an answer typed the moment it appears stays hidden.
            self.terminal.echo(False)
        self.reporter.prompt(event.text, event.kind.is_secret)
        self.reporter.stage(Stage.PROMPT)

    def _end_prompt(self) -> None:
        """The remote prompt is over: echo back on, the live display back."""
        self.prompt = None
        if self.terminal is not None:
            self.terminal.echo(True)
        self.reporter.prompt_done()

    def _on_status(self, event: Status) -> None:
        if self.status is None or event.outcome is not Outcome.SUCCEEDED:
            self.status = event
        self.finished.set()
        if event.outcome is Outcome.SUCCEEDED and self.listener is not None:
            self.listener.stop_carrying()
        self.reporter.stage(Stage.FINISHING, event.line.strip())

    # -- the user's keyboard -------------------------------------------------------------

    def _watch_stdin(self) -> None:
        """Relay the user's lines to a remote prompt (only while one is showing)."""
        if self.settings.batch or not sys.stdin.isatty():
            return
        loop = asyncio.get_running_loop()
        fd = sys.stdin.fileno()
        loop.add_reader(fd, self._on_stdin, fd)
        self.stack.callback(loop.remove_reader, fd)

    def _on_stdin(self, fd: int) -> None:
        try:
            data = os.read(fd, 8192)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            return
        if self.prompt is None or self.process is None:
            self.reporter.warn("not sent: the remote is not asking for input right now")
            return
        line = data.rstrip(b"\r\n")
        if len(line) >= PTY_LINE_LIMIT:
            self.reporter.warn(
                f"not sent: the line is {len(line)} bytes, longer than the remote terminal "
                f"takes ({PTY_LINE_LIMIT}); type or paste a shorter answer"
            )
            return
        self.process.write(line + b"\r")
        self.watcher.input_sent()  # whatever the PTY echoes back is the user's input: hide it
        if self.prompt.kind in (PromptKind.PASTE, PromptKind.CODE):
            self.seen = LoginSeen.PASTE
        self._end_prompt()

    # -- display helpers -----------------------------------------------------------------

    def _redacted(self, text: str) -> str:
        return text if self.settings.show_secrets else redact(text)

    def _display_command(self) -> str:
        return " ".join([os.path.basename(self.settings.program), *self.settings.args])


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel a helper task and wait for it (its exception, if any, was already reported)."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


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


def make_browser(settings: Settings) -> BrowserLauncher:
    """The launcher the settings ask for (``--browser-cmd``, the system browser, or printing)."""
    return BrowserLauncher(command=settings.browser_cmd, no_browser=settings.no_browser)


async def login(
    settings: Settings,
    reporter: Reporter,
    *,
    head_start: HeadStart | None = None,
    transport_factory: Callable[[Settings, HeadStart | None], Transport] = make_transport,
    browser_factory: Callable[[Settings], BrowserLauncher] = make_browser,
    after_success: AfterSuccess | None = None,
    on_teardown: Callable[[], None] | None = None,
) -> Success:
    """Run one login to its end; raises a TunnelauthError naming the exit status on failure.

    ``head_start``: what the caller started before the heavy imports, for the transport to
    adopt (the caller discards what is left). ``after_success`` runs on the same connection
    once the login succeeded, before teardown.
    """
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        transport = transport_factory(settings, head_start)
        if transport.choice is not None:
            reporter.debug(f"backend {transport.name}: {transport.choice.reason}")
        debug_log = partial(_ssh_debug, reporter) if settings.verbosity >= 2 else None
        reporter.stage(Stage.CONNECTING, settings.target.host)
        terminal = None if settings.batch else Terminal.open()
        if terminal is not None:
            stack.callback(terminal.restore)
        asker = _ssh_asker(reporter, terminal) if terminal is not None else None
        stack.push_async_callback(transport.close)
        await transport.connect(asker=asker, debug_log=debug_log)
        reporter.debug(f"connected with {transport.name} in {time.monotonic() - started:.2f} s")
        reporter.stage(Stage.CONNECTED, transport.name)
        browser = browser_factory(settings)
        stack.push_async_callback(browser.close, BROWSER_GRACE)
        flow = Login(settings, transport, reporter, browser, stack)
        flow.terminal = terminal

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
    head_start: HeadStart | None = None,
    after_success: AfterSuccess | None = None,
) -> Success:
    """Run a login in a fresh event loop; SIGINT, SIGTERM and SIGHUP end it in order (130).

    ``head_start`` is the caller's (see ``login``).
    """
    return run_with_signals(
        lambda teardown_started: login(
            settings,
            reporter,
            head_start=head_start,
            after_success=after_success,
            on_teardown=teardown_started,
        ),
        again_until_teardown=True,
    )
