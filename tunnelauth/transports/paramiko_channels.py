"""The paramiko transport's sockets, threads and channels: the socket each connection runs over,
the PTY session, direct-tcpip, exec, keepalive.

paramiko blocks, so every call runs on a short-lived thread of ours, and each open channel has
one reader thread (feeding the event loop) and one writer thread; close() ends and joins them
all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import queue
import socket
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import paramiko

from tunnelauth.errors import SSHError
from tunnelauth.transports.base import Bounded, ExecResult
from tunnelauth.transports.hops import os_error_reason, refusal_message, unreachable_from

if TYPE_CHECKING:
    from tunnelauth.transports.paramiko_config import Effective

T = TypeVar("T")
CLOSE_GRACE = 2.0
JOIN_DEADLINE = 5.0
KEEPALIVE_COUNT_MAX = 3
CHUNK = 65536

# A socket the head start opened while paramiko imported: (host, port, timeout) -> it or None.
TakeSocket = Callable[[str, int, float], "socket.socket | None"]

# What paramiko raises when the link under a channel or connection is gone (a write to a dead
# socket is a bare EOFError).
LINK_ERRORS = (OSError, EOFError, paramiko.SSHException)


def close_quietly(closable: Any) -> None:
    """Blocking: close a paramiko channel or connection. One whose link already broke is as
    closed as it gets: that is no error, and what is closed after it must still be closed."""
    with contextlib.suppress(*LINK_ERRORS):
        closable.close()


def host_socket(
    eff: Effective, tunnel: Any, via: str | None, *, timeout: float, take: TakeSocket | None
) -> Any:
    """Blocking: the socket a connection to ``eff`` runs over.

    Through ``tunnel`` (the previous hop's Transport, ``via`` naming that hop for messages) a
    direct-tcpip channel; else a TCP connection, the head start's (``take``) if it dialled the
    same address.
    """
    if tunnel is not None:
        try:
            return HopSocket(
                tunnel.open_channel(
                    "direct-tcpip", (eff.hostname, eff.port), ("127.0.0.1", 0), timeout=timeout
                )
            )
        except paramiko.ChannelException as exc:
            reason = unreachable_from(via, refusal_message(exc.code, exc.text))
            raise SSHError(f"cannot connect to {eff.alias}: {reason}", host=eff.alias) from None
        except LINK_ERRORS as exc:
            said = f": {exc}" if str(exc) else ""  # a dead socket's EOFError says nothing
            reason = f"the connection to {via or 'the jump host'} broke{said}"
            raise SSHError(f"cannot connect to {eff.alias}: {reason}", host=eff.alias) from None
    try:
        sock = None if take is None else take(eff.hostname, eff.port, timeout)
        if sock is None:  # not opened during the imports (or to another address)
            sock = socket.create_connection((eff.hostname, eff.port), timeout)
        # Small SSH packets go out at once (asyncio does this for asyncssh too): with Nagle, a
        # packet written while the previous one is unacknowledged waits for the server's
        # delayed ACK, ~40 ms each time during the handshake.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        reason = os_error_reason(exc, eff.hostname, eff.port)
        raise SSHError(f"cannot connect to {eff.alias}: {reason}", host=eff.alias) from None
    return sock


class HopSocket:
    """A direct-tcpip channel through the previous hop, as the socket a connection runs over.

    paramiko checks that a channel is open, then sends outside the channel's lock. When a
    connection is closed (its socket closed) while another of its threads writes, that
    write can reach the hop after the channel's close. OpenSSH then ends the whole hop
    connection ("data packet referred to nonexistent channel"), and with it every other
    connection through that hop: a fleet's other hosts behind a shared bastion. Here a send
    and the close never overlap: the close waits for a send under way, and a send after the
    close fails as it does on a closed socket.
    """

    def __init__(self, chan: Any) -> None:
        self.chan = chan
        self._sending = threading.Lock()
        self._closing = False

    def send(self, data: bytes) -> int:
        with self._sending:
            if self._closing:
                raise OSError(errno.EBADF, "the channel through the jump host is closed")
            return int(self.chan.send(data))

    def recv(self, size: int) -> bytes:
        return bytes(self.chan.recv(size))

    def settimeout(self, timeout: float | None) -> None:
        self.chan.settimeout(timeout)

    @property
    def _closed(self) -> bool:  # what paramiko asks a socket (as Python's sockets have it)
        return self._closing or bool(self.chan.closed)

    def close(self) -> None:
        with self._sending:
            self._closing = True
        self.chan.close()


class Threads:
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


def resolve_future(future: asyncio.Future[None]) -> None:
    """Mark ``future`` done (on the loop thread) unless a waiter gave up on it."""
    if not future.done():
        future.set_result(None)


class Pipe:
    """Moves a paramiko channel's bytes to and from the event loop on two threads."""

    def __init__(
        self, chan: Any, threads: Threads, on_data: Callable[[bytes], None], name: str
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.chan = chan
        self._threads = threads
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
        except LINK_ERRORS:
            pass  # a broken link ends the output like EOF does
        finally:
            self._post(self._on_data, b"")
            self._post(resolve_future, self.ended)

    def _write(self) -> None:
        while (item := self._out.get()) is not None:
            if isinstance(item, asyncio.Future):
                self._post(resolve_future, item)
                continue
            try:
                if item == b"":
                    self.chan.shutdown_write()
                else:
                    self.chan.sendall(item)
            except LINK_ERRORS:
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
        # On a thread: paramiko's close may wait for the connection's lock (or a key
        # exchange), and it raises when the link under the channel already broke.
        await self._threads.call(partial(close_quietly, self.chan), "close")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.ended), CLOSE_GRACE)


