"""The laptop end of the callback: listens on the redirect URI's port and carries one request."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import html
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from tunnelauth import ports
from tunnelauth.errors import ChannelRefusedError, PortUnavailableError, UsageError
from tunnelauth.transports.base import Channel

log = logging.getLogger(__name__)

EventKind = Literal["bound", "request_carried", "request_local", "carry_failed", "refused"]
OpenChannel = Callable[[], Awaitable[Channel]]
OnRefused = Callable[[bytes, str], Awaitable["bytes | None"]]

_CHUNK = 65536
_LINGER = 2.0  # how long to drain a browser's leftovers after our FIN, so close() sends no RST
_LINGER_BYTES = 1 << 20
_CLOSE_DEADLINE = 5.0


@dataclass(frozen=True)
class ListenerEvent:
    """Something the listener did; ``path`` is redacted (query values never appear)."""

    kind: EventKind
    path: str = ""
    status: int | None = None
    detail: str = ""


_DONE_PAGE = (
    "Login already completed",
    "tunnelauth has already passed the login on. You can close this tab.",
)
_REFUSED_PAGE = (
    "SSH server refused the tunnel",
    "tunnelauth could not carry this callback to the remote host: the SSH server refused "
    "the forwarding channel. Look at the tunnelauth terminal for what to do next.",
)
_TUNNEL_FAILED_PAGE = (
    "Tunnel failed",
    "tunnelauth could not carry this callback to the remote host. "
    "Look at the tunnelauth terminal for what happened.",
)
_NO_ANSWER_PAGE = (
    "Remote listener did not answer",
    "The callback reached the remote host, but its login listener closed without answering. "
    "Look at the tunnelauth terminal for the login's result.",
)


class CallbackListener:
    """Listens on 127.0.0.1/::1 port P; carries callback requests over SSH channels."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        path: str | None,
        open_channel: OpenChannel,
        on_event: Callable[[ListenerEvent], None] | None = None,
        on_refused: OnRefused | None = None,
        request_timeout: float = 30.0,
        response_timeout: float = 120.0,
        write_eof: bool = False,
        max_head: int = 32 * 1024,
        max_body: int = 1024 * 1024,
    ) -> None:
        if not 0 < port < 65536:
            raise UsageError(f"callback port {port} is out of range")
        self._addresses = ports.listen_addresses(host)
        self._optional_v6 = host.strip().lower() == "localhost"
        self.host = host
        self.port = port
        self.path = None if path is None else (path.split("?", 1)[0] or "/")
        self._open_channel = open_channel
        self._on_event = on_event
        self._on_refused = on_refused
        self._request_timeout = request_timeout
        self._response_timeout = response_timeout
        self._write_eof = write_eof
        self._max_head = max_head
        self._max_body = max_body
        self._sockets: list[socket.socket] = []
        self._accepting: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()  # handlers answering a complete request
        self._carrying = True
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()
        self.bound: tuple[str, ...] = ()
        self.carried = 0
        self.answered_locally = 0
        self.refused = 0

    @classmethod
    async def open(
        cls,
        *,
        host: str,
        port: int,
        path: str | None,
        open_channel: OpenChannel,
        on_event: Callable[[ListenerEvent], None] | None = None,
        on_refused: OnRefused | None = None,
        request_timeout: float = 30.0,
        response_timeout: float = 120.0,
        write_eof: bool = False,
    ) -> CallbackListener:
        """Create, bind and start listening; it accepts connections when this returns."""
        listener = cls(
            host=host,
            port=port,
            path=path,
            open_channel=open_channel,
            on_event=on_event,
            on_refused=on_refused,
            request_timeout=request_timeout,
            response_timeout=response_timeout,
            write_eof=write_eof,
        )
        await listener.start()
        return listener

    async def __aenter__(self) -> CallbackListener:
        if not self._started:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind every needed address on exactly ``port`` and begin accepting."""
        if self._started:
            return
        self._started = True
        socks, notes = await self._bind_all()
        self._sockets = socks
        self.bound = tuple(_show(sock.getsockname()[0], self.port) for sock in socks)
        for sock in socks:
            task = asyncio.create_task(self._accept_loop(sock), name=f"accept {self.port}")
            self._accepting.add(task)
        self._emit(ListenerEvent("bound", detail=", ".join([*self.bound, *notes])))

    def stop_carrying(self) -> None:
        """After the login succeeded: answer further callback requests locally."""
        self._carrying = False

    async def close(self, grace: float = 0.0) -> None:
        """Stop accepting, end every connection and channel, free the port; idempotent.

        Handlers still answering a complete request get ``grace`` seconds to finish first, so
        the browser receives the remote's page even when the login ended a moment earlier.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            for task in self._accepting:
                task.cancel()
            await asyncio.gather(*self._accepting, return_exceptions=True)
            for sock in self._sockets:
                sock.close()
            if grace > 0 and self._busy:
                await asyncio.wait(list(self._busy), timeout=grace)
            handlers = list(self._handlers)
            for task in handlers:
                task.cancel()
            if handlers:
                # Handlers close their channel in ``finally``; bounded so close() cannot hang.
                await asyncio.wait(handlers, timeout=_CLOSE_DEADLINE * 2)
        finally:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until close() has finished."""
        await self._closed.wait()

    async def _bind_all(self) -> tuple[list[socket.socket], list[str]]:
        """Bind every address (all or nothing) and listen; PortUnavailableError on conflict."""
        socks: list[socket.socket] = []
        notes: list[str] = []
        try:
            for address in self._addresses:
                family = ports.family_of(address)
                optional = self._optional_v6 and family == socket.AF_INET6
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError as exc:
                    if not optional:
                        raise
                    notes.append(f"[::1] unavailable ({exc.strerror}): IPv4 only")
                    continue
                socks.append(sock)
                ports.reuse_address(sock)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind((address, self.port))
                except OSError as exc:
                    if optional and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                        socks.remove(sock)
                        sock.close()
                        notes.append(f"[::1] unavailable ({exc.strerror}): IPv4 only")
                        continue
                    raise await self._bind_error(address, exc) from exc
            for sock in socks:
                sock.listen(64)
                sock.setblocking(False)
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        return socks, notes

    async def _bind_error(self, address: str, exc: OSError) -> PortUnavailableError:
        """A clear PortUnavailableError for a failed bind, naming the holder when possible."""
        where = _show(address, self.port)
        if exc.errno == errno.EADDRINUSE:
            holder = await asyncio.to_thread(ports.who_holds, self.port) or ""
            who = holder or "another program (it could not be identified)"
            if not holder and await asyncio.to_thread(ports.closing_on, self.port):
                who = "connections of an earlier program that are still closing (TIME_WAIT)"
            return PortUnavailableError(
                f"port {self.port} is already in use on {where} by {who}",
                port=self.port,
                holder=holder,
                hint=(
                    "The redirect URI fixes this port, so tunnelauth cannot pick another. "
                    "Stop that program (or an earlier login still waiting) and run tunnelauth "
                    f"again; `lsof -nP -iTCP:{self.port} -sTCP:LISTEN` shows who holds it."
                ),
            )
        if exc.errno == errno.EACCES:
            hint = "Ports below 1024 need privileges on this machine."
        else:
            hint = "Check that the loopback interface is up on this machine."
        return PortUnavailableError(
            f"cannot listen on {where}: {exc.strerror or exc}", port=self.port, hint=hint
        )

    async def _accept_loop(self, sock: socket.socket) -> None:
        """Accept browser connections and start one handler task each."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as exc:
                # Out of descriptors and the like: report and back off instead of spinning.
                self._emit(ListenerEvent("carry_failed", detail=f"accept failed: {exc}"))
                await asyncio.sleep(0.5)
                continue
            task = asyncio.create_task(self._handle(conn), name=f"callback conn {self.port}")
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _handle(self, conn: socket.socket) -> None:
        """Serve one browser connection; never lets an error escape."""
        conn.setblocking(False)
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=_CHUNK)
        except OSError:
            conn.close()
            return
        try:
            await self._serve(reader, writer)
        except Exception as exc:  # the listener must outlive any one connection
            log.debug("callback connection failed", exc_info=True)
            self._emit(ListenerEvent("carry_failed", detail=f"{type(exc).__name__}: {exc}"))
        finally:
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request, then answer it locally or carry it to the remote."""
        try:
            request = await asyncio.wait_for(
                read_request(reader, max_head=self._max_head, max_body=self._max_body),
                self._request_timeout,
            )
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            # A preconnect that never sent anything, or a browser that went away mid-request:
            # nothing was carried, so there is nothing to report.
            await self._finish(reader, writer)
            return
        except LocalAnswer as answer:
            await self._answer(reader, writer, answer.status, answer.title, answer.text, "")
            return
        if request is None:
            await self._finish(reader, writer)
            return
        task = asyncio.current_task()
        if task is not None:
            self._busy.add(task)
            task.add_done_callback(self._busy.discard)
        redacted = redact_target(request.target)
        belongs = self.path is None or request.path == self.path
        if not belongs:
            title, text = "Not Found", "This address is not part of the login."
            await self._answer(reader, writer, 404, title, text, redacted, request.method)
        elif not self._carrying:
            await self._answer(reader, writer, 200, *_DONE_PAGE, redacted, request.method)
        else:
            await self._carry(request, redacted, reader, writer)

    async def _carry(
        self,
        request: Request,
        redacted: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Send the one request over a fresh channel and pipe the answer back until it closes."""
        data = request.forward_bytes()
        channel: Channel | None = None
        answered = False
        try:
            try:
                channel = await asyncio.wait_for(self._open_channel(), self._response_timeout)
            except ChannelRefusedError as exc:
                answered = True
                await self._refused(data, exc.message, redacted, writer)
            if channel is not None:
                channel.write(data)
                await asyncio.wait_for(channel.drain(), self._response_timeout)
                if self._write_eof:
                    channel.write_eof()
                chunk = await asyncio.wait_for(channel.reader.read(_CHUNK), self._response_timeout)
                if chunk:
                    # Counted at the first answer byte: the remote has the request and answered.
                    self.carried += 1
                    self._emit(ListenerEvent("request_carried", redacted, response_status(chunk)))
                    answered = True
                    await self._pipe(channel, chunk, writer)
                else:
                    message = await asyncio.wait_for(channel.refusal(), _CLOSE_DEADLINE)
                    answered = True
                    if message:
                        await self._refused(data, message, redacted, writer)
                    else:
                        self._emit(ListenerEvent("carry_failed", redacted, 502, "no answer"))
                        writer.write(local_response(502, *_NO_ANSWER_PAGE, request.method))
        except Exception as exc:  # a transport error must not crash the listener
            why = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            self._emit(ListenerEvent("carry_failed", redacted, None, why or type(exc).__name__))
            if not answered:
                writer.write(local_response(502, *_TUNNEL_FAILED_PAGE, request.method))
        finally:
            if channel is not None:
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await asyncio.wait_for(channel.close(), _CLOSE_DEADLINE)
        # Pass the remote's close on: an HTTP/1.0 page without Content-Length ends only here.
        await self._finish(reader, writer)

    async def _pipe(self, channel: Channel, chunk: bytes, writer: asyncio.StreamWriter) -> None:
        """Copy the remote's answer to the browser until the channel reaches EOF."""
        while chunk:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), self._response_timeout)
            chunk = await asyncio.wait_for(channel.reader.read(_CHUNK), self._response_timeout)

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
        writer.write(answer if answer else local_response(502, *_REFUSED_PAGE))
        await asyncio.wait_for(writer.drain(), self._response_timeout)

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        title: str,
        text: str,
        redacted: str,
        method: str = "GET",
    ) -> None:
        """Answer locally (the remote never sees it) and close."""
        self.answered_locally += 1
        self._emit(ListenerEvent("request_local", redacted, status))
        writer.write(local_response(status, title, text, method))
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.drain(), self._request_timeout)
        await self._finish(reader, writer)

    async def _finish(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close gracefully: FIN first, then drain what the browser still sends, then close."""
        # Closing with unread bytes makes the kernel send RST, which can wipe a response the
        # browser has not read yet; reading to EOF (bounded) avoids that.
        with contextlib.suppress(OSError, asyncio.TimeoutError, RuntimeError):
            if writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()
                await asyncio.wait_for(_discard(reader, _LINGER_BYTES), _LINGER)
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), _LINGER)

    def _emit(self, event: ListenerEvent) -> None:
        """Hand an event to the caller; a failing callback must not break a connection."""
        log.debug("listener event %s", event)
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("listener on_event callback failed")


async def _discard(reader: asyncio.StreamReader, limit: int) -> None:
    """Read and drop up to ``limit`` bytes until EOF."""
    total = 0
    while total < limit:
        chunk = await reader.read(_CHUNK)
        if not chunk:
            return
        total += len(chunk)


def _show(address: str, port: int) -> str:
    """``127.0.0.1:P`` or ``[::1]:P``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# --- the little HTTP/1.x the listener needs: one request head in, a whole response out ---

_METHODS = ("GET", "POST", "HEAD")
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection"})
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
}


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

    def forward_bytes(self) -> bytes:
        """The head with ``Connection: close`` instead of any keep-alive, then the body."""
        # Only the blank line goes: every header line keeps its own line ending.
        blank = b"\r\n" if self.head.endswith(b"\r\n\r\n") else b"\n"
        lines = self.head[: -len(blank)].split(b"\n")[:-1]
        cr = b"\r" if lines[0].endswith(b"\r") else b""
        kept = [lines[0]]
        dropping = False
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t"):  # an obsolete folded continuation of the last header
                if not dropping:
                    kept.append(line)
                continue
            dropping = line.split(b":", 1)[0].strip().lower() in _HOP_BY_HOP
            if not dropping:
                kept.append(line)
        kept.append(b"Connection: close" + cr)
        return b"".join(line + b"\n" for line in kept) + blank + self.body


