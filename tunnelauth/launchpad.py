"""A one-page local redirect that tells tunnelauth the browser really opened.

The system browser is handed ``http://127.0.0.1:P/<token>`` instead of the login page; the
page answers with a redirect to the login page, so the user sees no difference, and tunnelauth
knows within a second whether a browser came at all (a stale ``DISPLAY`` or a browser that
silently did nothing never arrives). Only the path with the random token redirects; anything
else gets a 404, every connection has a deadline and a size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

READ_LIMIT = 8192  # request line and headers
READ_DEADLINE = 5.0
CLOSE_DEADLINE = 2.0
MAX_CONNECTIONS = 16


class LaunchPad:
    """Serves one redirect to ``target`` on a random loopback port until closed."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.token = secrets.token_urlsafe(18)
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._active: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, target: str) -> LaunchPad:
        """Listen on 127.0.0.1 (a port the kernel picks)."""
        if not target or any(not 0x21 <= ord(c) <= 0x7E for c in target):
            raise ValueError("a redirect target must be printable ASCII without spaces")
        pad = cls(target)
        pad._server = await asyncio.start_server(pad._serve, "127.0.0.1", 0)
        return pad

    @property
    def url(self) -> str:
        """What the browser is given."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/{self.token}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._active.add(task)
        try:
            if len(self._active) > MAX_CONNECTIONS:
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_DEADLINE)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
                return
            if len(head) > READ_LIMIT:
                return
            words = head.split(b"\r\n", 1)[0].split(b" ")
            if len(words) == 3 and words[0] == b"GET" and words[1] == f"/{self.token}".encode():
                self.arrived.set()
                writer.write(_response("302 Found", f"Location: {self.target}\r\n"))
            else:
                writer.write(_response("404 Not Found", ""))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_DEADLINE)
            if task is not None:
                self._active.discard(task)

    async def close(self) -> None:
        """Stop listening and end the connections still open."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._active):
            task.cancel()
        await asyncio.gather(*self._active, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), CLOSE_DEADLINE)


def _response(status: str, headers: str) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\n{headers}Cache-Control: no-store\r\n"
        "Referrer-Policy: no-referrer\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