class ParamikoProcess:
    """The remote command on a PTY; output arrives through a queue, so ``read`` is cancel-safe."""

    def __init__(self, chan: Any, threads: Threads) -> None:
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._eof = False
        self._chan = chan
        self._threads = threads
        self._pipe = Pipe(chan, threads, self._queue.put_nowait, "pty")

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

    def __init__(self, pipe_factory: Callable[[asyncio.StreamReader], Pipe] | None, why: str):
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


def feeder(reader: asyncio.StreamReader) -> Callable[[bytes], None]:
    """Feed chunks into ``reader``; an empty chunk is EOF."""

    def feed(chunk: bytes) -> None:
        if chunk:
            reader.feed_data(chunk)
        elif not reader.at_eof():
            reader.feed_eof()

    return feed


def run_exec(
    conn: Any,
    threads: Threads,
    holder: list[Any],
    command: str,
    *,
    stdin: bytes,
    timeout: float,
    limit: int,
    open_timeout: float,
) -> ExecResult:
    """Blocking: run ``command`` without a PTY, keeping at most ``limit`` bytes of each stream.

    The session goes into ``holder`` as soon as it exists, so the caller can close it.
    """
    chan = conn.open_session(timeout=open_timeout)
    holder.append(chan)
    chan.settimeout(timeout)
    chan.exec_command(command)
    out, err = Bounded(limit), Bounded(limit)

    def read_stderr() -> None:
        # stderr has its own reader so a chatty stderr cannot stall stdout's window.
        with contextlib.suppress(OSError, paramiko.SSHException):
            for chunk in iter(lambda: chan.recv_stderr(CHUNK), b""):
                err.add(chunk)

    errors = threads.start(read_stderr, "exec-stderr")
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


def keep_alive(conn: Any, threads: Threads, stop: threading.Event, interval: float) -> None:
    """Probe the target every interval; no answer to several probes means the link is dead.

    paramiko's own keepalive expects no reply, so it cannot notice a dead link.
    """
    while not stop.wait(interval):
        answered = threading.Event()

        def probe(answered: threading.Event = answered) -> None:
            with contextlib.suppress(Exception):
                conn.global_request("keepalive@openssh.com", wait=True)
            answered.set()

        prober = threads.start(probe, "probe")
        if not answered.wait(interval * KEEPALIVE_COUNT_MAX):
            if not stop.is_set():
                close_quietly(conn)  # channels then read EOF and exit statuses become None
            prober.join(CLOSE_GRACE)
            return
        if not conn.is_active():
            return
