"""The Transport protocol every SSH backend implements."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ExecResult:
    """The outcome of a short command run without a PTY."""

    exit_status: int | None
    stdout: bytes
    stderr: bytes


class RemoteProcess(Protocol):
    """A remote command running with a PTY (stdout and stderr arrive merged)."""

    async def read(self) -> bytes:
        """Next chunk of output; ``b""`` once the output has ended."""
        ...

    def write(self, data: bytes) -> None:
        """Send bytes to the remote PTY (the remote's stdin)."""
        ...

    def interrupt(self) -> None:
        """Send Ctrl-C through the PTY so the remote gets SIGINT."""
        ...

    async def wait(self) -> int | None:
        """Wait for the remote exit status (``None`` if it died by signal or the link broke)."""
        ...

    async def close(self) -> None:
        """End the session (the remote gets SIGHUP) and reap everything local."""
        ...


class Channel(Protocol):
    """A bidirectional byte stream to the remote's ``127.0.0.1:port``."""

    reader: asyncio.StreamReader

    def write(self, data: bytes) -> None:
        """Queue bytes to the remote end."""
        ...

    async def drain(self) -> None:
        """Wait until queued bytes are handed on."""
        ...

    def write_eof(self) -> None:
        """Half-close: the remote end sees EOF."""
        ...

    async def close(self) -> None:
        """Close the channel and reap what carried it."""
        ...

    async def refusal(self) -> str | None:
        """After the reader hit EOF with no data: the server's refusal message, if it refused."""
        ...


class Transport(Protocol):
    """One SSH connection to the host: a remote process, channels and short execs over it."""

    name: str

    async def connect(self) -> None:
        """Open and authenticate the connection (or adopt a live ControlMaster)."""
        ...

    async def start(self, command: str) -> RemoteProcess:
        """Run ``command`` (a shell command line for the remote) with a PTY."""
        ...

    async def open_channel(self, host: str, port: int) -> Channel:
        """Open a direct-tcpip channel to ``host:port`` as seen from the remote."""
        ...

    async def exec(self, command: str, *, stdin: bytes = b"", timeout: float) -> ExecResult:
        """Run a short command without a PTY and collect its output."""
        ...

    async def close(self) -> None:
        """Close everything this transport opened (never a ControlMaster it only adopted)."""
        ...
