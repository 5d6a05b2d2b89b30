"""The paramiko transport: one paramiko Transport (plus one per jump hop) carries everything.

paramiko blocks, so every call runs on a short-lived thread of ours, and each open channel has
one reader thread (feeding the event loop) and one writer thread; close() ends and joins them
all. Features paramiko lacks fail at connect time with a UsageError naming them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import getpass
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import paramiko

from tunnelauth import hostkeys, knownhosts
from tunnelauth.askpass import Asker
from tunnelauth.errors import HostKeyError, SSHError, UsageError, at_hop, no_terminal_error
from tunnelauth.sanitize import untrusted
from tunnelauth.settings import SSHTarget
from tunnelauth.transports.base import EXEC_OUTPUT_LIMIT, Bounded, ExecResult, Transport
from tunnelauth.transports.hops import (
    jump_chain,
    os_error_reason,
    refusal_message,
    split_hop,
    unreachable_from,
)
from tunnelauth.transports.library_log import LibraryLog
from tunnelauth.transports.prompts import CONFIRM, SECRET, Prompter
from tunnelauth.transports.sshargs import batch_prompt_refusal

if TYPE_CHECKING:
    from tunnelauth.hoppool import HopPool
    from tunnelauth.transports.headstart import HeadStart

# paramiko logs a refused channel (our forwarding probe) at ERROR; with no handler configured,
# Python would print it on the user's terminal. tunnelauth reports what matters itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

T = TypeVar("T")
_Hop = tuple[str, Any, int | None, str | None]  # spec, config, port, login
MAX_HOPS = 8
CLOSE_GRACE = 2.0
JOIN_DEADLINE = 5.0
KEEPALIVE_COUNT_MAX = 3
CHUNK = 65536
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
OTHER_BACKENDS = "use --backend openssh or --backend asyncssh"


class _Threads:
    """Every thread this transport starts, so close() can join them all."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def start(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"tunnelauth-paramiko-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    async def call(self, fn: Callable[[], T], name: str = "call") -> T:
        """Run a blocking paramiko call on a thread of ours and await its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not future.done():
                future.set_result(value) if ok else future.set_exception(value)

        def work() -> None:
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as exc:
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop may be gone after a cancel
                loop.call_soon_threadsafe(settle, *outcome)

        self.start(work, name)
        return await future

    async def join(self, deadline: float = JOIN_DEADLINE) -> None:
        """Wait until every thread ended (they end once their channel or transport closed)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while any(t.is_alive() for t in self.threads) and loop.time() < end:
            await asyncio.sleep(0.01)  # polling: a thread cannot wake the loop once it is gone
        self.threads = [t for t in self.threads if t.is_alive()]


def _resolve(future: asyncio.Future[None]) -> None:
    """Mark ``future`` done (on the loop thread) unless a waiter gave up on it."""
    if not future.done():
        future.set_result(None)


class _Pipe:
    """Moves a paramiko channel's bytes to and from the event loop on two threads."""

    def __init__(
        self, chan: Any, threads: _Threads, on_data: Callable[[bytes], None], name: str
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.chan = chan
        self.ended: asyncio.Future[None] = self.loop.create_future()
        self._on_data = on_data
        self._out: queue.SimpleQueue[bytes | asyncio.Future[None] | None] = queue.SimpleQueue()
        threads.start(self._read, f"{name}-reader")
        threads.start(self._write, f"{name}-writer")

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn, *args)

    def _read(self) -> None:
        try:
            while chunk := self.chan.recv(CHUNK):
                self._post(self._on_data, chunk)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # a broken link ends the output like EOF does
        finally:
            self._post(self._on_data, b"")
            self._post(_resolve, self.ended)

    def _write(self) -> None:
        while (item := self._out.get()) is not None:
            if isinstance(item, asyncio.Future):
                self._post(_resolve, item)
                continue
            try:
                if item == b"":
                    self.chan.shutdown_write()
                else:
                    self.chan.sendall(item)
            except (OSError, EOFError, paramiko.SSHException):
                pass  # the channel closed: what is left is lost, as with a socket

    def send(self, data: bytes) -> None:
        if data:
            self._out.put(data)

    def send_eof(self) -> None:
        self._out.put(b"")

    async def drain(self) -> None:
        marker: asyncio.Future[None] = self.loop.create_future()
        self._out.put(marker)
        await marker

    async def close(self) -> None:
        """Close the channel; both threads end (the reader at EOF, the writer at the sentinel)."""
        self._out.put(None)
        self.chan.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.ended), CLOSE_GRACE)


