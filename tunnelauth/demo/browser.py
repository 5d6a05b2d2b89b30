"""The built-in browser: a tiny HTTP client that walks the demo login when no real browser can.

It only ever talks to the demo's own loopback addresses and never prints a query string, so
neither the state nor the one-time code shows up anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from tunnelauth.browser import BrowserLauncher, HowOpened

MAX_STEPS = 8  # start page → provider → approve → callback needs 4
STEP_DEADLINE = 30.0
MAX_RESPONSE = 256 * 1024
CLOSE_DEADLINE = 5.0
_APPROVE = re.compile(r'<a\b[^>]*\bid="approve"[^>]*\bhref="([^"]*)"')
_TITLE = re.compile(r"<title>([^<]{1,80})</title>")


@dataclass(frozen=True)
class Response:
    """One HTTP answer, read to the end."""

    status: int
    location: str | None
    body: str


def origin_of(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of an ``http://`` URL with an explicit port, else None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "http" or not parts.hostname or port is None:
        return None
    return parts.hostname, port


def parse_response(data: bytes) -> Response:
    """Status, Location and body of a complete response (a length, when given, cuts the body)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    words = lines[0].split(None, 2)
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        raise ValueError("not an HTTP response")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length", "")
    if length.isdigit():
        body = body[: int(length)]
    return Response(int(words[1]), headers.get("location"), body.decode("utf-8", "replace"))


async def fetch(url: str) -> Response:
    """GET ``url`` over a fresh connection and read the answer until the server closes."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "User-Agent: tunnelauth-demo-browser\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        await writer.drain()
        data = b""
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                if not data:
                    raise
                break  # a reset after the answer (a listener shutting down) ends it like a close
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_RESPONSE:
                raise ValueError("answer too long")
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), CLOSE_DEADLINE)
    return parse_response(data)


class BuiltinBrowser:
    """Follows redirects and clicks "Approve", but only within ``allowed`` origins."""

    def __init__(self, allowed: Collection[tuple[str, int]], say: Callable[[str], None]) -> None:
        self._allowed = set(allowed)
        self._say = say

    async def walk(self, url: str) -> bool:
        """Walk from ``url`` to a final page; True if it answered 2xx."""
        for _ in range(MAX_STEPS):
            origin = origin_of(url)
            if origin not in self._allowed:
                self._say("built-in browser: not following a link that leaves the demo")
                return False
            answer = await asyncio.wait_for(fetch(url), STEP_DEADLINE)
            # The path only: queries hold the state and the one-time code.
            title = _TITLE.search(answer.body)
            shown = f" ({html.unescape(title.group(1))})" if title else ""
            where = f"{origin[0]}:{origin[1]}{urlsplit(url).path}"
            self._say(f"built-in browser: GET {where} → {answer.status}{shown}")
            if 300 <= answer.status < 400 and answer.location:
                url = urljoin(url, answer.location)
                continue
            approve = _APPROVE.search(answer.body) if answer.status == 200 else None
            if approve is not None:
                self._say("built-in browser: clicking Approve on the provider's page")
                url = urljoin(url, html.unescape(approve.group(1)))
                continue
            return 200 <= answer.status < 300
        self._say("built-in browser: too many redirects")
        return False


class DemoBrowser(BrowserLauncher):
    """Opens URLs as tunnelauth always does; where that would only print one, walks it itself."""

    def __init__(
        self,
        *,
        no_browser: bool,
        allowed: Collection[tuple[str, int]],
        say: Callable[[str], None],
        env: Mapping[str, str],
    ) -> None:
        super().__init__(no_browser=no_browser, env=env)
        self._builtin = BuiltinBrowser(allowed, say)
        self._say = say
        self._walks: set[asyncio.Task[None]] = set()

    async def open(self, url: str) -> HowOpened:
        """The system browser when it can open; otherwise the built-in one, in the background."""
        how = await super().open(url)
        if how != "printed":
            return how
        self._say("no browser opens here (--no-browser, or no display): the built-in one plays it")
        self._walks.add(asyncio.ensure_future(self._walk(url)))
        return "builtin"

    async def close(self, grace: float = 5.0) -> None:
        """Let a walk still under way finish (bounded), then close like the real launcher."""
        if self._walks:
            _, pending = await asyncio.wait(self._walks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._walks, return_exceptions=True)
            self._walks.clear()
        await super().close(grace)

    async def _walk(self, url: str) -> None:
        try:
            await self._builtin.walk(url)
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            # The login's own result is what counts; the browser's trouble is only detail.
            self._say(f"built-in browser: stopped ({type(exc).__name__}: {exc})")
