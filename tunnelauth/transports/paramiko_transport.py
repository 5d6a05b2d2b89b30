"""The paramiko transport: one paramiko Transport (plus one per jump hop) carries everything.

This module wires the parts: the ssh config (``paramiko_config``), the host-key check
(``paramiko_hostkeys``), authentication (``paramiko_auth``) and the threads and channels
(``paramiko_channels``). Features paramiko lacks fail at connect time with a UsageError naming
them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko

from tunnelauth.askpass import Asker
from tunnelauth.errors import SSHError, UsageError, at_hop, no_terminal_error
from tunnelauth.sanitize import untrusted
from tunnelauth.settings import SSHTarget
from tunnelauth.transports.base import EXEC_OUTPUT_LIMIT, ExecResult, Transport
from tunnelauth.transports.hops import jump_chain, refusal_message, split_hop
from tunnelauth.transports.library_log import LibraryLog
from tunnelauth.transports.paramiko_auth import authenticate
from tunnelauth.transports.paramiko_channels import (
    LINK_ERRORS,
    ParamikoChannel,
    ParamikoProcess,
    Pipe,
    Threads,
    close_quietly,
    feeder,
    host_socket,
    keep_alive,
    run_exec,
)
from tunnelauth.transports.paramiko_config import Effective, read_configs, refuse_unsupported
from tunnelauth.transports.paramiko_hostkeys import KnownHosts
from tunnelauth.transports.prompts import Prompter

if TYPE_CHECKING:
    from tunnelauth.environment import Environment
    from tunnelauth.hoppool import HopPool
    from tunnelauth.transports.headstart import HeadStart

# paramiko logs a refused channel (our forwarding probe) at ERROR; with no handler configured,
# Python would print it on the user's terminal. tunnelauth reports what matters itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_Hop = tuple[str, Any, int | None, str | None]  # spec, config, port, login
MAX_HOPS = 8


class ParamikoTransport(Transport):
    """paramiko Transports (hops first, the target last) run on threads of ours."""

    name = "paramiko"

    def __init__(
        self,
        target: SSHTarget,
        *,
        connect_timeout: float = 30.0,
        batch: bool = False,
        keepalive_interval: float = 5.0,
        hops: HopPool | None = None,
        head_start: HeadStart | None = None,
    ) -> None:
        self.target = target
        self.head_start = head_start  # may hold the first hop's connection, opened early
        self.connect_timeout = connect_timeout
        self.batch = batch
        self.keepalive_interval = keepalive_interval
        self.hops = hops  # a fleet's shared jump chains (None: this connection opens its own)
        self._threads = Threads()
        self._transports: list[Any] = []
        self._hop_specs: list[str] = []  # the chain's names, as _transports
        self._pipes: list[Pipe] = []
        self._stop = threading.Event()
        self.prompter = Prompter()
        self._agent = False  # whether the environment names an agent's socket (connect says)
        self._library_log: LibraryLog | None = None

    @property
    def transport(self) -> Any:
        """The paramiko Transport to the target (after ``connect``)."""
        if not self._transports:
            raise RuntimeError("not connected")
        return self._transports[-1]

    # -- connecting ----------------------------------------------------------------------

    async def connect(
        self,
        *,
        env: Environment,
        asker: Asker | None = None,
        debug_log: Callable[[str], None] | None = None,
    ) -> None:
        """Open the hops (``-J`` or the config's ProxyJump) and the target; authenticate each.

        ``asker``: passwords, codes, passphrases and host keys are asked through the flow
        (display paused); without it, on the terminal (``env``'s stdin). The agent is asked
        for keys when ``env`` names its socket. ``debug_log`` (``-vv``): paramiko's own debug
        log goes there until ``close``.
        """
        if debug_log is not None:
            self._library_log = LibraryLog("paramiko", debug_log)
        self._use(env, asker)
        target_config, hop_config = read_configs(self.target)
        try:
            user, host = self.target.user_and_host()
            target: _Hop = (host, target_config, self.target.port, user)
            shared = await self._shared_chain(target_config, hop_config)
            if shared is not None:
                # The fleet's connection to the last hop carries this one (a channel for sock).
                tunnel, via = shared.transport, shared.spec
                await self._connect_chain([target], True, hop_config, 0, tunnel=tunnel, via=via)
            else:
                chain: list[_Hop] = [(spec, hop_config, None, None) for spec in self.target.jump]
                chain.append(target)
                await self._connect_chain(chain, bool(self.target.jump), hop_config, 0)
        except BaseException:
            await self.close()
            raise
        keepalive = partial(
            keep_alive, self.transport, self._threads, self._stop, self.keepalive_interval
        )
        self._threads.start(keepalive, "keepalive")

    async def open_hops(self, *, env: Environment, asker: Asker | None = None) -> None:
        """A fleet's first pass: open (or find) this host's shared jump chain, nothing else."""
        if self.hops is None:
            return
        self._use(env, asker)
        await self._shared_chain(*read_configs(self.target))

    def _use(self, env: Environment, asker: Asker | None) -> None:
        """Ask through ``asker`` (else on ``env``'s terminal); use the agent ``env`` names."""
        self.prompter.bind(asker, env)
        self._agent = bool(env.variables.get("SSH_AUTH_SOCK"))

    async def _shared_chain(self, target_config: Any, hop_config: Any) -> _SharedChain | None:
        """The fleet's connections to this host's jump hosts (None: no pool, or no hops)."""
        if self.hops is None:
            return None
        from tunnelauth.hoppool import hop_key

        explicit = bool(self.target.jump)
        looked = target_config.lookup(self.target.host)
        hops = list(self.target.jump) or list(jump_chain(looked.get("proxyjump")))
        if not hops:
            return None
        path = self.target.ssh_config or Path("~/.ssh/config").expanduser()
        key = hop_key(self.name, hops, (str(path), "-J" if explicit else "ProxyJump"))

        async def open_shared() -> _SharedChain:
            opener = ParamikoTransport(
                self.target,
                connect_timeout=self.connect_timeout,
                batch=self.batch,
                keepalive_interval=self.keepalive_interval,
            )
            opener.prompter = self.prompter  # questions go where this host's go
            opener._agent = self._agent
            entries: list[_Hop] = [(spec, hop_config, None, None) for spec in hops]
            try:
                await opener._connect_chain(entries, explicit, hop_config, 0)
            except BaseException:
                await opener._close_connections()
                raise
            return _SharedChain(opener, hops[-1])

        async def usable(chain: _SharedChain) -> bool:
            return bool(chain.transport.is_active())

        return await self.hops.get(key, open_shared, target=self.target.host, usable=usable)

    async def _connect_chain(
        self,
        chain: Sequence[tuple[str, Any, int | None, str | None]],
        explicit: bool,
        hop_config: Any,
        depth: int,
        *,
        tunnel: Any = None,
        via: str | None = None,
    ) -> None:
        """Connect each entry through the previous one; the first may bring its own ProxyJump.

        ``tunnel``: the connection the first entry is reached through (``via`` names it).
        """
        first_tunnel, first_via = tunnel, via
        for index, (spec, config, port, login) in enumerate(chain):
            user, host, spec_port = split_hop(spec) if config is hop_config else (None, spec, None)
            looked = config.lookup(host)
            if index == 0 and not explicit:
                hops = jump_chain(looked.get("proxyjump"))
                if hops:
                    if depth >= MAX_HOPS:
                        raise UsageError(f"more than {MAX_HOPS} jump hops (a ProxyJump loop?)")
                    await self._connect_chain(
                        [(h, hop_config, None, None) for h in hops], False, hop_config, depth + 1
                    )
            tunnel = self._transports[-1] if (index > 0 or self._transports) else first_tunnel
            via = self._hop_specs[-1] if tunnel is not None and self._hop_specs else first_via
            settings = Effective(looked, host, port or spec_port, login or user)
            try:
                conn = await self._threads.call(
                    partial(self._open, settings, tunnel, via), "connect"
                )
            except SSHError as exc:
                if config is hop_config:
                    raise at_hop(exc, spec, self.target.host) from None
                raise
            self._transports.append(conn)
            self._hop_specs.append(spec)

    def _open(self, eff: Effective, tunnel: Any, via: str | None = None) -> Any:
        """Blocking: socket, key exchange, host-key check, then authentication (``via``: the
        jump host ``tunnel`` leads to, for messages)."""
        refuse_unsupported(eff)
        known = KnownHosts(eff, self.target.ssh_config is None)
        take = None if self.head_start is None else self.head_start.take_socket
        sock = host_socket(eff, tunnel, via, timeout=self.connect_timeout, take=take)
        conn = paramiko.Transport(sock)
        self._threads.threads.append(conn)  # paramiko's own thread: close() joins it too
        try:
            conn.banner_timeout = self.connect_timeout
            conn.auth_timeout = self.connect_timeout if self.batch else 600
            known.prefer(conn)
            try:
                conn.start_client(timeout=self.connect_timeout)
            except LINK_ERRORS as exc:
                if "banner" in str(exc).lower():  # paramiko's banner_timeout, our deadline
                    raise SSHError(
                        f"connecting to {eff.alias} timed out after {self.connect_timeout:g} s "
                        "(no SSH banner)",
                        host=eff.alias,
                    ) from None
                raise SSHError(f"cannot connect to {eff.alias}: {exc}", host=eff.alias) from None
            if conn.host_key is None:
                # start_client returns at its deadline without raising: no banner or kex yet.
                raise SSHError(
                    f"connecting to {eff.alias} timed out after {self.connect_timeout:g} s",
                    host=eff.alias,
                )
            known.check(
                conn.get_remote_server_key(),
                eff,
                batch=self.batch,
                ask=self.prompter.confirm_key_blocking,
            )
            authenticate(conn, eff, self.prompter, batch=self.batch, agent=self._agent)
        except BaseException:
            close_quietly(conn)
            raise
        return conn

    # -- using the connection ------------------------------------------------------------

    async def start(self, command: str) -> ParamikoProcess:
        """Run ``command`` on a PTY (stderr merged)."""

        def open_session() -> Any:
            chan = self.transport.open_session(timeout=self.connect_timeout)
            try:
                chan.get_pty(term="xterm", width=1000, height=50)
            except paramiko.SSHException as exc:
                if self.transport.is_active() and chan.closed:  # refused: paramiko closed it
                    raise no_terminal_error(self.target.host) from exc
                raise
            chan.set_combine_stderr(True)
            chan.exec_command(command)
            return chan

        try:
            chan = await self._threads.call(open_session, "start")
        except LINK_ERRORS as exc:
            raise SSHError(
                f"cannot start the remote command: {exc}", host=self.target.host
            ) from exc
        process = ParamikoProcess(chan, self._threads)
        self._pipes.append(process._pipe)
        return process

    async def open_channel(self, host: str, port: int) -> ParamikoChannel:
        """A direct-tcpip channel to ``host:port`` on the remote; a refusal reads as EOF."""

        def open_direct() -> Any:
            return self.transport.open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=self.connect_timeout
            )

        try:
            chan = await self._threads.call(open_direct, "channel")
        except paramiko.ChannelException as exc:
            return ParamikoChannel(None, refusal_message(exc.code, exc.text))
        except LINK_ERRORS as exc:
            return ParamikoChannel(None, untrusted(f"open failed: {exc}"))

        def pipe(reader: asyncio.StreamReader) -> Pipe:
            made = Pipe(chan, self._threads, feeder(reader), "channel")
            self._pipes.append(made)
            return made

        return ParamikoChannel(pipe, "")

    async def exec(
        self, command: str, *, stdin: bytes = b"", timeout: float, limit: int = EXEC_OUTPUT_LIMIT
    ) -> ExecResult:
        """Run a short command without a PTY; keep at most ``limit`` bytes of each stream."""
        holder: list[Any] = []

        run = partial(
            run_exec,
            self.transport,
            self._threads,
            holder,
            command,
            stdin=stdin,
            timeout=timeout,
            limit=limit,
            open_timeout=self.connect_timeout,
        )

        try:
            return await asyncio.wait_for(self._threads.call(run, "exec"), timeout)
        except LINK_ERRORS as exc:
            raise SSHError(f"remote command failed to run: {exc}", host=self.target.host) from exc
        finally:
            for chan in holder:
                close_quietly(chan)

    async def close(self) -> None:
        """Close channels, then the target and each hop in reverse order; join every thread."""
        self._stop.set()
        self.prompter.cancel()  # a connect thread waiting for an answer ends now
        for pipe in reversed(self._pipes):
            await pipe.close()
        self._pipes.clear()
        await self._close_connections()
        if self._library_log is not None:
            self._library_log.stop()
            self._library_log = None

    async def _close_connections(self) -> None:
        """Close the target and each hop in reverse order; join every thread."""
        while self._transports:
            conn = self._transports.pop()
            await self._threads.call(partial(close_quietly, conn), "close")
        self._hop_specs.clear()
        await self._threads.join()


class _SharedChain:
    """A fleet's jump chain: the last hop's Transport opens every target's socket."""

    def __init__(self, opener: ParamikoTransport, spec: str) -> None:
        self._opener = opener  # holds the hops' Transports and their threads
        self.spec = spec  # the last hop as ProxyJump names it

    @property
    def transport(self) -> Any:
        """The Transport to the last hop."""
        return self._opener.transport

    async def close(self) -> None:
        """Close the hops, the last first, and join their threads."""
        await self._opener._close_connections()