class ParamikoProcess:
    """The remote command on a PTY; output arrives through a queue, so ``read`` is cancel-safe."""

    def __init__(self, chan: Any, threads: _Threads) -> None:
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._eof = False
        self._chan = chan
        self._threads = threads
        self._pipe = _Pipe(chan, threads, self._queue.put_nowait, "pty")

    async def read(self) -> bytes:
        """Next chunk of merged output, ``b""`` at the end."""
        if self._eof:
            return b""
        chunk = await self._queue.get()
        self._eof = not chunk
        return chunk

    def write(self, data: bytes) -> None:
        """Send bytes to the remote PTY."""
        self._pipe.send(data)

    def interrupt(self) -> None:
        """Ctrl-C through the PTY: the remote line discipline turns it into SIGINT."""
        self.write(b"\x03")

    async def wait(self) -> int | None:
        """The remote exit status; ``None`` if it died by a signal or the link broke."""
        status: int = await self._threads.call(self._chan.recv_exit_status, "wait")
        return None if status < 0 else status

    async def close(self) -> None:
        """Interrupt the remote if it still runs, then close the session (SIGHUP there)."""
        if not self._chan.closed and not self._chan.exit_status_ready():
            self.interrupt()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pipe.ended), CLOSE_GRACE)
        await self._pipe.close()


class ParamikoChannel:
    """A direct-tcpip channel; a refused one reads as EOF and keeps the server's reason."""

    def __init__(self, pipe_factory: Callable[[asyncio.StreamReader], _Pipe] | None, why: str):
        self.reader = asyncio.StreamReader()
        self._refused = why
        self._pipe = pipe_factory(self.reader) if pipe_factory else None
        if self._pipe is None:
            self.reader.feed_eof()

    def write(self, data: bytes) -> None:
        """Queue bytes to the remote end (dropped if the channel was refused)."""
        if self._pipe is not None:
            self._pipe.send(data)

    async def drain(self) -> None:
        """Wait until the writer thread handed the bytes to paramiko."""
        if self._pipe is not None:
            await self._pipe.drain()

    def write_eof(self) -> None:
        """Half-close towards the remote."""
        if self._pipe is not None:
            self._pipe.send_eof()

    async def refusal(self) -> str | None:
        """The server's refusal (``administratively prohibited: …`` / ``connect failed: …``)."""
        return self._refused or None

    async def close(self) -> None:
        """Close the channel and let its threads end."""
        if self._pipe is not None:
            await self._pipe.close()


