"""The user's terminal: its saved modes, echo control for secrets, and reading one line.

Everything here works on stdin's file descriptor with termios. Echo is turned off only
while a secret is being typed (ECHONL stays on so Enter still moves to a new line), and the
modes saved when the run started are written back at every exit, errors included.
"""

from __future__ import annotations

import contextlib
import os
import termios
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunnelauth.environment import Environment

LINE_LIMIT = 4000  # longest line accepted; a canonical-mode PTY line holds at most 4095 bytes


class LineTooLong(ValueError):
    """The typed line is longer than a terminal line can carry."""


class Terminal:
    """stdin as a terminal: modes saved at creation, restored by ``restore``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved = termios.tcgetattr(fd)

    @classmethod
    def open(cls, env: Environment) -> Terminal | None:
        """The terminal on stdin as ``env`` found it, or None when stdin is not one."""
        if not env.stdin_tty:
            return None
        try:
            return cls(env.stdin_fd)
        except (OSError, ValueError, termios.error):
            return None

    def echo(self, on: bool) -> None:
        """Turn local echo on (as saved) or off (a secret is being typed)."""
        with contextlib.suppress(termios.error, OSError):
            attrs = termios.tcgetattr(self.fd)
            lflag = attrs[3]
            if on:
                lflag = (lflag & ~(termios.ECHO | termios.ECHONL)) | (
                    self.saved[3] & (termios.ECHO | termios.ECHONL)
                )
            else:
                lflag = (lflag & ~termios.ECHO) | termios.ECHONL
            if lflag != attrs[3]:
                attrs[3] = lflag
                termios.tcsetattr(self.fd, termios.TCSANOW, attrs)

    def restore(self) -> None:
        """Write back the modes saved at the start (a vanished terminal is left alone)."""
        with contextlib.suppress(termios.error, OSError):
            if termios.tcgetattr(self.fd) != self.saved:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    async def read_line(
        self, *, secret: bool, timeout: float, prompt: Callable[[], None] | None = None
    ) -> str | None:
        """One line typed by the user (None at end of input); echo is off for a secret.

        ``prompt`` draws the question. For a secret it runs only once echo is off, as getpass
        does: an answer typed the moment the question shows (by a person, expect or a password
        manager) is never echoed.
        """
        import asyncio  # here, not at the top: the entry point imports this module first

        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes] = loop.create_future()
        buffer = bytearray()

        def on_readable() -> None:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                chunk = b""
            buffer.extend(chunk)
            if (not chunk or b"\n" in chunk) and not done.done():
                done.set_result(bytes(buffer) if chunk else b"")

        if secret:
            self.echo(False)
        try:
            if prompt is not None:
                prompt()
            loop.add_reader(self.fd, on_readable)
            try:
                data = await asyncio.wait_for(done, timeout)
            finally:
                loop.remove_reader(self.fd)
        finally:
            if secret:
                self.echo(True)
        if not data:
            return None
        line = data.split(b"\n", 1)[0].rstrip(b"\r")
        if len(line) > LINE_LIMIT:
            raise LineTooLong(f"{len(line)} bytes")
        return line.decode("utf-8", "replace")


@contextlib.contextmanager
def modes_kept(env: Environment) -> Iterator[Terminal | None]:
    """Save the terminal's modes now and write them back when the block ends, however."""
    terminal = Terminal.open(env)
    try:
        yield terminal
    finally:
        if terminal is not None:
            terminal.restore()