async def read_request(
    reader: asyncio.StreamReader, *, max_head: int, max_body: int
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
    if len(head) > max_head:
        raise LocalAnswer(431, "The request head is too large.")
    method, target = _request_line(head)
    length = _content_length(head)
    if length > max_body:
        raise LocalAnswer(413, "The request body is too large.")
    if len(rest) < length:
        rest += await reader.readexactly(length - len(rest))
    # Anything after the body (a pipelined second request) is deliberately dropped.
    return Request(method, target, head, rest[:length])


def _head_end(buf: bytes) -> int:
    """Index just past the blank line ending the head, or -1."""
    ends = [i + 4 for i in (buf.find(b"\r\n\r\n"),) if i >= 0]
    ends += [i + 2 for i in (buf.find(b"\n\n"),) if i >= 0]
    return min(ends) if ends else -1


def _request_line(head: bytes) -> tuple[str, str]:
    """Method and target of the request line; rejects what the listener does not serve."""
    parts = head.split(b"\n", 1)[0].rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise LocalAnswer(400, "That is not an HTTP/1 request.")
    method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
    if method not in _METHODS:
        raise LocalAnswer(405, "Only GET, POST and HEAD are served here.")
    if not target.startswith("/") and not target.lower().startswith("http://"):
        raise LocalAnswer(400, "The request target is not a path.")
    return method, target


def _content_length(head: bytes) -> int:
    """The body length the head declares (0 without Content-Length); chunked is refused."""
    lengths: set[bytes] = set()
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        key = name.strip().lower()
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
