"""The OpenSSH transport's sessions: ssh clients run as multiplexing clients of the master.

The remote command on a PTY (``-tt``), ``-W`` channels for the browser's callback, short exec
runs with bounded output, and the process-group ends that leave no ssh process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunnelauth.transports import sshargs
from tunnelauth.transports.base import EXEC_OUTPUT_LIMIT, Bounded, ExecResult
from tunnelauth.transports.openssh_log import STDERR_LIMIT, log_tail

if TYPE_CHECKING:
    pass

PTY_ROWS = 50


async def run_ssh(
    argv: Sequence[str], *, timeout: float, stdin: bytes = b"", limit: int = EXEC_OUTPUT_LIMIT
) -> ExecResult:
    """Run a short local command with a deadline; it is killed and reaped if the deadline passes.

    At most ``limit`` bytes of stdout and of stderr are kept; the rest is read and dropped.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    out, err = Bounded(limit), Bounded(limit)

    async def collect() -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin)
            await proc.stdin.drain()
        proc.stdin.close()
        await asyncio.gather(drain_into(proc.stdout, out), drain_into(proc.stderr, err))
        await proc.wait()

    try:
        await asyncio.wait_for(collect(), timeout)
    except BaseException:
        kill_group(proc)
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
        raise
    return ExecResult(proc.returncode, out.value(), err.value(), out.cut or err.cut)


async def drain_into(stream: asyncio.StreamReader, into: Bounded) -> None:
    """Read ``stream`` to its end, keeping what ``into`` has room for."""
    while chunk := await stream.read(65536):
        into.add(chunk)


class Launched:
    """The master's first ssh process (``master.spawn``), seen the way asyncio's are."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited, else None."""
        return self._popen.poll()

    async def wait(self) -> int:
        """Wait for it without blocking the event loop."""
        return await asyncio.to_thread(self._popen.wait)


def kill_group(proc: asyncio.subprocess.Process | Launched, sig: int = signal.SIGKILL) -> None:
    """Signal the process group of a child started with ``start_new_session``."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


async def reap(proc: asyncio.subprocess.Process, grace: float) -> None:
    """Wait ``grace`` seconds for a child to exit, then end its group and reap it."""
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        kill_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 2.0)
        except asyncio.TimeoutError:
            kill_group(proc)
            await proc.wait()


class StderrTail:
    """Collects the tail of a child's stderr in the background."""

    def __init__(self, stream: asyncio.StreamReader | None) -> None:
        self._data = bytearray()
        self._task = asyncio.ensure_future(self._pump(stream)) if stream else None

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self._data += chunk
            del self._data[:-STDERR_LIMIT]

    async def text(self, timeout: float = 1.0) -> str:
        """The collected text, after the stream ended (or ``timeout`` passed)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return self._data.decode("utf-8", "replace")

    def cancel(self) -> None:
        """Stop collecting."""
        if self._task is not None:
            self._task.cancel()


class OpenSSHProcess:
    """The remote command, run as ``ssh -tt`` over the master.

    ssh's stdin is a local pseudo-terminal, not a pipe: a multiplexing client with a forced
    remote PTY forwards nothing from a pipe, and the local PTY also gives the remote its size.
    """

    def __init__(self, proc: asyncio.subprocess.Process, pty_fd: int) -> None:
        self._proc = proc
        self._pty = pty_fd
        self._stderr = StderrTail(proc.stderr)
        assert proc.stdout is not None
        self._stdout = proc.stdout

    async def read(self) -> bytes:
        """Next chunk of the merged remote output, ``b""`` at the end."""
        return await self._stdout.read(65536)

    def write(self, data: bytes) -> None:
        """Send bytes to the remote PTY (small writes: prompt answers and Ctrl-C)."""
        if self._pty < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._pty, data)

    def interrupt(self) -> None:
        """Ctrl-C through the PTY: the remote line discipline turns it into SIGINT."""
        self.write(b"\x03")

    async def wait(self) -> int | None:
        """The remote exit status; ``None`` when ssh itself failed (255) or was killed."""
        code = await self._proc.wait()
        return None if code < 0 or code == 255 else code

    async def stderr_text(self) -> str:
        """What the local ssh client printed (its own errors, not the remote's stderr)."""
        return await self._stderr.text()

    async def close(self) -> None:
        """Interrupt the remote if it still runs, then end the session (SIGHUP on the remote)."""
        if self._proc.returncode is None:
            self.interrupt()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 2.0)
        if self._proc.returncode is None:
            kill_group(self._proc, signal.SIGTERM)
        await reap(self._proc, 2.0)
        self._stderr.cancel()
        if self._pty >= 0:
            os.close(self._pty)
            self._pty = -1


class OpenSSHChannel:
    """A direct-tcpip channel carried by an ``ssh -W`` client of the master."""

    def __init__(self, proc: asyncio.subprocess.Process, master_log: str | None = None) -> None:
        self._proc = proc
        self._master_log = master_log
        assert proc.stdout is not None and proc.stdin is not None
        self.reader: asyncio.StreamReader = proc.stdout
        self._stdin = proc.stdin
        self._stderr = StderrTail(proc.stderr)

    def write(self, data: bytes) -> None:
        """Queue bytes to the remote end."""
        self._stdin.write(data)

    async def drain(self) -> None:
        """Wait until the bytes are handed to ssh."""
        await self._stdin.drain()

    def write_eof(self) -> None:
        """Half-close towards the remote."""
        if self._stdin.can_write_eof():
            self._stdin.write_eof()

    async def refusal(self) -> str | None:
        """The server's refusal, read from ssh's stderr once the client has ended."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._proc.wait(), 5.0)
        message = sshargs.channel_refusal(await self._stderr.text())
        if message and "session open refused" in message.lower() and self._master_log:
            # A mux client hears only "refused"; our own master logged the server's reason.
            message = sshargs.last_open_failure(log_tail(self._master_log)) or message
        return message

    async def close(self) -> None:
        """Close the channel and reap its ssh client."""
        with contextlib.suppress(OSError):
            self._stdin.close()
        await reap(self._proc, 2.0)
        self._stderr.cancel()
