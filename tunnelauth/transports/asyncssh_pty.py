"""asyncssh sessions that send the PTY request and the command in one flight, as OpenSSH does.

asyncssh's ``SSHClientChannel.create`` sends ``pty-req`` and waits for its reply before it sends
``exec``. That is one more round trip to the target before the login starts than OpenSSH pays
(it sends both and reads the two replies in order): ~100 ms through a jump host at 50 ms per
hop. While ``pty_in_one_flight()`` is active, sessions are opened with a channel class that
sends ``pty-req`` with ``want_reply`` and goes straight on to the command; the two replies
arrive in order, and a refused PTY still fails the session with ``OPEN_REQUEST_PTY_FAILED``.
The command, already sent, finds no terminal and exits at once (see
``remote.wrapper_script``); the session fails only once the remote reports that end (its exit
status, or the channel's close, within ``NO_PTY_EXIT_WAIT``), so nothing the command started
outlives the run.

It relies on internals of asyncssh's channel (the methods ``_make_request``, ``_send_request``
and the exit requests' handlers, the attributes ``_request_waiters``, ``_send_chan`` and
``_loop``) and on ``asyncssh.connection`` naming the class it builds sessions with.
``supported()`` checks the class and its methods, the channel checks the attributes; where one
is missing the stock behaviour is used and the session simply costs the extra round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import asyncssh
import asyncssh.connection

_NAME = "SSHClientChannel"  # the class asyncssh.connection builds client sessions with
_STOCK: Any = getattr(asyncssh.connection, _NAME, None)
_NEEDED = (
    "_make_request",
    "_send_request",
    "create",
    "wait_closed",
    "_process_exit_status_request",
    "_process_exit_signal_request",
)
_COMMANDS = (b"exec", b"shell", b"subsystem")
NO_PTY_EXIT_WAIT = 5.0  # how long a refused PTY's command is given to end before the close


def supported() -> bool:
    """Whether this asyncssh has the internals the pipelining class relies on."""
    return _STOCK is not None and all(callable(getattr(_STOCK, n, None)) for n in _NEEDED)


def _pipelining_class(stock: Any) -> Any:
    class OneFlightChannel(stock):  # type: ignore[misc, valid-type]
        """Sends ``pty-req`` without waiting; checks its reply once the command's has come."""

        _pty_reply: Any = None
        _command_ended: asyncio.Event | None = None  # set from the pty-req on

        def _process_exit_status_request(self, packet: Any) -> Any:
            result = super()._process_exit_status_request(packet)
            if self._command_ended is not None:
                self._command_ended.set()
            return result

        def _process_exit_signal_request(self, packet: Any) -> Any:
            result = super()._process_exit_signal_request(packet)
            if self._command_ended is not None:
                self._command_ended.set()
            return result

        async def _command_end(self) -> None:
            """The refused PTY's command ended (its exit came, or the channel closed)."""
            assert self._command_ended is not None
            waits = [
                asyncio.ensure_future(self._command_ended.wait()),
                asyncio.ensure_future(self.wait_closed()),
            ]
            try:
                await asyncio.wait(
                    waits, timeout=NO_PTY_EXIT_WAIT, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for wait in waits:
                    wait.cancel()

        async def _make_request(self, request: bytes, *args: bytes) -> bool | None:
            waiters = getattr(self, "_request_waiters", None)
            open_ = getattr(self, "_send_chan", None) is not None and hasattr(self, "_loop")
            if request == b"pty-req" and self._pty_reply is None and open_ and waiters is not None:
                reply = self._loop.create_future()
                waiters.append(reply)
                self._send_request(request, *args, want_reply=True)
                self._pty_reply = reply
                self._command_ended = asyncio.Event()
                return True
            result: bool | None = await super()._make_request(request, *args)
            if request in _COMMANDS and self._pty_reply is not None:
                pty_granted = await self._pty_reply  # the replies come in order: already here
                self._pty_reply = None
                if not pty_granted:
                    # The command runs without a terminal and ends itself: let it, then close.
                    await self._command_end()
                    self.close()
                    raise asyncssh.ChannelOpenError(
                        asyncssh.OPEN_REQUEST_PTY_FAILED, "PTY request failed"
                    )
            return result

    return OneFlightChannel


_ONE_FLIGHT: Any = _pipelining_class(_STOCK) if supported() else None


@contextlib.contextmanager
def pty_in_one_flight() -> Iterator[bool]:
    """Sessions opened meanwhile send ``pty-req`` and the command together; yields whether.

    asyncssh builds the channel before its first ``await`` (``create_session``), so a session
    opened inside has its class before any other task runs: leaving puts the stock class back
    at once, and sessions opened by other connections in the meantime keep the class they were
    built with. Nothing needs counting; at worst another task's session, opened while this one
    waits for its reply, is built with the pipelining class, which behaves as the stock one for
    every request but the PTY's.
    """
    if _ONE_FLIGHT is None:
        yield False
        return
    setattr(asyncssh.connection, _NAME, _ONE_FLIGHT)  # asyncssh has no hook for it
    try:
        yield True
    finally:
        setattr(asyncssh.connection, _NAME, _STOCK)
