"""The demo OAuth provider: a consent page on 127.0.0.1 that redirects to the loopback callback.

It also holds the small HTTP helpers the simulated remote's listener shares with it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

CLIENT_ID = "tunnelauth-demo"
MAX_HEAD = 16 * 1024  # no request of this demo needs a longer head
HEAD_DEADLINE = 15.0  # a client that sends no complete head within this is dropped
MAX_PENDING = 32  # consent pages shown but not answered; the oldest are forgotten
CLOSE_DEADLINE = 5.0

_REASONS = MappingProxyType(
    {200: "OK", 302: "Found", 400: "Bad Request", 404: "Not Found", 405: "Not Allowed"}
)
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;"
    "color:#1d2330}h1{font-size:1.4rem}.box{border:1px solid #d0d5de;border-radius:.6rem;"
    "padding:1.2rem 1.4rem}.muted{color:#5b6475;font-size:.9rem}a.button{display:inline-block;"
    "padding:.55rem 1.3rem;border-radius:.4rem;text-decoration:none;margin-right:.6rem}"
    "#approve{background:#1a7f37;color:#fff}#deny{border:1px solid #d0d5de;color:#1d2330}"
)


class ByteReader(Protocol):
    """Anything with ``read(n)`` returning bytes (asyncio and asyncssh streams)."""

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes; ``b""`` at the end."""
        ...


async def read_request_head(reader: ByteReader) -> tuple[str, str] | None:
    """Method and target of one HTTP request (headers are read and ignored); None if broken."""

    async def collect() -> bytes | None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await reader.read(4096)
            if not chunk or len(buf) + len(chunk) > MAX_HEAD:
                return None
            buf += chunk
        return buf

    try:
        head = await asyncio.wait_for(collect(), HEAD_DEADLINE)
    except asyncio.TimeoutError:
        return None
    if head is None:
        return None
    words = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        return None
    return words[0], words[1]


def html_page(title: str, body: str) -> str:
    """A self-contained page (inline style, no external assets); ``body`` is trusted HTML."""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def http_response(
    status: int,
    body: str = "",
    *,
    headers: Sequence[tuple[str, str]] = (),
    http10: bool = False,
) -> bytes:
    """A response that closes the connection; HTTP/1.0 ones carry no length and end at close."""
    data = body.encode()
    lines = [f"HTTP/{'1.0' if http10 else '1.1'} {status} {_REASONS.get(status, 'Error')}"]
    lines += ["Content-Type: text/html; charset=utf-8", "Cache-Control: no-store"]
    if not http10:
        lines += [f"Content-Length: {len(data)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_loopback_redirect(uri: str) -> bool:
    """Only ``http://127.0.0.1:PORT/...`` may receive a code: nothing is sent off this machine."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    return parts.scheme == "http" and parts.hostname == "127.0.0.1" and bool(port)


@dataclass(frozen=True)
class Grant:
    """What one authorization request asked for."""

    redirect_uri: str
    state: str
    challenge: str


class DemoProvider:
    """Serves ``/authorize`` (a consent page) and ``/approve`` / ``/deny`` (302 to the callback)."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._pending: dict[str, Grant] = {}
        self._codes: dict[str, Grant] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls) -> DemoProvider:
        """Listen on 127.0.0.1 on a port the system picks."""
        provider = cls()
        provider._server = await asyncio.start_server(provider._accept, "127.0.0.1", 0)
        provider.port = provider._server.sockets[0].getsockname()[1]
        return provider

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def authorize_url(self, *, redirect_uri: str, state: str, challenge: str) -> str:
        """The authorize URL a client sends the browser to."""
        query = urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": redirect_uri,
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "scope": "demo",
            }
        )
        return f"{self.origin}/authorize?{query}"

    def redeem(self, code: str, verifier: str, redirect_uri: str) -> bool:
        """The token exchange, in-process: a code works once, for its redirect URI and verifier."""
        grant = self._codes.pop(code, None)
        return (
            grant is not None
            and grant.redirect_uri == redirect_uri
            and secrets.compare_digest(grant.challenge, pkce_challenge(verifier))
        )

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_DEADLINE)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_DEADLINE)
            self._server = None

    # -- serving -------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # close() must be able to end a browser's idle keep-alive
        try:
            head = await read_request_head(reader)
            if head is not None:
                writer.write(self.answer(*head))
                await asyncio.wait_for(writer.drain(), HEAD_DEADLINE)
        except (OSError, asyncio.TimeoutError):
            pass  # the browser went away; nothing to tell anyone
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_DEADLINE)

    def answer(self, method: str, target: str) -> bytes:
        """The response to one request."""
        if method != "GET":
            return http_response(405, html_page("Not allowed", "<p>Only GET.</p>"))
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        if parts.path == "/authorize":
            return self._consent(query)
        if parts.path in ("/approve", "/deny"):
            grant = self._pending.pop(query.get("txn", ""), None)
            if grant is None:
                return _bad("This consent page has expired. Start the login again.")
            return self._redirect(grant, approved=parts.path == "/approve")
        return http_response(404, html_page("Not found", "<p>Nothing here.</p>"))

    def _consent(self, query: dict[str, str]) -> bytes:
        """Check the request like a strict provider would, then ask the user."""
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != CLIENT_ID or query.get("response_type") != "code":
            return _bad("Unknown client or response type.")
        if not is_loopback_redirect(redirect_uri):
            return _bad("The redirect URI must be http://127.0.0.1:PORT/… in this demo.")
        if not query.get("state") or query.get("code_challenge_method") != "S256":
            return _bad("state and a S256 code_challenge are required.")
        while len(self._pending) >= MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
        txn = secrets.token_urlsafe(12)
        self._pending[txn] = Grant(redirect_uri, query["state"], query.get("code_challenge", ""))
        where = html.escape(urlsplit(redirect_uri).netloc)
        body = (
            '<div class="box"><p><b>tunnelauth-demo</b> would like to sign in as '
            "<b>demo-user</b>.</p>"
            f'<p><a class="button" id="approve" href="/approve?txn={txn}">Approve</a>'
            f'<a class="button" id="deny" href="/deny?txn={txn}">Deny</a></p>'
            f'<p class="muted">Approving sends your browser to {where}, where tunnelauth listens '
            "and carries the callback to the simulated remote host over SSH.</p></div>"
            '<p class="muted">This is the tunnelauth demo provider, running on this machine.</p>'
        )
        return http_response(200, html_page("Demo provider: sign in", body))

    def _redirect(self, grant: Grant, *, approved: bool) -> bytes:
        """302 to the callback with a fresh one-time code (or ``access_denied``)."""
        if approved:
            code = secrets.token_urlsafe(24)
            self._codes[code] = grant
            params = {"code": code, "state": grant.state}
        else:
            params = {"error": "access_denied", "state": grant.state}
        sep = "&" if "?" in grant.redirect_uri else "?"
        location = grant.redirect_uri + sep + urlencode(params)
        return http_response(302, "", headers=[("Location", location)])


def _bad(message: str) -> bytes:
    return http_response(400, html_page("Bad request", f"<p>{html.escape(message)}</p>"))
