"""The laptop end of the callback: listens on the redirect URI's port, reads each request.

A request that belongs to the login goes to the remote through ``listencarry``; every other one
(another origin, another path, a malformed one, one after the login) is answered here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from types import TracebackType

from tunnelauth import httpreq, ports
from tunnelauth.errors import UsageError
from tunnelauth.httpreq import LocalAnswer, local_response, read_request, redact_target
from tunnelauth.listenbind import bind_all, show
from tunnelauth.listencarry import CHUNK, CLOSE_DEADLINE, Carrier, OnRefused, OpenChannel, finish
from tunnelauth.listenpages import BUSY_PAGE, DONE_PAGE, NO_ANSWER, NO_ANSWER_PAGE, ListenerEvent

__all__ = ["NO_ANSWER", "NO_ANSWER_PAGE", "CallbackListener", "ListenerEvent"]

log = logging.getLogger(__name__)

# Bounds. A login needs one browser connection and one channel; a browser adds a few
# connections of its own (preconnects, the favicon). Anything beyond these limits is a flood
# from some local program, which must neither exhaust this process nor reach the remote.
MAX_CONNECTIONS = 32  # browser connections at once; at the limit the oldest idle one goes
MAX_CHANNELS = 4  # channels (or relay sessions) carrying requests at once; more requests wait
REQUEST_DEADLINE = 30.0  # a connection's whole request must arrive within this, or it is closed
RESPONSE_DEADLINE = 120.0  # one carried exchange: opening the channel to the answer's last byte


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
        request_timeout: float = REQUEST_DEADLINE,
        response_timeout: float = RESPONSE_DEADLINE,
        write_eof: bool = False,
        max_head: int = httpreq.MAX_HEAD,
        max_body: int = httpreq.MAX_BODY,
        max_connections: int = MAX_CONNECTIONS,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        if not 0 < port < 65536:
            raise UsageError(f"callback port {port} is out of range")
        self._addresses = ports.listen_addresses(host)
        self._optional_v6 = host.strip().lower() == "localhost"
        self.host = host
        self.port = port
        self.path = None if path is None else (path.split("?", 1)[0] or "/")
        # Every path of the origin is part of the login (the browser opens a page of it).
        self.whole_origin = False
        self._on_event = on_event
        self._request_timeout = request_timeout
        self._max_head = max_head
        self._max_body = max_body
        self._max_connections = max_connections
        self._carrier = Carrier(
            open_channel=open_channel,
            emit=self._emit,
            on_refused=on_refused,
            slot_timeout=request_timeout,
            response_timeout=response_timeout,
            write_eof=write_eof,
            max_channels=max_channels,
        )
        # Connections still reading their request, oldest first: the ones a flood may evict.
        self._waiting: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._evicted: set[asyncio.Task[None]] = set()
        self._sockets: list[socket.socket] = []
        self._accepting: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()  # handlers answering a complete request
        self._carrying = True
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()
        self.bound: tuple[str, ...] = ()
        self.answered_locally = 0

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
        request_timeout: float = REQUEST_DEADLINE,
        response_timeout: float = RESPONSE_DEADLINE,
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

    @property
    def carried(self) -> int:
        """Requests the remote answered (counted at the answer's first byte)."""
        return self._carrier.carried

    @property
    def refused(self) -> int:
        """Requests whose channel the server refused."""
        return self._carrier.refused

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
        socks, notes = await bind_all(self._addresses, self.port, self._optional_v6)
        self._serve_on(socks, notes)

    def _serve_on(self, socks: list[socket.socket], notes: list[str]) -> None:
        """Start accepting on freshly bound sockets and say so."""
        self._sockets += socks
        shown = tuple(show(sock.getsockname()[0], self.port) for sock in socks)
        self.bound += shown
        for sock in socks:
            task = asyncio.create_task(self._accept_loop(sock), name=f"accept {self.port}")
            self._accepting.add(task)
        self._emit(ListenerEvent("bound", detail=", ".join([*shown, *notes])))

    async def refine(self, host: str, path: str | None) -> None:
        """A later line names the same port's callback more precisely: its host and path.

        Only a loopback ``host`` is taken (``UsageError`` otherwise) and the port never
        changes. Sockets already listening stay open, as a browser may be connecting to them;
        a host that names another address (``localhost``: both families) adds its socket,
        and ``PortUnavailableError`` says when that address is taken here. ``path`` replaces
        the callback path; ``None`` keeps the one known.
        """
        addresses = ports.listen_addresses(host)  # the remote cannot aim us beyond loopback
        if self._closing:
            return
        optional_v6 = host.strip().lower() == "localhost"
        if not self._started:
            self._addresses += tuple(a for a in addresses if a not in self._addresses)
            self._optional_v6 = self._optional_v6 or optional_v6
        else:
            listening = {sock.getsockname()[0] for sock in self._sockets}
            missing = tuple(a for a in addresses if a not in listening)
            if missing:
                self._serve_on(*await bind_all(missing, self.port, optional_v6))
        self.host = host
        if path is not None:
            self.path = path.split("?", 1)[0] or "/"

    def carry_whole_origin(self) -> None:
        """The browser opens a page of this origin: every path of it belongs to the login.

        The browser's own requests (``httpreq.is_browser_own``) are still answered here.
        """
        self.whole_origin = True

    def _belongs(self, path: str) -> bool:
        """Whether a request for ``path`` is carried to the remote."""
        if path == self.path:
            return True
        if self.path is not None and not self.whole_origin:
            return False
        return not httpreq.is_browser_own(path)

    async def answers_settled(self, deadline: float) -> None:
        """Wait (at most ``deadline`` s) until every callback request already with the remote
        has its answer's first byte or its end (and so its event)."""
        await self._carrier.answers_settled(deadline)

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
                await asyncio.wait(handlers, timeout=CLOSE_DEADLINE * 2)
        finally:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until close() has finished."""
        await self._closed.wait()

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
            full = len(self._handlers) - len(self._evicted) >= self._max_connections
            if full and not self._evict_oldest_waiting():
                conn.close()  # every slot is answering a whole request: no room
                continue
            task = asyncio.create_task(self._handle(conn), name=f"callback conn {self.port}")
            self._handlers.add(task)
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        """A connection's handler ended: drop it from every bookkeeping set."""
        self._handlers.discard(task)
        self._evicted.discard(task)
        self._waiting.pop(task, None)

    def _evict_oldest_waiting(self) -> bool:
        """Close the oldest connection that has not sent a whole request yet; False if none."""
        if not self._waiting:
            return False
        task = next(iter(self._waiting))  # insertion order: the oldest first
        self._evicted.add(task)
        self._waiting.pop(task).transport.abort()
        return True

    async def _handle(self, conn: socket.socket) -> None:
        """Serve one browser connection; never lets an error escape."""
        conn.setblocking(False)
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=CHUNK)
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
        task = asyncio.current_task()
        if task is not None:
            self._waiting[task] = writer
        try:
            try:
                # One deadline for the whole request: a trickle of bytes does not extend it.
                request = await asyncio.wait_for(
                    read_request(reader, max_head=self._max_head, max_body=self._max_body),
                    self._request_timeout,
                )
            finally:
                if task is not None:
                    self._waiting.pop(task, None)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            # A preconnect that never sent anything, or a browser that went away mid-request:
            # nothing was carried, so there is nothing to report.
            await finish(reader, writer)
            return
        except LocalAnswer as answer:
            if not writer.transport.is_closing():
                await self._answer(reader, writer, answer.status, answer.title, answer.text, "")
            return
        if request is None or writer.transport.is_closing():
            await finish(reader, writer)
            return
        if task is not None:
            self._busy.add(task)
            task.add_done_callback(self._busy.discard)
        redacted = redact_target(request.target)
        belongs = self._belongs(request.path)
        try:
            httpreq.check_origin(request, self.port)
        except LocalAnswer as answer:
            # A DNS-rebinding page (or any other name for this port) never reaches the remote.
            text = answer.text
            await self._answer(reader, writer, answer.status, answer.title, text, redacted)
            return
        if not belongs:
            title, text = "Not Found", "This address is not part of the login."
            await self._answer(reader, writer, 404, title, text, redacted, request.method)
        elif not self._carrying:
            await self._answer(reader, writer, 200, *DONE_PAGE, redacted, request.method)
        elif await self._carrier.carry(request, redacted, writer):
            # Pass the remote's close on: an HTTP/1.0 page without Content-Length ends only here.
            await finish(reader, writer)
        else:
            await self._answer(reader, writer, 503, *BUSY_PAGE, redacted, request.method)

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
        await finish(reader, writer)

    def _emit(self, event: ListenerEvent) -> None:
        """Hand an event to the caller; a failing callback must not break a connection."""
        log.debug("listener event %s", event)
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("listener on_event callback failed")
