"""The runner: performs the decider's actions against the real world and feeds results back.

It owns every resource of one login (the remote process, the laptop listener and its port
lock, the forwarding probe, the relay sessions, the user's keyboard) and no judgement: what
to do next is always ``decide``'s answer to the event the runner saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine, Sequence
from contextlib import AsyncExitStack
from typing import Any

from tunnelauth import clipboard, ports, relay, verdict
from tunnelauth.browser import BrowserLauncher
from tunnelauth.decide import channel_refusal, decide, probes_forwarding
from tunnelauth.environment import Environment
from tunnelauth.errors import ChannelRefusedError, PortUnavailableError
from tunnelauth.events import Event
from tunnelauth.flowstate import (
    Action,
    Answer,
    AwaitVerdict,
    CarryWholeOrigin,
    ChannelRefused,
    CloseListener,
    EndPrompt,
    Fail,
    FlowState,
    FromListener,
    Idle,
    Input,
    OpenListener,
    OpenPage,
    PasteSettled,
    RefineListener,
    Relay,
    RelayResult,
    Say,
    SetStage,
    ShowDeviceCode,
    ShowPrompt,
    StdinData,
    StopCarrying,
    TypeLine,
    config_of,
    facts,
)
from tunnelauth.listener import CallbackListener, ListenerEvent
from tunnelauth.pageopen import PageOpener
from tunnelauth.portlock import Owner, PortLock, end_stale_run, is_tunnelauth_for, lock_dir
from tunnelauth.remote import settings_command
from tunnelauth.report import Reporter, Stage
from tunnelauth.settings import Settings
from tunnelauth.terminal import Terminal
from tunnelauth.transports.base import Channel, RemoteProcess, Transport
from tunnelauth.verdict import Success
from tunnelauth.watch import Watcher

PROBE_DEADLINE = 5.0  # the forwarding probe's answer
PASTE_DEADLINE = 60.0  # the remote's verdict after a pasted redirect
IDLE_WINDOW = 0.3  # seconds of silence after which a partial line counts as a prompt
EXIT_WAIT = 15.0  # how long the remote may take to exit after its output ended
LISTENER_GRACE = 5.0  # how long a callback page still on its way to the browser may take
ANSWER_SETTLE = 2.0  # how long a carried callback's answer may trail the remote's exit


class Runner:
    """One login in progress: the resources it opened and the decider's state."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        reporter: Reporter,
        browser: BrowserLauncher,
        stack: AsyncExitStack,
        *,
        terminal: Terminal | None = None,
        env: Environment | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.reporter = reporter
        self.stack = stack
        self.terminal = terminal  # the user's terminal (interactive runs only)
        self.env = Environment() if env is None else env  # None: no terminal, no variables
        self.state = FlowState(config_of(settings))
        self.watcher = Watcher()
        self.process: RemoteProcess | None = None
        self.listener: CallbackListener | None = None
        self.port_lock: PortLock | None = None  # this run's claim on the laptop callback port
        self.probe: asyncio.Task[str] | None = None
        self.finished = asyncio.Event()  # set at the status line that ends the login
        self.fatal: BaseException | None = None  # a failure found outside the main loop
        self.pages = PageOpener(settings, transport, reporter, browser, stack, self._watch)

    # -- the main loop -------------------------------------------------------------------

    async def run(self) -> Success:
        """Start the remote command, follow its output to the end, and judge the result."""
        command = settings_command(self.settings, self.settings.args, pty=True)
        self.reporter.stage(Stage.RUNNING, self._display_command())
        self.process = await self.transport.start(command)
        self.stack.push_async_callback(self.process.close)
        if probes_forwarding(self.state.config):
            # Learn whether the server allows forwarding while the remote login starts up, so
            # the verdict costs the user no time and is known before the browser arrives.
            self.probe = asyncio.ensure_future(self._probe())
            self.stack.push_async_callback(cancel, self.probe)
        # Pushed before the listener's close, so the port's lock is released only after it.
        self.stack.callback(self._release_lock)
        self.stack.push_async_callback(self._close_listener)
        self._watch_stdin()
        await self._follow(self.process)
        exit_status = await self._wait_exit(self.process)
        if exit_status == 255 and not await self._link_alive():
            exit_status = None  # ssh's own failure status: the link died, not the login
        if self.listener is not None:
            # The remote's output can end before the answer to a carried callback arrives:
            # each channel's bytes come on their own (paramiko reads each on its own thread).
            # What reached the remote is judged once those answers are in.
            await self.listener.answers_settled(ANSWER_SETTLE)
        return self.judge(exit_status)

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
                    await self._handle_all([*self.watcher.idle(), Idle()])
                    continue
                chunk, reading = reading.result(), None
                if not chunk:
                    await self._handle_all(self.watcher.close())
                    return
                await self._handle_all(self.watcher.feed(chunk))
        finally:
            if reading is not None:
                await cancel(reading)

    async def _wait_exit(self, process: RemoteProcess) -> int | None:
        """The remote exit status once its output ended."""
        try:
            return await asyncio.wait_for(process.wait(), EXIT_WAIT)
        except asyncio.TimeoutError:
            return None

    def judge(self, exit_status: int | None) -> Success:
        """Decide the outcome from what was seen and the exit status; raise on failure."""
        return verdict.judge(facts(self.settings, self.state, exit_status))

    # -- deciding and acting -------------------------------------------------------------

    def _decide(self, event: Input) -> list[Action]:
        self.state, actions = decide(self.state, event)
        if self.state.finished:
            self.finished.set()
        return actions

    async def _handle_all(self, events: Sequence[Event | Idle]) -> None:
        for event in events:
            for action in self._decide(event):
                await self._perform(action)

    async def _perform(self, action: Action) -> None:
        """Carry out one action of the main loop (a failure ends the run here)."""
        if isinstance(action, Fail):
            raise action.error
        if isinstance(action, OpenListener):
            await self._lock_port(action.port)
            self.listener = await self._open_listener(action)
        elif isinstance(action, CloseListener):
            await self._close_listener()
        elif isinstance(action, RefineListener):
            assert self.listener is not None
            await self.listener.refine(action.host, action.path)
        elif isinstance(action, OpenPage):
            await self.pages.open(action)
        elif isinstance(action, ShowDeviceCode):
            self.reporter.device_code(action.url, action.code)
            variables = self.env.variables
            if action.copy and action.code and await clipboard.copy(action.code, variables):
                self.reporter.info("the code is on the clipboard")
        else:
            self._perform_now(action)

    def _perform_now(self, action: Action) -> None:
        """Carry out an action that needs no waiting."""
        if isinstance(action, Say):
            getattr(self.reporter, action.level)(action.text)
        elif isinstance(action, SetStage):
            self.reporter.stage(action.stage, action.detail)
        elif isinstance(action, CarryWholeOrigin) and self.listener is not None:
            self.listener.carry_whole_origin()
        elif isinstance(action, StopCarrying) and self.listener is not None:
            self.listener.stop_carrying()
        elif isinstance(action, ShowPrompt):
            if action.secret and self.terminal is not None:
                # The remote PTY does not echo (stty -echo); the local terminal must not either,
                # from before the prompt shows: an answer typed the moment it appears stays hidden.
                self.terminal.echo(False)
            self.reporter.prompt(action.text, action.secret)
        elif isinstance(action, EndPrompt):
            if self.terminal is not None:
                self.terminal.echo(True)
            self.reporter.prompt_done()
        elif isinstance(action, TypeLine):
            assert self.process is not None
            self.process.write(action.data)
            self.watcher.input_sent()  # whatever the PTY echoes back is the user's input: hide it
        elif isinstance(action, Fail):
            self.fatal = action.error  # the main loop raises it at its next turn

    def _watch(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background check that ends with the run."""
        task = asyncio.ensure_future(coro)
        self.stack.push_async_callback(cancel, task)

    # -- the laptop listener -------------------------------------------------------------

    async def _lock_port(self, port: int) -> None:
        """Claim the laptop port against other tunnelauth runs (wait, refuse or reap)."""
        if self.port_lock is not None and self.port_lock.port == port:
            return
        self._release_lock()
        lock = PortLock(
            port, host=self.settings.target.host, directory=lock_dir(self.env.variables)
        )

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

    async def _open_listener(self, action: OpenListener) -> CallbackListener:
        """Bind the callback port; a stale tunnelauth for this host holding it may be reaped."""

        async def attempt() -> CallbackListener:
            return await CallbackListener.open(
                host=action.host,
                port=action.port,
                path=action.path,
                open_channel=self._open_channel,
                on_event=self._on_listener_event,
                on_refused=self._fallback,
            )

        try:
            return await attempt()
        except PortUnavailableError as exc:
            pid = await asyncio.to_thread(ports.holder_pid, action.port)
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

    def _on_listener_event(self, event: ListenerEvent) -> None:
        path = self.listener.path if self.listener is not None else None
        for action in self._decide(FromListener(event, path)):
            self._perform_now(action)

    async def _close_listener(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            await listener.close(grace=LISTENER_GRACE)

    # -- carrying the callback: channel, relay, paste ------------------------------------

    async def _open_channel(self) -> Channel:
        """A channel to the remote listener, unless the server refuses them (then: fallback)."""
        assert self.state.remote_port is not None
        why = channel_refusal(self.state.config, await self._verdict())
        if why is not None:
            raise ChannelRefusedError(why, administratively=True)
        return await self.transport.open_channel(self.state.remote_host, self.state.remote_port)

    async def _probe(self) -> str:
        return await relay.probe_forwarding(self.transport, self.reporter, PROBE_DEADLINE)

    async def _verdict(self) -> str:
        """The probe's verdict (``unknown`` if it failed or took too long)."""
        if self.probe is None:
            return "unknown"
        try:
            return await asyncio.wait_for(asyncio.shield(self.probe), PROBE_DEADLINE)
        except Exception:
            return "unknown"

    async def _fallback(self, request: bytes, why: str) -> bytes | None:
        """The channel was refused: the decider picks relay or paste; the page it answers."""
        event: Input | None = ChannelRefused(request, why)
        while event is not None:
            actions, event = self._decide(event), None
            for action in actions:
                if isinstance(action, Answer):
                    return action.page
                if isinstance(action, Relay):
                    event = await self._relay(action)
                elif isinstance(action, AwaitVerdict):
                    event = await self._await_verdict()
                else:
                    self._perform_now(action)
        return None

    async def _relay(self, action: Relay) -> RelayResult:
        """Replay the request to the remote listener through an exec session."""
        host, port = self.state.remote_host, self.state.remote_port
        assert port is not None
        command = relay.relay_command(self.settings.program, host, port)
        stdin = relay.relay_input(action.request, host, port)
        try:
            result = await self.transport.exec(command, stdin=stdin, timeout=relay.SESSION_DEADLINE)
        except asyncio.TimeoutError:
            return RelayResult(action.request, "late")
        outcome = relay.relay_outcome(result.exit_status, result.stdout)
        detail = relay.stderr_detail(result.stderr) if outcome == "failed" else ""
        return RelayResult(action.request, outcome, result.stdout, result.exit_status, detail)

    async def _await_verdict(self) -> PasteSettled:
        try:
            await asyncio.wait_for(self.finished.wait(), PASTE_DEADLINE)
        except asyncio.TimeoutError:
            return PasteSettled(timed_out=True)
        return PasteSettled(timed_out=False)

    # -- the user's keyboard -------------------------------------------------------------

    def _watch_stdin(self) -> None:
        """Relay the user's lines to a remote prompt (only while one is showing)."""
        if self.settings.batch or not self.env.stdin_tty:
            return
        loop = asyncio.get_running_loop()
        fd = self.env.stdin_fd
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
        for action in self._decide(StdinData(data)):
            self._perform_now(action)

    def _display_command(self) -> str:
        return " ".join([os.path.basename(self.settings.program), *self.settings.args])


async def cancel(task: asyncio.Future[Any]) -> None:
    """Cancel a helper task and wait for it (its exception, if any, was already reported)."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
