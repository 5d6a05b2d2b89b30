"""The little HTTP/1.x the callback listener needs: one checked request in, a whole response out.

Everything here is pure except ``read_request``, which only reads from a stream. A request
that is not what a browser following a loopback redirect sends is refused with a local
answer (``LocalAnswer``) before anything of it reaches the remote.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Collection
from dataclasses import dataclass
from types import MappingProxyType

# Limits. A browser's callback request is a few hundred bytes plus whatever cookies other
# local apps set for 127.0.0.1 (they are read, then dropped): 32 KiB of head leaves room for
# those and still bounds memory; the target alone (the redirect URL with its code and state)
# is far below 8 KiB. Bodies appear only in a form_post callback.
MAX_HEAD = 32 * 1024  # request line + headers, the blank line included
MAX_TARGET = 8 * 1024  # the request target
MAX_BODY = 1024 * 1024
MAX_PASTE_URL = 4000  # a canonical-mode PTY line holds at most 4095 bytes
MAX_COOKIE_NAMES = 64  # names of cookies the remote set that may go back to it

_CHUNK = 65536
_METHODS = ("GET", "POST", "HEAD")
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection"})
# The laptop's own credentials: cookies for 127.0.0.1 are shared by every local app whatever
# the port, and an Authorization header is meant for some other local service, never the remote.
_CREDENTIALS = frozenset({b"authorization", b"proxy-authorization"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
# A request target as a browser sends it: visible ASCII only (no space, no control byte).
_TARGET = re.compile(r"[\x21-\x7e]+")
# RFC 3986 path-absolute and query: unreserved, pct-encoded, sub-delims, ":" and "@", plus "/"
# (and "?" in the query).
_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})"
_PASTE_TARGET = re.compile(rf"/{_PCHAR}*(?:\?(?:{_PCHAR}|\?)*)?")
_REASONS = MappingProxyType(
    {
        200: "OK",
        400: "Bad Request",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        408: "Request Timeout",
        411: "Length Required",
        413: "Content Too Large",
        414: "URI Too Long",
        421: "Misdirected Request",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }
)


# Requests a browser makes on its own to any origin it visits (icons, crawler and tile
# metadata). When a listener carries every path of the remote's loopback origin (a CLI that
# serves its own start page), these are still answered locally: a remote listener that
# answers one request only (hermes MCP, Google's run_local_server) must get the callback.
BROWSER_OWN_PATHS = frozenset({"/favicon.ico", "/robots.txt", "/browserconfig.xml"})
BROWSER_OWN_PREFIXES = ("/apple-touch-icon", "/.well-known/")


def is_browser_own(path: str) -> bool:
    """Whether ``path`` is one a browser requests by itself, not a page of the login."""
    return path in BROWSER_OWN_PATHS or path.startswith(BROWSER_OWN_PREFIXES)


class LocalAnswer(Exception):
    """A request that is answered locally with an error status instead of being carried."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.title = _REASONS.get(status, "Error")
        self.text = text


