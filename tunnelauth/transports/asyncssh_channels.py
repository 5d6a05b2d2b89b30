"""The asyncssh transport's channels: the remote command on a PTY, direct-tcpip, exec."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncssh

from tunnelauth.transports.base import Bounded, ExecResult

CLOSE_GRACE = 2.0  # seconds the remote gets to exit after Ctrl-C before the session is ended
QUEUE_CHUNKS = 64  # output chunks buffered before the SSH window stops the remote


class AsyncSSHProcess:
    """The remote command on a PTY; output is pumped into a queue so ``read`` is cancel-safe."""

    def __init__(self, proc: Any) -> None:
        self._proc = proc
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_CHUNKS)
        self._ended = False
        self._pump_task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while chunk := await self._proc.stdout.read(65536):
                await self._queue.put(chunk)
        except (asyncssh.Error, OSError):
            pass  # the link broke: the output simply ends, wait() reports None
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(b"")

    async def read(self) -> bytes:
        """Next chunk of merged output, ``b""`` at the end."""
        if self._ended:
            return b""
        chunk = await self._queue.get()
        if not chunk:
            self._ended = True
        return chunk

    def write(self, data: bytes) -> None:
        """Send bytes to the remote PTY."""
        if not self._proc.is_closing():
            with contextlib.suppress(asyncssh.Error, OSError):
                self._proc.stdin.write(data)

    def interrupt(self) -> None:
        """Ctrl-C through the PTY: the remote line discipline turns it into SIGINT."""
        self.write(b"\x03")

    async def wait(self) -> int | None:
        """The remote exit status; ``None`` if it died by a signal or the link broke."""
        await self._proc.wait_closed()
        status = self._proc.exit_status
        return None if status is None or status < 0 else int(status)

    async def close(self) -> None:
        """Interrupt the remote if it still runs, then close the session (SIGHUP there)."""
        if not self._proc.is_closing():
            self.interrupt()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._proc.wait_closed()), CLOSE_GRACE)
        self._proc.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._proc.wait_closed(), CLOSE_GRACE)
        self._pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump_task


class TCPSession(asyncssh.SSHTCPSession[bytes]):
    """Feeds a direct-tcpip channel into an asyncio.StreamReader and tracks write flow control."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.writable = asyncio.Event()
        self.writable.set()

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.reader.feed_data(data)

    def eof_received(self) -> bool:
        self.reader.feed_eof()
        return False  # let asyncssh close our side once we finish writing

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reader.at_eof():
            self.reader.feed_eof()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class AsyncSSHChannel:
    """A direct-tcpip channel; a refused one reads as EOF and keeps the server's reason."""

    def __init__(
        self, chan: Any, session: TCPSession | None, reader: asyncio.StreamReader, refused: str
    ) -> None:
        self._chan = chan
        self._session = session
        self.reader = reader
        self._refused = refused

    def write(self, data: bytes) -> None:
        """Queue bytes to the remote end (dropped if the channel was refused or closed)."""
        if self._chan is not None and not self._chan.is_closing():
            self._chan.write(data)

    async def drain(self) -> None:
        """Wait until the SSH window accepts more."""
        if self._session is not None and self._chan is not None and not self._chan.is_closing():
            await self._session.writable.wait()

    def write_eof(self) -> None:
        """Half-close towards the remote."""
        if self._chan is not None and not self._chan.is_closing():
            with contextlib.suppress(asyncssh.Error, OSError):
                self._chan.write_eof()

    async def refusal(self) -> str | None:
        """The server's refusal (``administratively prohibited: …`` / ``connect failed: …``)."""
        return self._refused or None

    async def close(self) -> None:
        """Close the channel and wait until the server confirmed it."""
        if self._chan is not None:
            self._chan.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._chan.wait_closed(), CLOSE_GRACE)


async def run_exec(conn: Any, command: str, stdin: bytes, limit: int) -> ExecResult:
    """Run a short command without a PTY; keep at most ``limit`` bytes of each stream."""
    out, err = Bounded(limit), Bounded(limit)

    async def drain(stream: Any, into: Bounded) -> None:
        while chunk := await stream.read(65536):
            into.add(chunk)

    async def run() -> int | None:
        proc = await conn.create_process(command, encoding=None, request_pty=False)
        try:
            # A command that has already exited closes the channel: nothing to send.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, asyncssh.Error):
                proc.stdin.write(stdin)
                proc.stdin.write_eof()
            await asyncio.gather(drain(proc.stdout, out), drain(proc.stderr, err))
            completed = await proc.wait(check=False)
            status: int | None = completed.exit_status
            return status
        finally:
            proc.close()

    status = await run()
    return ExecResult(
        None if status is None or status < 0 else int(status),
        out.value(),
        err.value(),
        out.cut or err.cut,
    )
