"""The Transport base class every SSH backend implements, and what its sessions look like."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from tunnelauth.askpass import Asker
    from tunnelauth.environment import Environment
    from tunnelauth.transports.choice import Choice

# Bytes of each stream of a short command kept by default: above the relay's response limit
# (4 MiB), so a relayed page arrives whole, yet a remote printing without end costs no more.
EXEC_OUTPUT_LIMIT = 5 * 1024 * 1024


@dataclass(frozen=True)
class ExecResult:
    """The outcome of a short command run without a PTY."""

    exit_status: int | None
    stdout: bytes
    stderr: bytes
    cut: bool = False  # a stream printed more than the limit; only its start was kept


class Bounded:
    """Keeps the first ``limit`` bytes of a stream and notes whether more arrived."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data = bytearray()
        self.cut = False

    def add(self, chunk: bytes) -> None:
        """Keep what fits; the rest is dropped (the stream is still read to its end)."""
        room = self.limit - len(self._data)
        if len(chunk) > room:
            self.cut = True
        if room > 0:
            self._data += chunk[:room]

    def value(self) -> bytes:
        """What was kept."""
        return bytes(self._data)


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


class Transport(abc.ABC):
    """One SSH connection to the host: a remote process, channels and short execs over it."""

    name: ClassVar[str]
    # Why this backend was chosen (``resolve.make`` sets it; shown at -v).
    choice: Choice | None = None
    # The target's ssh options as ``ssh -G`` resolved them (lower-case names) once connected;
    # empty for a backend that reads the ssh config itself (asyncssh, paramiko).
    config: Mapping[str, str] = MappingProxyType({})
    # Whether a live ControlMaster of the user's carries the connection (then left running).
    reused_master: bool = False

    @abc.abstractmethod
    async def connect(
        self,
        *,
        env: Environment,
        asker: Asker | None = None,
        debug_log: Callable[[str], None] | None = None,
    ) -> None:
        """Open and authenticate the connection (or adopt a live ControlMaster).

        ``env`` is the process's environment as the command read it (the agent's socket, the
        variables ssh runs with, stdin for a question asked without a flow). ``asker``
        answers the questions SSH asks (passwords, codes, passphrases, host keys) in
        interactive runs; ``debug_log`` receives the SSH client's debug lines (``-vv``) until
        ``close``.
        """

    @abc.abstractmethod
    async def open_hops(self, *, env: Environment, asker: Asker | None = None) -> None:
        """A fleet's first pass: open (or find) this host's shared jump chain, nothing else.

        ``env`` as for ``connect``; ``asker`` answers the jump hosts' questions.
        """

    async def alive(self) -> bool:
        """Whether the connection still answers (a backend without a check: assume so)."""
        return True

    @abc.abstractmethod
    async def start(self, command: str) -> RemoteProcess:
        """Run ``command`` (a shell command line for the remote) with a PTY."""

    @abc.abstractmethod
    async def open_channel(self, host: str, port: int) -> Channel:
        """Open a direct-tcpip channel to ``host:port`` as seen from the remote."""

    @abc.abstractmethod
    async def exec(
        self, command: str, *, stdin: bytes = b"", timeout: float, limit: int = EXEC_OUTPUT_LIMIT
    ) -> ExecResult:
        """Run a short command without a PTY; keep at most ``limit`` bytes of each stream."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close everything this transport opened (never a ControlMaster it only adopted)."""