@dataclass(frozen=True)
class Request:
    """One parsed request: the raw head (terminator included) and its body."""

    method: str
    target: str
    head: bytes
    body: bytes

    @property
    def path(self) -> str:
        """The target's path, without query (absolute-form targets reduced to their path)."""
        return _split_target(self.target)[0]

    def header_values(self, name: bytes) -> list[bytes]:
        """The values of every header called ``name`` (lower case), spaces trimmed."""
        values = []
        for line in _head_lines(self.head)[1:]:
            key, _, value = line.partition(b":")
            if key.lower() == name:
                values.append(value.strip(b" \t"))
        return values

    def fields(self) -> tuple[tuple[str, str], ...]:
        """Every header line as ``(name, value)`` in order (latin-1, value spaces trimmed)."""
        pairs = []
        for line in _head_lines(self.head)[1:]:
            key, _, value = line.partition(b":")
            pairs.append((key.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        return tuple(pairs)

    def forward_bytes(self, remote_cookies: Collection[str] = ()) -> bytes:
        """The request as the remote gets it: no laptop credentials, ``Connection: close``.

        Cookies stay only when the remote itself set them during this run
        (``remote_cookies``); Authorization headers never go.
        """
        lines = _head_lines(self.head)
        cr = b"\r" if self.head.endswith(b"\r\n\r\n") else b""
        kept = [lines[0]]
        for line in lines[1:]:
            key, _, value = line.partition(b":")
            name = key.lower()
            if name in _HOP_BY_HOP or name in _CREDENTIALS:
                continue
            if name == b"cookie":
                pairs = _own_cookies(value, remote_cookies)
                if pairs:
                    kept.append(key + b": " + pairs)
                continue
            kept.append(line)
        kept.append(b"Connection: close")
        return b"".join(line + cr + b"\n" for line in kept) + cr + b"\n" + self.body


def _own_cookies(value: bytes, remote_cookies: Collection[str]) -> bytes:
    """The ``name=value`` pairs of a Cookie header whose name the remote set."""
    kept = []
    for pair in value.split(b";"):
        name = pair.split(b"=", 1)[0].strip().decode("latin-1")
        if name and name in remote_cookies:
            kept.append(pair.strip())
    return b"; ".join(kept)


def _head_lines(head: bytes) -> list[bytes]:
    """The request line and header lines of a head, without line endings."""
    return [line.removesuffix(b"\r") for line in head.split(b"\n")[:-2]]


async def read_request(
    reader: asyncio.StreamReader, *, max_head: int = MAX_HEAD, max_body: int = MAX_BODY
) -> Request | None:
    """Read one request head (bounded) and its Content-Length body; ``None`` if nothing came."""
    buf = b""
    while True:
        buf = buf.lstrip(b"\r\n")  # stray empty lines before a request line are allowed
        end = _head_end(buf)
        if end >= 0:
            break
        if len(buf) > max_head:
            raise LocalAnswer(431, "The request head is too large.")
        chunk = await reader.read(_CHUNK)
        if not chunk:
            if buf:
                raise LocalAnswer(400, "The request ended early.")
            return None
        buf += chunk
    head, rest = buf[:end], buf[end:]
    method, target, length = _checked_head(head, max_head, max_body)
    if len(rest) < length:
        rest += await reader.readexactly(length - len(rest))
    # Anything after the body (a pipelined second request) is deliberately dropped.
    return Request(method, target, head, rest[:length])


def parse_request(data: bytes, *, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> Request:
    """One whole request held in ``data``, checked exactly as ``read_request`` checks it.

    The one parser of requests: the listener reads with it, and the relay takes apart the
    bytes the listener forwards with it. Raises ``LocalAnswer`` for what the listener refuses.
    """
    data = data.lstrip(b"\r\n")
    end = _head_end(data)
    if end < 0:
        if len(data) > max_head:
            raise LocalAnswer(431, "The request head is too large.")
        raise LocalAnswer(400, "The request ended early.")
    head, rest = data[:end], data[end:]
    method, target, length = _checked_head(head, max_head, max_body)
    if len(rest) < length:
        raise LocalAnswer(400, "The request ended early.")
    return Request(method, target, head, rest[:length])


def _checked_head(head: bytes, max_head: int, max_body: int) -> tuple[str, str, int]:
    """Method, target and body length of a whole head; ``LocalAnswer`` if it is refused."""
    if len(head) > max_head:
        raise LocalAnswer(431, "The request head is too large.")
    method, target = _request_line(head)
    _check_fields(head)
    length = _content_length(head)
    if length > max_body:
        raise LocalAnswer(413, "The request body is too large.")
    return method, target, length


def _head_end(buf: bytes) -> int:
    """Index just past the blank line ending the head, or -1."""
    ends = [i + 4 for i in (buf.find(b"\r\n\r\n"),) if i >= 0]
    ends += [i + 2 for i in (buf.find(b"\n\n"),) if i >= 0]
    return min(ends) if ends else -1


def _request_line(head: bytes) -> tuple[str, str]:
    """Method and target of the request line; rejects what the listener does not serve."""
    line = _head_lines(head)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise LocalAnswer(400, "That is not an HTTP/1 request.")
    method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
    if method not in _METHODS:
        raise LocalAnswer(405, "Only GET, POST and HEAD are served here.")
    if len(target) > MAX_TARGET:
        raise LocalAnswer(414, "The request target is too long.")
    if not _TARGET.fullmatch(target):
        raise LocalAnswer(400, "The request target holds bytes a browser never sends.")
    if not target.startswith("/") and not target.lower().startswith("http://"):
        raise LocalAnswer(400, "The request target is not a path.")
    return method, target


def _check_fields(head: bytes) -> None:
    """Every header line is ``token: value`` without control bytes; no obsolete folding."""
    for line in _head_lines(head)[1:]:
        name, sep, value = line.partition(b":")
        # A folded line or a space before the colon could hide a header from these checks
        # while the remote still reads it (RFC 9112 5.1, 5.2): refuse rather than guess.
        if not sep or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise LocalAnswer(400, "A header line is malformed.")


def check_origin(request: Request, port: int) -> None:
    """Refuse (421) a request not addressed to this listener's loopback origin.

    A DNS-rebinding page reaches 127.0.0.1:P under its own name; its Host header (and an
    absolute-form target) still names that name, so only the loopback names pass.
    """
    allowed = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    hosts = request.header_values(b"host")
    if len(hosts) != 1:
        raise LocalAnswer(400, "The request needs exactly one Host header.")
    host = hosts[0].decode("latin-1").lower()
    if host not in allowed:
        raise LocalAnswer(421, "This listener serves only the login's own loopback address.")
    if not request.target.startswith("/"):
        authority = request.target.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        if authority.lower() != host:
            raise LocalAnswer(421, "This listener serves only the login's own loopback address.")


def set_cookie_names(response: bytes) -> set[str]:
    """Names of the cookies a response head sets (``Set-Cookie: name=...``)."""
    end = _head_end(response)
    head = response[:end] if end >= 0 else response[:MAX_HEAD]
    names = set()
    for line in head.split(b"\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == b"set-cookie":
            name = value.split(b";", 1)[0].split(b"=", 1)[0].strip()
            if _TOKEN.fullmatch(name):
                names.add(name.decode("ascii"))
    return names


def response_head_done(response: bytes) -> bool:
    """Whether ``response`` holds a whole response head (or more than a head may hold)."""
    return _head_end(response) >= 0 or len(response) >= MAX_HEAD


def paste_url(host: str, port: int, target: str) -> str | None:
    """The redirect URL to type into a paste prompt, or None if ``target`` is not one.

    Only a path and query that RFC 3986 allows, in printable ASCII, within a PTY line, is
    ever typed: no control byte (CR, LF, Ctrl-C) can reach the remote's terminal.
    """
    if not _PASTE_TARGET.fullmatch(target):
        return None
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = f"http://{authority}{target}"
    return url if len(url) < MAX_PASTE_URL else None


def _content_length(head: bytes) -> int:
    """The body length the head declares (0 without Content-Length); chunked is refused."""
    lengths: set[bytes] = set()
    for line in _head_lines(head)[1:]:
        name, sep, value = line.partition(b":")
        key = name.lower()
        if key == b"transfer-encoding":
            raise LocalAnswer(411, "Send the body with a Content-Length.")
        if sep and key == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
    if not lengths:
        return 0
    if len(lengths) != 1 or not next(iter(lengths)).isdigit():
        raise LocalAnswer(400, "The Content-Length header is invalid.")
    return int(next(iter(lengths)))


def _split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target; absolute-form targets lose scheme and authority."""
    if not target.startswith("/"):
        after_scheme = target.split("://", 1)[-1]
        slash = after_scheme.find("/")
        target = after_scheme[slash:] if slash >= 0 else "/"
    path, _, query = target.partition("?")
    return path.split("#", 1)[0], query


def redact_target(target: str) -> str:
    """The path plus query parameter NAMES only: ``/callback?code=…&state=…``."""
    path, query = _split_target(target)
    names = [part.split("=", 1)[0] for part in query.split("&") if part]
    shown = path + ("?" + "&".join(f"{name}=…" for name in names) if names else "")
    text = "".join(ch if ch.isprintable() else "?" for ch in shown)
    return text if len(text) <= 200 else text[:199] + "…"


def response_status(first: bytes) -> int | None:
    """The status code of a response's first line, if it is one."""
    parts = first.split(b"\n", 1)[0].split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def local_response(status: int, title: str, text: str, method: str = "GET") -> bytes:
    """A complete small HTML response that closes the connection."""
    title, text = html.escape(title), html.escape(text)
    body = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>'
        f"<body><h1>{title}</h1><p>{text}</p></body></html>\n"
    ).encode()
    reason = _REASONS.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
    )
    if status == 405:
        head += "Allow: GET, POST, HEAD\r\n"
    return (head + "\r\n").encode() + (b"" if method == "HEAD" else body)