def _feeder(reader: asyncio.StreamReader) -> Callable[[bytes], None]:
    """Feed chunks into ``reader``; an empty chunk is EOF."""

    def feed(chunk: bytes) -> None:
        if chunk:
            reader.feed_data(chunk)
        elif not reader.at_eof():
            reader.feed_eof()

    return feed


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
        self._threads = _Threads()
        self._transports: list[Any] = []
        self._hop_specs: list[str] = []  # the chain's names, as _transports
        self._pipes: list[_Pipe] = []
        self._stop = threading.Event()
        self.prompter = Prompter()
        self._library_log: LibraryLog | None = None

    @property
    def transport(self) -> Any:
        """The paramiko Transport to the target (after ``connect``)."""
        if not self._transports:
            raise RuntimeError("not connected")
        return self._transports[-1]

    # -- connecting ----------------------------------------------------------------------

    def _configs(self) -> tuple[Any, Any]:
        """(config for the target, with ``-o``/``-i`` first; config for jump hops)."""
        path = self.target.ssh_config or Path("~/.ssh/config").expanduser()
        # os.path.isfile: an unreadable ~/.ssh is skipped as ssh skips it, not an error.
        text = path.read_text(encoding="utf-8") if os.path.isfile(path) else ""
        if self.target.ssh_config is not None and not os.path.isfile(path):
            raise UsageError(f"ssh config file {path} not found")
        lines = []
        for option in self.target.options:
            key, sep, value = option.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"invalid ssh option {option!r} (expected Key=Value)")
            lines.append(f"{key.strip()} {value.strip()}")
        lines += [f'IdentityFile "{identity}"' for identity in self.target.identity]
        # Lines before any Host block apply to every host, and the first value wins.
        return (
            paramiko.SSHConfig.from_text("\n".join([*lines, text])),
            paramiko.SSHConfig.from_text(text),
        )

    async def connect(
        self, *, asker: Asker | None = None, debug_log: Callable[[str], None] | None = None
    ) -> None:
        """Open the hops (``-J`` or the config's ProxyJump) and the target; authenticate each.

        ``asker``: passwords, codes, passphrases and host keys are asked through the flow
        (display paused). ``debug_log`` (``-vv``): paramiko's own debug log goes there until
        ``close``.
        """
        if debug_log is not None:
            self._library_log = LibraryLog("paramiko", debug_log)
        if asker is not None:
            self.prompter.bind(asker)
        target_config, hop_config = self._configs()
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
        self._threads.start(self._keepalive, "keepalive")

    async def open_hops(self, *, asker: Asker | None = None) -> None:
        """A fleet's first pass: open (or find) this host's shared jump chain, nothing else."""
        if self.hops is None:
            return
        if asker is not None:
            self.prompter.bind(asker)
        await self._shared_chain(*self._configs())

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
            settings = _Effective(looked, host, port or spec_port, login or user)
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

    def _open(self, eff: _Effective, tunnel: Any, via: str | None = None) -> Any:
        """Blocking: socket, key exchange, host-key check, then authentication (``via``: the
        jump host ``tunnel`` leads to, for messages)."""
        _refuse_unsupported(eff)
        known = _KnownHosts(eff, self.target.ssh_config is None)
        if tunnel is not None:
            try:
                sock: Any = tunnel.open_channel(
                    "direct-tcpip",
                    (eff.hostname, eff.port),
                    ("127.0.0.1", 0),
                    timeout=self.connect_timeout,
                )
            except paramiko.ChannelException as exc:
                reason = unreachable_from(via, refusal_message(exc.code, exc.text))
                raise SSHError(f"cannot connect to {eff.alias}: {reason}", host=eff.alias) from None
        else:
            try:
                sock = None
                if self.head_start is not None:
                    sock = self.head_start.take_socket(eff.hostname, eff.port, self.connect_timeout)
                if sock is None:  # not opened during the imports (or to another address)
                    sock = socket.create_connection((eff.hostname, eff.port), self.connect_timeout)
                # Small SSH packets go out at once (asyncio does this for asyncssh too): with
                # Nagle, a packet written while the previous one is unacknowledged waits for the
                # server's delayed ACK, ~40 ms each time during the handshake.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                reason = os_error_reason(exc, eff.hostname, eff.port)
                raise SSHError(f"cannot connect to {eff.alias}: {reason}", host=eff.alias) from None
        conn = paramiko.Transport(sock)
        self._threads.threads.append(conn)  # paramiko's own thread: close() joins it too
        try:
            conn.banner_timeout = self.connect_timeout
            conn.auth_timeout = self.connect_timeout if self.batch else 600
            known.prefer(conn)
            try:
                conn.start_client(timeout=self.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
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
            self._authenticate(conn, eff)
        except BaseException:
            conn.close()
            raise
        return conn

    def _authenticate(self, conn: Any, eff: _Effective) -> None:
        """Blocking: keys (agent, files), then keyboard-interactive/password if the server allows.

        Keys go first and "none" only after they failed: paramiko re-requests the userauth
        service for every attempt, which OpenSSH accepts but stricter servers answer with a
        disconnect, so the usual case should need one attempt only. Where the config turns
        keys off, the first attempt is already the prompt the config allows.
        """
        enabled = [m for m, option in _METHOD_OPTIONS if _config_allows(eff, option)]
        keys_allowed = "publickey" in enabled
        for key in _keys(eff, None if self.batch else self.prompter) if keys_allowed else []:
            try:
                if not conn.auth_publickey(eff.user, key):
                    return
            except paramiko.BadAuthenticationType:
                break  # the server takes no keys at all
            except paramiko.AuthenticationException:
                if not conn.is_active():
                    break
        allowed = self._allowed(conn, eff) if keys_allowed else enabled
        others = [m for m in ("keyboard-interactive", "password") if m in allowed and m in enabled]
        if others and self.batch:
            message, hint = batch_prompt_refusal(eff.alias, others)
            raise SSHError(message, host=eff.alias, hint=hint)
        with contextlib.suppress(paramiko.AuthenticationException):
            if "keyboard-interactive" in others and not conn.auth_interactive(
                eff.user, partial(_ask_all, self.prompter)
            ):
                return
            if "password" in others:
                secret = self.prompter.ask_blocking(f"{eff.user}@{eff.alias}'s password: ")
                if secret is not None and not conn.auth_password(eff.user, secret):
                    return
        listed = f" (the server allows: {', '.join(allowed)})" if allowed else ""
        raise SSHError(
            f"SSH authentication to {eff.alias} failed{listed}",
            host=eff.alias,
            hint="check `ssh HOST true` works with the same options",
        )

    @staticmethod
    def _allowed(conn: Any, eff: _Effective) -> list[str]:
        """The methods the server still allows (asked with "none"; empty if it hung up)."""
        if not conn.is_active():
            return []
        try:
            conn.auth_none(eff.user)
        except paramiko.BadAuthenticationType as exc:
            return list(exc.allowed_types)
        except (paramiko.SSHException, OSError, EOFError):
            return []
        return []

    def _keepalive(self) -> None:
        """Probe the target every interval; no answer to several probes means the link is dead.

        paramiko's own keepalive expects no reply, so it cannot notice a dead link.
        """
        conn = self.transport
        while not self._stop.wait(self.keepalive_interval):
            answered = threading.Event()

            def probe(answered: threading.Event = answered) -> None:
                with contextlib.suppress(Exception):
                    conn.global_request("keepalive@openssh.com", wait=True)
                answered.set()

            prober = self._threads.start(probe, "probe")
            if not answered.wait(self.keepalive_interval * KEEPALIVE_COUNT_MAX):
                if not self._stop.is_set():
                    conn.close()  # channels then read EOF and exit statuses become None
                prober.join(CLOSE_GRACE)
                return
            if not conn.is_active():
                return

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
        except (paramiko.SSHException, OSError, EOFError) as exc:
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
        except (paramiko.SSHException, OSError, EOFError) as exc:
            return ParamikoChannel(None, untrusted(f"open failed: {exc}"))

        def pipe(reader: asyncio.StreamReader) -> _Pipe:
            made = _Pipe(chan, self._threads, _feeder(reader), "channel")
            self._pipes.append(made)
            return made

        return ParamikoChannel(pipe, "")

    async def exec(
        self, command: str, *, stdin: bytes = b"", timeout: float, limit: int = EXEC_OUTPUT_LIMIT
    ) -> ExecResult:
        """Run a short command without a PTY; keep at most ``limit`` bytes of each stream."""
        holder: list[Any] = []

        def run() -> ExecResult:
            chan = self.transport.open_session(timeout=self.connect_timeout)
            holder.append(chan)
            chan.settimeout(timeout)
            chan.exec_command(command)
            out, err = Bounded(limit), Bounded(limit)

            def read_stderr() -> None:
                # stderr has its own reader so a chatty stderr cannot stall stdout's window.
                with contextlib.suppress(OSError, paramiko.SSHException):
                    for chunk in iter(lambda: chan.recv_stderr(CHUNK), b""):
                        err.add(chunk)

            errors = self._threads.start(read_stderr, "exec-stderr")
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            for chunk in iter(lambda: chan.recv(CHUNK), b""):
                out.add(chunk)
            errors.join(timeout)
            status = chan.recv_exit_status()
            chan.close()
            cut = out.cut or err.cut
            return ExecResult(None if status < 0 else status, out.value(), err.value(), cut)

        try:
            return await asyncio.wait_for(self._threads.call(run, "exec"), timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"remote command failed to run: {exc}", host=self.target.host) from exc
        finally:
            for chan in holder:
                chan.close()

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
            await self._threads.call(conn.close, "close")
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


class _Effective:
    """One host's settings after the config lookup and the command-line overrides."""

    def __init__(self, looked: Any, alias: str, port: int | None, user: str | None) -> None:
        self.looked = looked
        self.alias = alias
        self.hostname: str = looked.get("hostname", alias)
        self.port: int = port or int(looked.get("port", 22))
        self.user: str = user or looked.get("user") or getpass.getuser()
        self.key_alias: str | None = looked.get("hostkeyalias")

    def files(self, option: str, default: Sequence[str]) -> list[str]:
        """A whitespace-separated file list option (``none`` → empty), ``~`` expanded."""
        value = self.looked.get(option)
        names = value.split() if isinstance(value, str) else list(value or default)
        return [os.path.expanduser(n) for n in names if n.lower() != "none"]


def _refuse_unsupported(eff: _Effective) -> None:
    """Config features paramiko cannot honour: stop with a UsageError rather than ignore them."""
    command = eff.looked.get("proxycommand")
    if command and command.strip().lower() != "none":
        _unsupported("ProxyCommand from the ssh config")
    agent = eff.looked.get("identityagent")
    if agent and agent.strip().lower() not in ("none", "ssh_auth_sock", "$ssh_auth_sock"):
        _unsupported("IdentityAgent")


def _unsupported(feature: str) -> None:
    raise UsageError(f"the paramiko backend does not support {feature}", hint=OTHER_BACKENDS)


class _KnownHosts:
    """The user's known_hosts for one host, judged as ssh judges it (tunnelauth.knownhosts)."""

    def __init__(self, eff: _Effective, system_config: bool) -> None:
        self.alias = eff.alias
        self.system_config = system_config  # ssh reads /etc/ssh/ssh_config unless -F
        self.user = eff.files("userknownhostsfile", knownhosts.DEFAULT_USER_FILES)
        system = eff.files("globalknownhostsfile", knownhosts.DEFAULT_GLOBAL_FILES)
        entries = knownhosts.read([*self.user, *system])
        self.host = knownhosts.for_host(entries, eff.hostname, eff.port, eff.key_alias)

    def prefer(self, conn: Any) -> None:
        """Ask for a host key type known_hosts has, as ssh does, so a known host is not 'new'."""
        listed = {knownhosts.blob_type(blob) for blob in self.host.trusted}
        if "ssh-rsa" in listed:
            listed |= {"rsa-sha2-512", "rsa-sha2-256"}
        options = conn.get_security_options()
        known = [t for t in options.key_types if t in listed]
        options.key_types = known + [t for t in options.key_types if t not in known]

    def check(
        self,
        key: Any,
        eff: _Effective,
        *,
        batch: bool,
        ask: Callable[[str, str], bool] = hostkeys.ask_terminal,
    ) -> None:
        """Accept a known key, or a new one the user's policy accepts; else raise."""
        verdict = self.host.judge(key.asbytes())
        if verdict is knownhosts.Verdict.KNOWN:
            return
        hint = ""
        if verdict is knownhosts.Verdict.UNKNOWN:
            policy = hostkeys.normalize_policy(
                eff.looked.get("stricthostkeychecking"), accept_new=False
            )
            if policy == "ask" and hostkeys.never_asks(eff.looked.get("batchmode")):
                policy = "yes"  # the user's BatchMode: ssh would refuse rather than ask
            if not self.user:
                policy = "yes"  # `UserKnownHostsFile none`: ssh cannot record it, so refuses
            fingerprint = key.fingerprint
            if hostkeys.decide(
                policy,
                batch=batch,
                host=self.host.name,
                key_type=key.get_name(),
                fingerprint=fingerprint,
                ask=ask,
            ):
                hashed = knownhosts.wants_hashing(
                    eff.looked.get("hashknownhosts"), eff.alias, system=self.system_config
                )
                line = f"{key.get_name()} {key.get_base64()}"
                knownhosts.record(self.user, self.host.name, line, hashed=hashed)
                return
            if batch and policy == "ask":
                hint = "; a batch run cannot ask (--accept-new adds a new key)"
            if self.host.authorities:
                hint += "; the paramiko backend does not check @cert-authority host certificates"
        raise HostKeyError(
            knownhosts.refusal(verdict, self.alias, self.host.name, key.fingerprint) + hint,
            host=self.alias,
            hint="check the key with the host's owner, then add it to known_hosts "
            "(tunnelauth never turns host-key checking off)",
        )


def _key_type(path: Path) -> str:
    """The key type of a private key file, read from its ``.pub`` or its OpenSSH header."""
    pub = path.with_name(path.name + ".pub")
    with contextlib.suppress(OSError, IndexError):
        return pub.read_text(encoding="utf-8").split()[0]
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = path.read_text(encoding="utf-8")
        if "BEGIN OPENSSH PRIVATE KEY" in text:
            body = "".join(line for line in text.splitlines() if not line.startswith("-----"))
            blob = base64.b64decode(body)
            # magic, cipher, kdf, kdf options, key count, then the public key whose first
            # field is its type: all unencrypted even in a passphrase-protected file.
            offset = len(b"openssh-key-v1\0")
            for _ in range(3):
                offset += 4 + int.from_bytes(blob[offset : offset + 4], "big")
            offset += 4 + 4  # key count, public key length
            size = int.from_bytes(blob[offset : offset + 4], "big")
            return blob[offset + 4 : offset + 4 + size].decode("ascii", "replace")
    return ""


# Each authentication method and the ssh config option that turns it off.
_METHOD_OPTIONS = (
    ("publickey", "pubkeyauthentication"),
    ("keyboard-interactive", "kbdinteractiveauthentication"),
    ("password", "passwordauthentication"),
)


def _config_allows(eff: _Effective, option: str) -> bool:
    """Whether the config leaves an authentication method on (ssh's default: yes)."""
    return str(eff.looked.get(option, "yes")).strip().lower() not in ("no", "false")


def _keys(eff: _Effective, prompter: Prompter | None) -> list[Any]:
    """Agent keys (unless IdentitiesOnly), then IdentityFile keys (or the default files).

    An encrypted key's passphrase is asked through ``prompter`` (none in batch runs).
    """
    keys: list[Any] = []
    only = str(eff.looked.get("identitiesonly", "no")).lower() == "yes"
    if not only and os.environ.get("SSH_AUTH_SOCK"):
        with contextlib.suppress(paramiko.SSHException, OSError):
            keys += list(paramiko.Agent().get_keys())
    files = eff.files("identityfile", [f"~/.ssh/{name}" for name in DEFAULT_KEYS])
    for name in files:
        path = Path(name)
        if not os.path.isfile(path):
            continue
        if _key_type(path).startswith("sk-"):
            _unsupported(f"FIDO security-key (sk-) keys ({path})")
        try:
            keys.append(paramiko.PKey.from_path(path))
        except (paramiko.PasswordRequiredException, TypeError):
            # TypeError: paramiko 3.2+ reads OpenSSH-format keys through cryptography, which
            # says "password-protected" that way.
            secret = None
            if prompter is not None:
                secret = prompter.ask_blocking(f"Enter passphrase for key '{path}': ")
            if secret is not None:  # a wrong passphrase skips the key, as ssh does at the end
                with contextlib.suppress(paramiko.SSHException, ValueError):
                    # bytes, whatever the annotation says: cryptography refuses a str here
                    keys.append(paramiko.PKey.from_path(path, secret.encode()))  # type: ignore[arg-type]
        except (paramiko.SSHException, OSError, ValueError):
            continue  # a file paramiko cannot read is skipped, as ssh skips unusable keys
    return keys


def _ask_all(
    prompter: Prompter, title: str, instructions: str, prompts: Sequence[tuple[str, bool]]
) -> list[str]:
    """keyboard-interactive: ask each prompt (a question left unanswered ends the method)."""
    answers = []
    intro = "\n".join(part for part in (title, instructions) if part)
    for prompt, echo in prompts:
        text = f"{intro}\n{prompt}" if intro else prompt
        intro = ""
        answer = prompter.ask_blocking(text, CONFIRM if echo else SECRET)
        if answer is None:
            raise paramiko.AuthenticationException("keyboard-interactive question unanswered")
        answers.append(answer)
    return answers
