"""Carrying one browser request to the remote over a fresh SSH channel, and its answer back.

The listener hands over a complete request that belongs to the login; the ``Carrier`` waits for
one of its channel slots, opens a channel, sends the request (without the laptop's credentials)
and copies the answer to the browser, all under one deadline. A refused channel goes to the
fallback (the relay) when there is one. The names of the cookies the remote sets are
remembered: only those may go back to it. ``finish`` closes a browser connection without
losing what was written to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from tunnelauth import httpreq
from tunnelauth.errors import ChannelRefusedError
from tunnelauth.httpreq import Request, local_response, response_status
from tunnelauth.listenpages import (
    NO_ANSWER,
    NO_ANSWER_PAGE,
    REFUSED_PAGE,
    TUNNEL_FAILED_PAGE,
    ListenerEvent,
    Progress,
)
from tunnelauth.transports.base import Channel

OpenChannel = Callable[[], Awaitable[Channel]]
OnRefused = Callable[[bytes, str], Awaitable["bytes | None"]]
Emit = Callable[[ListenerEvent], None]

CHUNK = 65536
CLOSE_DEADLINE = 5.0  # closing one channel, or waiting for the reason it closed unanswered
_LINGER = 2.0  # how long to drain a browser's leftovers after our FIN, so close() sends no RST
_LINGER_BYTES = 1 << 20


class Carrier:
    """Carries complete requests over fresh channels, at most ``max_channels`` at once."""

    def __init__(
        self,
        *,
        open_channel: OpenChannel,
        emit: Emit,
        on_refused: OnRefused | None,
        slot_timeout: float,
        response_timeout: float,
        write_eof: bool,
        max_channels: int,
    ) -> None:
        self._open_channel = open_channel
        self._emit = emit
        self._on_refused = on_refused
        self._slot_timeout = slot_timeout
        self._response_timeout = response_timeout
        self._write_eof = write_eof
        self._slots = asyncio.Semaphore(max_channels)
        # Cookies the remote set in an answer carried back during this run: only these may
        # go back to it (the laptop's other cookies for 127.0.0.1 belong to other local apps).
        self._remote_cookies: set[str] = set()
        self.carried = 0
        self.refused = 0
        # Requests handed to the remote whose first answer byte (or end) has not come yet.
        self._unanswered = 0
        self._all_answered = asyncio.Event()
        self._all_answered.set()

    async def answers_settled(self, deadline: float) -> None:
        """Wait (at most ``deadline`` s) until every request handed to the remote has its
        first answer byte or its end, and so its event."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._all_answered.wait(), deadline)

    def _awaiting_answer(self, change: int) -> None:
        self._unanswered += change
        if self._unanswered:
            self._all_answered.clear()
        else:
            self._all_answered.set()

    async def carry(self, request: Request, redacted: str, writer: asyncio.StreamWriter) -> bool:
        """Send the one request over a fresh channel and pipe the answer back until it closes.

        False, with nothing written, when every channel stayed busy for the slot deadline.
        """
        try:
            await asyncio.wait_for(self._slots.acquire(), self._slot_timeout)
        except asyncio.TimeoutError:
            self._emit(ListenerEvent("carry_failed", redacted, 503, "every channel is busy"))
            return False
        progress = Progress()
        try:
            # One deadline for the whole exchange: a browser reading the answer a byte at a
            # time cannot hold a channel open for longer.
            await asyncio.wait_for(
                self._exchange(request, redacted, writer, progress), self._response_timeout
            )
        except Exception as exc:  # a transport error must not crash the listener
            why = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            self._emit(ListenerEvent("carry_failed", redacted, None, why or type(exc).__name__))
            if not progress.answered:
                writer.write(local_response(502, *TUNNEL_FAILED_PAGE, request.method))
        finally:
            self._slots.release()
        return True

    async def _exchange(
        self, request: Request, redacted: str, writer: asyncio.StreamWriter, progress: Progress
    ) -> None:
        """Open a channel, send the request, copy the answer back; the channel always closes."""
        data = request.forward_bytes(self._remote_cookies)
        channel: Channel | None = None
        try:
            try:
                channel = await self._open_channel()
            except ChannelRefusedError as exc:
                progress.answered = True
                await self._refused(data, exc.message, redacted, writer)
                return
            self._awaiting_answer(+1)
            try:
                channel.write(data)
                await channel.drain()
                if self._write_eof:
                    channel.write_eof()
                chunk = await channel.reader.read(CHUNK)
                if chunk:
                    # Counted at the first answer byte: the remote has the request and answered.
                    self.carried += 1
                    self._emit(ListenerEvent("request_carried", redacted, response_status(chunk)))
            finally:
                self._awaiting_answer(-1)
            if chunk:
                progress.answered = True
                await self._pipe(channel, chunk, writer)
                return
            message = await asyncio.wait_for(channel.refusal(), CLOSE_DEADLINE)
            progress.answered = True
            if message:
                await self._refused(data, message, redacted, writer)
            else:
                self._emit(ListenerEvent("carry_failed", redacted, 502, NO_ANSWER))
                writer.write(local_response(502, *NO_ANSWER_PAGE, request.method))
        finally:
            if channel is not None:
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await asyncio.wait_for(channel.close(), CLOSE_DEADLINE)

    async def _pipe(self, channel: Channel, chunk: bytes, writer: asyncio.StreamWriter) -> None:
        """Copy the remote's answer to the browser until the channel reaches EOF."""
        head: bytes | None = b""
        while chunk:
            if head is not None:
                head += chunk
                if httpreq.response_head_done(head):
                    self._learn_cookies(head)
                    head = None
            writer.write(chunk)
            await writer.drain()
            chunk = await channel.reader.read(CHUNK)
        if head:
            self._learn_cookies(head)

    def _learn_cookies(self, response: bytes) -> None:
        """Remember the names of cookies the remote set (bounded): they may go back to it."""
        for name in sorted(httpreq.set_cookie_names(response)):
            if len(self._remote_cookies) >= httpreq.MAX_COOKIE_NAMES:
                return
            self._remote_cookies.add(name)

    async def _refused(
        self, data: bytes, message: str, redacted: str, writer: asyncio.StreamWriter
    ) -> None:
        """The server refused the channel: let the fallback answer, else explain with a 502."""
        self.refused += 1
        self._emit(ListenerEvent("refused", redacted, None, message))
        answer: bytes | None = None
        if self._on_refused is not None:
            try:
                answer = await self._on_refused(data, message)
            except Exception as exc:
                self._emit(ListenerEvent("carry_failed", redacted, None, f"fallback: {exc}"))
        if answer:
            self._learn_cookies(answer)  # a relayed answer is the remote's own
        writer.write(answer if answer else local_response(502, *REFUSED_PAGE))
        await writer.drain()


async def finish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close a browser connection gracefully: FIN first, drain what it still sends, close."""
    # Closing with unread bytes makes the kernel send RST, which can wipe a response the
    # browser has not read yet; reading to EOF (bounded) avoids that.
    with contextlib.suppress(OSError, asyncio.TimeoutError, RuntimeError):
        if writer.can_write_eof() and not writer.transport.is_closing():
            writer.write_eof()
            await asyncio.wait_for(_discard(reader, _LINGER_BYTES), _LINGER)
    writer.close()
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), _LINGER)


async def _discard(reader: asyncio.StreamReader, limit: int) -> None:
    """Read and drop up to ``limit`` bytes until EOF."""
    total = 0
    while total < limit:
        chunk = await reader.read(CHUNK)
        if not chunk:
            return
        total += len(chunk)
