"""The asyncssh transport: one SSHClientConnection carries the PTY process and every channel.

Configuration comes from the user's ssh config (or only ``--ssh-config``), read by asyncssh
itself; ``-J`` hops and ProxyJump from the config are opened here, hop by hop, so every hop
gets the same strict host-key check, batch rules and keepalive.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import asyncssh

from tunnelauth import hostkeys
from tunnelauth.askpass import Asker
from tunnelauth.errors import HostKeyError, SSHError, UsageError, at_hop, no_terminal_error
from tunnelauth.settings import SSHTarget
from tunnelauth.transports.asyncssh_channels import (
    CLOSE_GRACE,
    AsyncSSHChannel,
    AsyncSSHProcess,
    TCPSession,
    run_exec,
)
from tunnelauth.transports.asyncssh_client import Client, connect_with_deadline
from tunnelauth.transports.asyncssh_config import (
    config_paths,
    connection_options,
    remove_overrides,
    write_overrides,
)
from tunnelauth.transports.asyncssh_hostkeys import host_key_algs, known_hosts, trusted_keys
from tunnelauth.transports.asyncssh_pty import pty_in_one_flight
from tunnelauth.transports.base import EXEC_OUTPUT_LIMIT, ExecResult, Transport
from tunnelauth.transports.hops import (
    jump_chain,
    refusal_message,
    split_hop,
)
from tunnelauth.transports.library_log import LibraryLog
from tunnelauth.transports.prompts import Prompter

if TYPE_CHECKING:
    from tunnelauth.environment import Environment
    from tunnelauth.hoppool import HopPool
    from tunnelauth.transports.headstart import HeadStart

MAX_HOPS = 8  # a ProxyJump loop in the config must not recurse forever


class AsyncSSHTransport(Transport):
    """One asyncssh connection (plus one per jump hop) carries the process and the channels."""

    name = "asyncssh"

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
        self._conns: list[Any] = []  # hops first, the target last (never a shared hop)
        self._passphrases: dict[str, str | None] = {}
        self._tempdir: str | None = None
        self._hop_names: dict[int, str] = {}  # id(connection to a jump host) → its spec
        self.prompter = Prompter()
        self._library_log: LibraryLog | None = None

    @property
    def conn(self) -> Any:
        """The connection to the target (after ``connect``)."""
        if not self._conns:
            raise RuntimeError("not connected")
        return self._conns[-1]

    # -- connecting ----------------------------------------------------------------------

    def _config_paths(self, *, with_overrides: bool) -> list[str]:
        """The config files asyncssh reads for a connection (asyncssh_config.config_paths)."""
        return config_paths(self.target, self._tempdir if with_overrides else None)

    def _write_overrides(self) -> None:
        """``-o`` options and ``-i`` keys as a config file read first (first value wins)."""
        made = write_overrides(self.target)
        if made is not None:
            self._tempdir = made

    def _passphrase(self, filename: str) -> str | None:
        """Ask once per key file for its passphrase (never in batch mode)."""
        if self.batch:
            return None
        if filename not in self._passphrases:
            # Called from the worker thread that reads the config and loads the keys.
            prompt = f"Enter passphrase for key '{filename}': "
            self._passphrases[filename] = self.prompter.ask_blocking(prompt)
        return self._passphrases[filename]

    def _kwargs(self, host: str, port: int | None, user: str | None, final: bool) -> dict[str, Any]:
        """Options for one connection (the target when ``final``, else a jump hop)."""
        passphrase = None if self.batch else self._passphrase
        paths = self._config_paths(with_overrides=final)
        return connection_options(paths, host, port, user, self.keepalive_interval, passphrase)

    async def connect(
        self,
        *,
        env: Environment,
        asker: Asker | None = None,
        debug_log: Callable[[str], None] | None = None,
    ) -> None:
        """Open the hops (``-J`` or the config's ProxyJump) and the target; authenticate each.

        ``asker``: passwords, codes, passphrases and host keys are asked through the flow
        (display paused); without it, on the terminal (``env``'s stdin). ``debug_log``
        (``-vv``): asyncssh's own debug log goes there until ``close``.
        """
        if debug_log is not None:
            asyncssh.set_debug_level(1)  # never the packet dumps of level 3
            self._library_log = LibraryLog("asyncssh", debug_log)
        self.prompter.bind(asker, env)
        self._write_overrides()
        try:
            hops = tuple(self.target.jump)
            tunnel = None
            if hops:
                tunnel = await self._target_tunnel(hops)
            user, host = self.target.user_and_host()
            await self._open(host, self.target.port, user, tunnel, final=True, depth=0)
        except BaseException:
            await self.close()
            raise
        finally:
            self._remove_overrides()

    async def open_hops(self, *, env: Environment, asker: Asker | None = None) -> None:
        """A fleet's first pass: open (or find) this host's shared jump chain, nothing else."""
        if self.hops is None:
            return
        self.prompter.bind(asker, env)
        self._write_overrides()
        try:
            hops = tuple(self.target.jump)
            if not hops:
                kwargs = self._kwargs(self.target.host, self.target.port, self.target.login, True)
                # Only the ProxyJump is read: no key is loaded (nor its passphrase asked) here.
                kwargs.pop("passphrase", None)
                kwargs["client_keys"] = None
                options = await asyncio.to_thread(
                    lambda: asyncssh.SSHClientConnectionOptions(**kwargs)
                )
                hops = jump_chain(options.tunnel if isinstance(options.tunnel, str) else None)
            if hops:
                await self._target_tunnel(hops)
        except (ValueError, asyncssh.Error) as exc:
            raise UsageError(f"ssh configuration for {self.target.host}: {exc}") from exc
        finally:
            self._remove_overrides()

    async def _target_tunnel(self, hops: Sequence[str]) -> Any:
        """The connection the target is reached through: the fleet's shared one, or our own."""
        if self.hops is None:
            return await self._open_chain(hops, depth=1)
        from tunnelauth.hoppool import hop_key

        key = hop_key(self.name, hops, self._config_paths(with_overrides=False))

        async def open_shared() -> _SharedChain:
            conns: list[Any] = []
            try:
                await self._open_chain(hops, depth=1, into=conns)
            except BaseException:
                await _close_all(conns)
                raise
            return _SharedChain(conns, hops[-1])

        async def usable(chain: _SharedChain) -> bool:
            return not chain.tunnel.is_closed()

        chain = await self.hops.get(key, open_shared, target=self.target.host, usable=usable)
        self._hop_names[id(chain.tunnel)] = chain.spec
        return chain.tunnel

    async def _open_chain(
        self, hops: Sequence[str], depth: int, into: list[Any] | None = None
    ) -> Any:
        """Connect hop after hop, each through the previous one; returns the last.

        The connections go to ``into`` (a shared chain's list), else to this transport's.
        """
        tunnel = None
        for spec in hops:
            user, host, port = split_hop(spec)
            try:
                tunnel = await self._open(
                    host, port, user, tunnel, final=False, depth=depth, into=into
                )
            except SSHError as exc:
                raise at_hop(exc, spec, self.target.host) from None
            self._hop_names[id(tunnel)] = spec
        return tunnel

    async def _open(
        self,
        host: str,
        port: int | None,
        user: str | None,
        tunnel: Any,
        *,
        final: bool,
        depth: int,
        into: list[Any] | None = None,
    ) -> Any:
        """One authenticated connection to ``host``; ProxyJump from the config when no tunnel.

        It is kept in ``into`` (a shared chain's list), else in this transport's.
        """
        if depth > MAX_HOPS:
            raise UsageError(f"more than {MAX_HOPS} jump hops (a ProxyJump loop?)")
        kwargs = self._kwargs(host, port, user, final)
        try:
            options = await asyncio.to_thread(lambda: asyncssh.SSHClientConnectionOptions(**kwargs))
        except (ValueError, OSError, asyncssh.Error) as exc:
            raise UsageError(f"ssh configuration for {host}: {exc}") from exc
        if tunnel is None and not (final and self.target.jump):
            hops = jump_chain(options.tunnel if isinstance(options.tunnel, str) else None)
            if hops and final:
                tunnel = await self._target_tunnel(hops)
            elif hops:
                tunnel = await self._open_chain(hops, depth + 1, into=into)
        add_to, known = known_hosts(options)
        kwargs["known_hosts"] = trust = trusted_keys(known)
        if not options.config.get("HostKeyAlgorithms"):
            kwargs["server_host_key_algs"] = host_key_algs(trust[0])
        kwargs["tunnel"] = tunnel
        lookup = partial(hostkeys.config_value, self._config_paths(with_overrides=final), host)
        asking: dict[str, Any] = {"prompter": self.prompter, "label": f"{options.username}@{host}"}
        client = Client(self.batch, lookup, known, add_to, **asking)
        client.system_config = self.target.ssh_config is None
        kwargs["client_factory"] = lambda: client
        via = self._hop_names.get(id(tunnel))  # the jump host the tunnel leads to, for messages
        try:
            sock = self._early_socket(options, tunnel)
        except TimeoutError:
            raise SSHError(
                f"connecting to {host} timed out after {self.connect_timeout:g} s", host=host
            ) from None
        try:
            conn = await connect_with_deadline(
                host, {**kwargs, "sock": sock}, client, self.connect_timeout, via
            )
        except HostKeyError:
            key = client.offered_key
            if not client.ask_about_key or key is None:
                raise
            fingerprint = key.get_fingerprint("sha256")
            question = hostkeys.question(host, key.get_algorithm(), fingerprint)
            if not await self.prompter.confirm_key(question, fingerprint):
                raise
            client.remember(key)
            # Once more, with the key the user accepted (nothing was authenticated yet).
            again = Client(self.batch, lookup, known, add_to, **asking, accepted_key=key)
            again.system_config = client.system_config
            kwargs["client_factory"] = lambda: again
            conn = await connect_with_deadline(host, kwargs, again, self.connect_timeout, via)
        (self._conns if into is None else into).append(conn)
        return conn

    def _early_socket(self, options: Any, tunnel: Any) -> socket.socket | None:
        """The first hop's TCP connection opened during the imports, if it goes where asyncssh
        would connect (no tunnel, proxy command or host name canonicalization in the way)."""
        if tunnel is not None or options.proxy_command:
            return None
        if str(options.config.get("CanonicalizeHostname", "no")).lower() not in ("no", "false"):
            return None
        if self.head_start is None:
            return None
        return self.head_start.take_socket(options.host, options.port, self.connect_timeout)

    def _remove_overrides(self) -> None:
        if self._tempdir is not None:
            remove_overrides(self._tempdir)
            self._tempdir = None

    # -- using the connection ------------------------------------------------------------

    async def start(self, command: str) -> AsyncSSHProcess:
        """Run ``command`` on a PTY (bytes, stderr merged)."""
        try:
            with pty_in_one_flight():  # pty-req and exec in one round trip, as OpenSSH sends them
                proc = await self.conn.create_process(
                    command,
                    term_type="xterm",
                    term_size=(1000, 50),
                    request_pty="force",  # a config's RequestTTY must not take the PTY away
                    encoding=None,
                    stderr=asyncssh.STDOUT,
                )
        except (asyncssh.Error, OSError) as exc:
            code = exc.code if isinstance(exc, asyncssh.ChannelOpenError) else None
            if code == asyncssh.OPEN_REQUEST_PTY_FAILED:
                raise no_terminal_error(self.target.host) from exc
            message = f"cannot start the remote command: {exc}"
            raise SSHError(message, host=self.target.host) from exc
        return AsyncSSHProcess(proc)

    async def open_channel(self, host: str, port: int) -> AsyncSSHChannel:
        """A direct-tcpip channel to ``host:port`` on the remote; a refusal reads as EOF."""
        reader = asyncio.StreamReader()
        try:
            chan, session = await self.conn.create_connection(
                lambda: TCPSession(reader), host, port
            )
        except asyncssh.ChannelOpenError as exc:
            reader.feed_eof()
            return AsyncSSHChannel(None, None, reader, refusal_message(exc.code, exc.reason))
        return AsyncSSHChannel(chan, session, reader, "")

    async def exec(
        self, command: str, *, stdin: bytes = b"", timeout: float, limit: int = EXEC_OUTPUT_LIMIT
    ) -> ExecResult:
        """Run a short command without a PTY; keep at most ``limit`` bytes of each stream."""
        try:
            return await asyncio.wait_for(run_exec(self.conn, command, stdin, limit), timeout)
        except (asyncssh.Error, OSError) as exc:
            raise SSHError(f"remote command failed to run: {exc}", host=self.target.host) from exc

    async def close(self) -> None:
        """Close the target connection, then each hop in reverse order."""
        self.prompter.cancel()  # a key-loading thread waiting for a passphrase ends now
        await _close_all(self._conns)
        self._remove_overrides()
        if self._library_log is not None:
            self._library_log.stop()
            self._library_log = None


async def _close_all(conns: list[Any]) -> None:
    """Close connections, the newest first (the target before its hops)."""
    while conns:
        conn = conns.pop()
        conn.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(conn.wait_closed(), CLOSE_GRACE)


class _SharedChain:
    """A fleet's jump chain: its connections, the last one carrying every target's tunnel."""

    def __init__(self, conns: list[Any], spec: str) -> None:
        self.conns = conns
        self.spec = spec  # the last hop as ProxyJump names it

    @property
    def tunnel(self) -> Any:
        """The connection to the last hop (targets' connections go through it)."""
        return self.conns[-1]

    async def close(self) -> None:
        """Close the hops, the last first."""
        await _close_all(self.conns)
