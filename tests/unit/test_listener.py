"""CallbackListener against real loopback sockets and stand-ins for the remote's listener."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

import psutil
import pytest

from tunnelauth.errors import ChannelRefusedError, PortUnavailableError, SSHError, UsageError
from tunnelauth.httpreq import Request, redact_target
from tunnelauth.listener import MAX_CHANNELS, MAX_CONNECTIONS, CallbackListener, ListenerEvent
from tunnelauth.transports.base import Channel

SECRET = "s3cr3t-one-time-code"
_CHUNK = 65536
DEADLINE = 30.0
# The image makes a real browser send a second request to the port after the callback.
HERMES_PAGE = (
    b"<html><body><img src=/favicon.ico>"
    + b"x" * 200_000
    + b"<p id=done>Authenticated</p></body></html>"
)


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    """Run a test coroutine with an overall deadline."""

    async def guarded() -> Any:
        runner = asyncio.current_task()
        assert runner is not None
        runner.set_name("test-runner")
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


def listener_tasks() -> list[asyncio.Task[Any]]:
    """Tasks still running code of the listener module."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").startswith("CallbackListener.")
    ]


def other_tasks() -> list[asyncio.Task[Any]]:
    """Every task except the test itself."""
    mine = {asyncio.current_task()}
    return [t for t in asyncio.all_tasks() if t not in mine and t.get_name() != "test-runner"]


def free_port(*, both_families: bool = False) -> int:
    """A port free on 127.0.0.1 (and on ::1 when asked) right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not both_families or not ipv6_available():
            return port
        with socket.socket(socket.AF_INET6) as s6:
            try:
                s6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def ipv6_available() -> bool:
    """Whether ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


async def read_head_and_body(reader: asyncio.StreamReader) -> bytes:
    """One request as the stand-in sees it (head plus Content-Length body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


class Remote:
    """Stand-in for the remote's 127.0.0.1:P: hermes MCP (once) or Spotify (many)."""

    def __init__(
        self,
        mode: Literal["once", "many", "silent", "mute", "endless"],
        *,
        set_cookie: bytes = b"",
        gate: asyncio.Event | None = None,
    ) -> None:
        self.mode = mode
        self.requests: list[bytes] = []
        self.connections = 0
        self.set_cookie = set_cookie  # "many": a Set-Cookie value in every answer
        self.gate = gate  # "many": answers wait until it is set
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Remote:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.mode == "once":
                # Like hermes MCP: one request on any path, then nothing listens any more.
                assert self.server is not None
                self.server.close()
                self.requests.append(await read_head_and_body(reader))
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n")
                for i in range(0, len(HERMES_PAGE), 50_000):
                    writer.write(HERMES_PAGE[i : i + 50_000])
                    await writer.drain()
            elif self.mode == "many":
                while True:
                    request = await read_head_and_body(reader)
                    self.requests.append(request)
                    if self.gate is not None:
                        await self.gate.wait()
                    body = b"spotify ok " + str(len(self.requests)).encode()
                    cookie = b"Set-Cookie: %s\r\n" % self.set_cookie if self.set_cookie else b""
                    writer.write(
                        b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s"
                        % (cookie, len(body), body)
                    )
                    await writer.drain()
                    if b"\r\nconnection: close\r\n" in request.lower():
                        break
            elif self.mode == "endless":  # an answer that never ends
                self.requests.append(await read_head_and_body(reader))
                writer.write(b"HTTP/1.0 200 OK\r\n\r\n")
                while True:
                    writer.write(b"x" * 65536)
                    await writer.drain()
            elif self.mode == "silent":
                self.requests.append(await read_head_and_body(reader))
                await reader.read()  # never answers; waits for the listener to give up
            else:  # "mute": reads the request and closes without a byte
                self.requests.append(await read_head_and_body(reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class TcpChannel:
    """A Channel over a real TCP connection (what a direct-tcpip channel looks like here)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        refusal: str | None = None,
    ) -> None:
        self.reader = reader
        self._writer = writer
        self._refusal = refusal
        self.closed = False
        self.on_close: Callable[[], None] | None = None

    @classmethod
    async def connect(cls, port: int) -> TcpChannel:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return cls.refused("connect failed: Connection refused")
        return cls(reader, writer)

    @classmethod
    def refused(cls, message: str) -> TcpChannel:
        reader = asyncio.StreamReader()
        reader.feed_eof()
        return cls(reader, None, message)

    def write(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)

    async def drain(self) -> None:
        if self._writer is not None:
            await self._writer.drain()

    def write_eof(self) -> None:
        if self._writer is not None:
            self._writer.write_eof()

    async def close(self) -> None:
        if not self.closed and self.on_close is not None:
            self.on_close()
        self.closed = True
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def refusal(self) -> str | None:
        return self._refusal


def opener(
    remote: Remote, opened: list[TcpChannel] | None = None
) -> Callable[[], Awaitable[Channel]]:
    """open_channel for the listener: a fresh TCP connection to the stand-in each time."""

    async def open_channel() -> Channel:
        channel = await TcpChannel.connect(remote.port)
        if opened is not None:
            opened.append(channel)
        return channel

    return open_channel


async def listening(port: int, remote: Remote, events: list[ListenerEvent]) -> CallbackListener:
    """A listener on ``port`` for ``/callback``, carrying to ``remote``; its events go to
    ``events``."""
    return await CallbackListener.open(
        host="127.0.0.1",
        port=port,
        path="/callback",
        open_channel=opener(remote),
        on_event=events.append,
    )


class ChannelCounter:
    """open_channel that counts the channels it opens and the most open at once."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.opened = 0
        self.live = 0
        self.most = 0

    async def open_channel(self) -> Channel:
        channel = await TcpChannel.connect(self.remote.port)
        self.opened += 1
        self.live += 1
        self.most = max(self.most, self.live)
        channel.on_close = self._closed
        return channel

    def _closed(self) -> None:
        self.live -= 1


async def fetch(port: int, raw: bytes, host: str = "127.0.0.1") -> bytes:
    """Send raw bytes, read the whole answer until the server closes."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), DEADLINE)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), DEADLINE)
    finally:
        writer.close()


def get(port: int, path: str, *extra: bytes, host: str = "127.0.0.1") -> bytes:
    """A browser-like GET head, addressed to ``host:port``."""
    lines = [b"GET " + path.encode() + b" HTTP/1.1", f"Host: {host}:{port}".encode(), *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


# Keeps the test browser on this machine: no DNS lookup ever leaves it.
RESOLVER_RULES = (
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost, EXCLUDE ::1"
)
CALLBACK = f"/callback?code={SECRET}&state=xyz"


def test_callback_reaches_single_request_listener_once_favicon_stays_local() -> None:
    async def main() -> None:
        remote = await Remote("once").start()
        events: list[ListenerEvent] = []
        port = free_port()
        async with await listening(port, remote, events) as listener:
            before = await fetch(port, get(port, "/favicon.ico"))
            answer = await fetch(port, get(port, CALLBACK, b"Connection: keep-alive"))
            after = await fetch(port, get(port, "/favicon.ico"))
            assert listener.carried == 1
            assert listener.answered_locally == 2
        assert before.startswith(b"HTTP/1.1 404 ") and b"Connection: close" in before
        assert after.startswith(b"HTTP/1.1 404 ")
        # The HTTP/1.0 page without Content-Length arrived whole: the close was passed on.
        assert answer == b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n" + HERMES_PAGE
        assert remote.connections == 1
        assert remote.requests == [
            f"GET {CALLBACK} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Connection: close\r\n\r\n".encode()
        ]
        assert SECRET not in repr(events)
        carried = [e for e in events if e.kind == "request_carried"]
        assert carried == [ListenerEvent("request_carried", "/callback?code=…&state=…", 200)]
        assert events[0].kind == "bound" and f"127.0.0.1:{port}" in events[0].detail

    run(main())


def test_many_request_server_gets_exact_head_and_body_but_no_pipelined_extra() -> None:
    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port()
        body = b"code=" + SECRET.encode() + b"&state=1"
        head = (
            b"POST /cb?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Extra: a  b\r\n"
            b"Proxy-Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n"
            b"Content-Length: %d\r\n\r\n" % (port, len(body))
        )
        pipelined = get(port, "/cb?second=1")
        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path="/cb", open_channel=opener(remote)
        ) as listener:
            answer = await fetch(port, head + body + pipelined)
            assert listener.carried == 1
        assert answer == b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nspotify ok 1"
        assert remote.requests == [
            b"POST /cb?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Extra: a  b\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (port, len(body)) + body
        ]

    run(main())


def test_path_none_carries_every_path_and_urllib_reads_it() -> None:
    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path=None, open_channel=opener(remote)
        ) as listener:
            url = f"http://127.0.0.1:{port}/auth?state=abc"

            def fetch_urllib() -> bytes:
                with urllib.request.urlopen(url, timeout=DEADLINE) as response:
                    return bytes(response.read())

            first = await asyncio.to_thread(fetch_urllib)
            second = await asyncio.to_thread(fetch_urllib)
            assert (first, second) == (b"spotify ok 1", b"spotify ok 2")
            assert listener.carried == 2 and listener.answered_locally == 0

    run(main())


def test_chromium_gets_the_whole_http10_page_and_the_remote_one_request(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required when CI is set")
        pytest.skip("chromium not installed")

    async def main() -> None:
        remote = await Remote("once").start()
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path="/callback", open_channel=opener(remote)
        ) as listener:
            argv = [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                RESOLVER_RULES,
                f"--user-data-dir={tmp_path / 'profile'}",
                "--dump-dom",
                f"http://127.0.0.1:{port}{CALLBACK}",
            ]
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                dom, _ = await asyncio.wait_for(proc.communicate(), 90)
            finally:
                if proc.returncode is None:
                    os.killpg(proc.pid, 9)
                    await proc.wait()
            assert b"Authenticated" in dom
            assert listener.carried == 1
            assert listener.answered_locally >= 1 and listener.refused == 0
        assert remote.connections == 1 and len(remote.requests) == 1
        assert remote.requests[0].startswith(f"GET {CALLBACK} HTTP/1.1\r\n".encode())

    run(main(), timeout=120)


@pytest.mark.parametrize("fallback", [True, False])
def test_refused_channel_keeps_the_request_for_the_fallback(fallback: bool) -> None:
    async def main() -> None:
        seen: list[tuple[bytes, str]] = []
        events: list[ListenerEvent] = []

        async def on_refused(request: bytes, message: str) -> bytes | None:
            seen.append((request, message))
            return b"HTTP/1.0 200 OK\r\n\r\nrelayed" if fallback else None

        async def refusing() -> Channel:
            return TcpChannel.refused("administratively prohibited: open failed")

        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1",
            port=port,
            path="/callback",
            open_channel=refusing,
            on_refused=on_refused,
            on_event=events.append,
        ) as listener:
            answer = await fetch(port, get(port, CALLBACK))
            assert listener.refused == 1 and listener.carried == 0
        request = f"GET {CALLBACK} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        assert seen == [(request.encode(), "administratively prohibited: open failed")]
        if fallback:
            assert answer == b"HTTP/1.0 200 OK\r\n\r\nrelayed"
        else:
            assert answer.startswith(b"HTTP/1.1 502 ") and b"refused" in answer
        assert [e.kind for e in events] == ["bound", "refused"]
        assert SECRET not in repr(events)

    run(main())


def test_refusal_raised_by_open_channel_and_connect_failed_after_single_use() -> None:
    async def main() -> None:
        remote = await Remote("once").start()
        port = free_port()
        calls = 0

        async def open_channel() -> Channel:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ChannelRefusedError("administratively prohibited", administratively=True)
            return await TcpChannel.connect(remote.port)

        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path="/callback", open_channel=open_channel
        ) as listener:
            first = await fetch(port, get(port, CALLBACK))
            second = await fetch(port, get(port, CALLBACK))
            third = await fetch(port, get(port, CALLBACK))  # the remote stopped listening: refused
            assert (listener.refused, listener.carried) == (2, 1)
        assert first.startswith(b"HTTP/1.1 502 ")
        assert second.endswith(b"Authenticated</p></body></html>")
        assert third.startswith(b"HTTP/1.1 502 ")

    run(main())


def test_remote_closing_without_a_byte_gives_502_and_an_event() -> None:
    async def main() -> None:
        remote = await Remote("mute").start()
        events: list[ListenerEvent] = []
        port = free_port()
        async with await listening(port, remote, events):
            answer = await fetch(port, get(port, CALLBACK))
        assert answer.startswith(b"HTTP/1.1 502 ")
        assert [e.kind for e in events] == ["bound", "carry_failed"]

    run(main())


def test_a_broken_transport_gives_502_and_the_listener_keeps_serving() -> None:
    async def main() -> None:
        remote = await Remote("many").start()
        events: list[ListenerEvent] = []
        calls = 0

        async def flaky() -> Channel:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise SSHError("the SSH connection was lost", host="remote")
            return await TcpChannel.connect(remote.port)

        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1",
            port=port,
            path="/callback",
            open_channel=flaky,
            on_event=events.append,
        ) as listener:
            failed = await fetch(port, get(port, CALLBACK))
            ok = await fetch(port, get(port, CALLBACK))
            assert listener.carried == 1
        assert failed.startswith(b"HTTP/1.1 502 ") and b"Tunnel failed" in failed
        assert ok.endswith(b"spotify ok 1")
        assert [e.kind for e in events] == ["bound", "carry_failed", "request_carried"]
        assert "connection was lost" in events[1].detail

    run(main())


def test_stop_carrying_answers_locally() -> None:
    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path="/callback", open_channel=opener(remote)
        ) as listener:
            listener.stop_carrying()
            answer = await fetch(port, get(port, CALLBACK))
            head_only = await fetch(port, get(port, CALLBACK).replace(b"GET", b"HEAD", 1))
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"close this tab" in answer
        assert head_only.endswith(b"\r\n\r\n")
        assert remote.connections == 0 and listener.answered_locally == 2

    run(main())


def test_an_answer_still_on_its_way_is_awaited_before_the_login_is_judged() -> None:
    """The remote's output may end before the answer to a carried callback arrives: the run
    waits for that answer (and its ``request_carried`` event) before judging the login."""

    async def main() -> None:
        gate = asyncio.Event()
        remote = await Remote("many", gate=gate).start()
        events: list[ListenerEvent] = []
        port = free_port()
        async with await listening(port, remote, events) as listener:
            await listener.answers_settled(DEADLINE)  # nothing on its way: at once
            browser = asyncio.ensure_future(fetch(port, get(port, CALLBACK)))
            while not remote.requests:  # the request reached the remote, which holds its answer
                await asyncio.wait({browser}, timeout=0.01)
            settled = asyncio.ensure_future(listener.answers_settled(DEADLINE))
            done, _ = await asyncio.wait({settled}, timeout=0.3)
            assert not done, "settled before the remote answered"
            gate.set()
            await asyncio.wait_for(settled, DEADLINE)
            carried = [e.kind for e in events if e.kind == "request_carried"]
            assert carried == ["request_carried"]  # there when the wait ends
            assert (await asyncio.wait_for(browser, DEADLINE)).startswith(b"HTTP/1.1 200 OK")

    run(main())


def test_an_answer_that_never_comes_is_awaited_only_until_the_deadline() -> None:
    async def main() -> None:
        remote = await Remote("silent").start()
        events: list[ListenerEvent] = []
        port = free_port()
        async with await listening(port, remote, events) as listener:
            browser = asyncio.ensure_future(fetch(port, get(port, CALLBACK)))
            while not remote.requests:
                await asyncio.wait({browser}, timeout=0.01)
            await asyncio.wait_for(listener.answers_settled(0.1), DEADLINE)
            assert not [e for e in events if e.kind == "request_carried"]
            browser.cancel()

    run(main())


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /callback HTTP/1.1\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", b"431"),
        (b"POST /callback HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", b"413"),
        (b"POST /callback HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"411"),
        (b"PUT /callback HTTP/1.1\r\n\r\n", b"405"),
        (b"GET /callback\r\n\r\n", b"400"),
        (b"GET /callback HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"400"),
        (b"GET /callback?code=" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET /callback?code=x\rLINE\x03 HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /callback?code=\xff HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /callback HTTP/1.1\r\nX-A: b\r\n Cookie: folded\r\n\r\n", b"400"),
        (b"GET /callback HTTP/1.1\r\nCookie : spaced\r\n\r\n", b"400"),
        (b"GET /callback HTTP/1.1\r\nX-A: b\rCookie: c=1\r\n\r\n", b"400"),
    ],
)
def test_bad_requests_are_answered_locally(raw: bytes, status: bytes) -> None:
    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path="/callback", open_channel=opener(remote)
        ) as listener:
            answer = await fetch(port, raw)
            assert listener.answered_locally == 1
        assert answer.startswith(b"HTTP/1.1 " + status + b" ")
        assert remote.connections == 0

    run(main())


def test_preconnect_that_sends_nothing_is_closed_at_the_deadline() -> None:
    async def main() -> None:
        remote = await Remote("once").start()
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1",
            port=port,
            path="/callback",
            open_channel=opener(remote),
            request_timeout=0.2,
        ) as listener:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
            writer.close()
            assert listener.answered_locally == 0 and listener.carried == 0
        assert remote.connections == 0

    run(main())


def test_port_conflict_names_the_holding_process() -> None:
    holder = (
        "import socket, sys\n"
        "s = socket.socket()\n"
        "s.bind(('127.0.0.1', 0))\n"
        "s.listen()\n"
        "print(s.getsockname()[1], flush=True)\n"
        "sys.stdin.read()\n"
    )

    async def main() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            holder,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            port = int(await asyncio.wait_for(proc.stdout.readline(), DEADLINE))

            async def never() -> Channel:
                raise AssertionError("no channel expected")

            with pytest.raises(PortUnavailableError) as caught:
                await CallbackListener.open(
                    host="127.0.0.1", port=port, path="/callback", open_channel=never
                )
            assert caught.value.port == port
            assert f"pid {proc.pid}" in caught.value.holder
            assert f"pid {proc.pid}" in caught.value.message and caught.value.hint
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), DEADLINE)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        assert other_tasks() == []

    run(main())


def test_localhost_binds_both_families() -> None:
    async def main() -> None:
        remote = await Remote("many").start()
        events: list[ListenerEvent] = []
        port = free_port(both_families=True)
        async with await CallbackListener.open(
            host="localhost",
            port=port,
            path="/callback",
            open_channel=opener(remote),
            on_event=events.append,
        ) as listener:
            v4 = await fetch(port, get(port, CALLBACK), "127.0.0.1")
            assert v4.endswith(b"spotify ok 1")
            if ipv6_available():
                assert listener.bound == (f"127.0.0.1:{port}", f"[::1]:{port}")
                v6 = await fetch(port, get(port, CALLBACK), "::1")
                assert v6.endswith(b"spotify ok 2")
            else:
                assert "IPv4 only" in events[0].detail
        assert listener.carried == len(remote.requests)

    run(main())


def test_v6_only_host_binds_only_v6() -> None:
    if not ipv6_available():
        pytest.skip("no ::1 here")

    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port(both_families=True)
        async with await CallbackListener.open(
            host="[::1]", port=port, path="/callback", open_channel=opener(remote)
        ) as listener:
            assert listener.bound == (f"[::1]:{port}",)
            with pytest.raises(OSError):
                await fetch(port, get(port, CALLBACK), "127.0.0.1")
            assert (await fetch(port, get(port, CALLBACK), "::1")).endswith(b"spotify ok 1")

    run(main())


def test_port_in_time_wait_binds_again() -> None:
    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port()
        args: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "path": "/callback",
            "open_channel": opener(remote),
        }
        async with await CallbackListener.open(**args):
            await fetch(port, get(port, CALLBACK))
        # The listener closed first, so its side of that connection now sits in TIME_WAIT.
        states = {
            c.status for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
        }
        assert psutil.CONN_TIME_WAIT in states
        async with await CallbackListener.open(**args) as again:
            assert (await fetch(port, get(port, CALLBACK))).endswith(b"spotify ok 2")
            assert again.carried == 1

    run(main())


def test_close_ends_everything_frees_the_port_and_leaves_no_tasks() -> None:
    async def main() -> None:
        remote = await Remote("silent").start()
        opened: list[TcpChannel] = []
        port = free_port()
        listener = await CallbackListener.open(
            host="127.0.0.1", port=port, path="/callback", open_channel=opener(remote, opened)
        )
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_writer.write(get(port, CALLBACK))
        await busy_writer.drain()
        while not remote.requests:  # the carried request reached the never-answering remote
            await asyncio.sleep(0.01)
        await listener.close()
        await listener.close()  # idempotent
        await listener.wait_closed()
        assert await asyncio.wait_for(idle_reader.read(), DEADLINE) == b""
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(busy_reader.read(), DEADLINE) == b""
        assert opened and all(channel.closed for channel in opened)
        idle_writer.close()
        busy_writer.close()
        await remote.stop()
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            probe.listen()
        assert listener_tasks() == []
        # The stand-in's own handler ends once it sees the channel's EOF.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while other_tasks() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert other_tasks() == []

    run(main())


def test_rejects_non_loopback_hosts_and_bad_ports() -> None:
    async def never() -> Channel:
        raise AssertionError

    with pytest.raises(UsageError):
        CallbackListener(host="0.0.0.0", port=8080, path="/", open_channel=never)
    with pytest.raises(UsageError):
        CallbackListener(host="example.com", port=8080, path="/", open_channel=never)
    with pytest.raises(UsageError):
        CallbackListener(host="127.0.0.1", port=0, path="/", open_channel=never)


def test_redaction_keeps_only_parameter_names() -> None:
    assert redact_target(f"/callback?code={SECRET}&state=abc") == "/callback?code=…&state=…"
    assert redact_target("/favicon.ico") == "/favicon.ico"
    assert redact_target(f"http://127.0.0.1:5/cb?code={SECRET}") == "/cb?code=…"


def test_forward_bytes_keeps_lf_only_heads_consistent() -> None:
    request = Request("GET", "/", b"GET / HTTP/1.0\nConnection: keep-alive\nA: b\n\n", b"")
    assert request.forward_bytes() == b"GET / HTTP/1.0\nA: b\nConnection: close\n\n"


# --- the listener serves the browser, and nothing else ---

LAPTOP_SECRET = "laptop-session-of-another-local-app"


def other_port(port: int) -> int:
    """A port number that is not ``port``."""
    return port + 1 if port < 65535 else port - 1


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ("GET {cb} HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n", b"421"),
        ("GET {cb} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"421"),
        ("GET {cb} HTTP/1.1\r\nHost: 127.0.0.1:{other}\r\n\r\n", b"421"),
        ("GET {cb} HTTP/1.1\r\nHost: localhost.:{port}\r\n\r\n", b"421"),
        ("GET {cb} HTTP/1.1\r\nHost: 127.0.0.1.evil.example:{port}\r\n\r\n", b"421"),
        ("GET http://evil.example:{port}{cb} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n", b"421"),
        ("GET {cb} HTTP/1.1\r\n\r\n", b"400"),
        ("GET {cb} HTTP/1.0\r\n\r\n", b"400"),
        ("GET {cb} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n\r\n", b"400"),
    ],
)
def test_a_request_for_another_host_is_refused_and_the_real_callback_still_gets_through(
    head: str, status: bytes
) -> None:
    async def main() -> None:
        remote = await Remote("once").start()
        events: list[ListenerEvent] = []
        port = free_port()
        # A rebinding page would bring its own code: it must never use up the one request.
        hostile = "/callback?code=attacker&state=attacker"
        raw = head.format(cb=hostile, port=port, other=other_port(port)).encode()
        async with await listening(port, remote, events) as listener:
            refused = await fetch(port, raw)
            assert remote.connections == 0
            real = await fetch(port, get(port, CALLBACK))
            assert (listener.carried, listener.answered_locally) == (1, 1)
        assert refused.startswith(b"HTTP/1.1 " + status + b" ")
        assert real.endswith(b"Authenticated</p></body></html>")
        assert remote.requests == [
            f"GET {CALLBACK} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Connection: close\r\n\r\n".encode()
        ]
        assert ListenerEvent("request_local", "/callback?code=…&state=…", int(status)) in events

    run(main())


@pytest.mark.parametrize("host", ["localhost", "LocalHost", "[::1]", "127.0.0.1"])
def test_every_loopback_name_of_the_port_is_served(host: str) -> None:
    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path="/callback", open_channel=opener(remote)
        ) as listener:
            answer = await fetch(port, get(port, CALLBACK, host=host))
            assert listener.carried == 1
        assert answer.endswith(b"spotify ok 1")

    run(main())


def test_laptop_cookies_and_authorization_never_reach_the_remote_but_its_own_cookies_do() -> None:
    async def main() -> None:
        remote = await Remote("many", set_cookie=b"remote_sid=r1; Path=/; HttpOnly").start()
        port = free_port()
        credentials = (
            f"Cookie: laptop_app={LAPTOP_SECRET}; remote_sid=r1".encode(),
            f"Authorization: Bearer {LAPTOP_SECRET}".encode(),
            f"Proxy-Authorization: Basic {LAPTOP_SECRET}".encode(),
            f"cookie: second_line={LAPTOP_SECRET}".encode(),
        )
        args: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "path": "/callback",
            "open_channel": opener(remote),
        }
        async with await CallbackListener.open(**args):
            # The first answer sets remote_sid: from then on (this run only) it may go back.
            first = await fetch(port, get(port, CALLBACK, *credentials))
            second = await fetch(port, get(port, CALLBACK, *credentials))
        async with await CallbackListener.open(**args):
            third = await fetch(port, get(port, CALLBACK, *credentials))
        assert (first, second, third) == tuple(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: remote_sid=r1; Path=/; HttpOnly\r\n"
            b"Content-Length: 12\r\n\r\nspotify ok %d" % n
            for n in (1, 2, 3)
        )
        bare = f"GET {CALLBACK} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        assert remote.requests == [
            f"{bare}Connection: close\r\n\r\n".encode(),
            f"{bare}Cookie: remote_sid=r1\r\nConnection: close\r\n\r\n".encode(),
            f"{bare}Connection: close\r\n\r\n".encode(),
        ]
        assert all(LAPTOP_SECRET.encode() not in request for request in remote.requests)

    run(main())


def test_a_cookie_set_in_a_relayed_answer_may_go_back_too() -> None:
    async def main() -> None:
        seen: list[bytes] = []
        calls = 0

        async def on_refused(request: bytes, message: str) -> bytes | None:
            seen.append(request)
            return b"HTTP/1.0 200 OK\r\nSet-Cookie: relayed=1\r\n\r\nok"

        async def refusing() -> Channel:
            nonlocal calls
            calls += 1
            return TcpChannel.refused("administratively prohibited: open failed")

        port = free_port()
        cookie = f"Cookie: relayed=1; laptop_app={LAPTOP_SECRET}".encode()
        async with await CallbackListener.open(
            host="127.0.0.1",
            port=port,
            path="/callback",
            open_channel=refusing,
            on_refused=on_refused,
        ):
            await fetch(port, get(port, CALLBACK, cookie))
            await fetch(port, get(port, CALLBACK, cookie))
        assert calls == 2
        assert b"Cookie" not in seen[0]
        assert b"\r\nCookie: relayed=1\r\n" in seen[1] and LAPTOP_SECRET.encode() not in seen[1]

    run(main())


async def closed_by_peer(reader: asyncio.StreamReader) -> None:
    """Return once the other end has closed (or reset) the connection."""
    with contextlib.suppress(ConnectionError):
        await reader.read()


def test_a_flood_of_idle_connections_is_bounded_and_the_callback_still_gets_through() -> None:
    async def main() -> None:
        remote = await Remote("once").start()
        counter = ChannelCounter(remote)
        port = free_port()
        flood = 200
        async with await CallbackListener.open(
            host="127.0.0.1",
            port=port,
            path="/callback",
            open_channel=counter.open_channel,
            # Far beyond the test's deadline: only the connection limit can close them.
            request_timeout=DEADLINE * 10,
        ) as listener:
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(flood)]
            watchers = [asyncio.create_task(closed_by_peer(reader)) for reader, _ in idle]
            try:
                # Every connection beyond the limit makes the listener close an older idle one.
                while sum(w.done() for w in watchers) < flood - MAX_CONNECTIONS:
                    pending = [w for w in watchers if not w.done()]
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                assert sum(w.done() for w in watchers) == flood - MAX_CONNECTIONS
                assert counter.opened == 0, "an idle connection never gets a channel"
                answer = await fetch(port, get(port, CALLBACK))
                assert listener.carried == 1
            finally:
                for watcher in watchers:
                    watcher.cancel()
                for _, writer in idle:
                    writer.close()
        assert answer.endswith(b"Authenticated</p></body></html>")
        assert counter.opened == 1 and remote.connections == 1

    run(main())


def test_channels_are_bounded_and_a_request_beyond_them_waits_its_turn() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        remote = await Remote("many", gate=gate).start()
        counter = ChannelCounter(remote)
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path="/callback", open_channel=counter.open_channel
        ) as listener:
            fetches = [
                asyncio.create_task(fetch(port, get(port, CALLBACK)))
                for _ in range(MAX_CHANNELS + 1)
            ]
            while len(remote.requests) < MAX_CHANNELS:  # every channel holds a request
                await asyncio.sleep(0.01)
            gate.set()
            answers = await asyncio.gather(*fetches)
            assert listener.carried == MAX_CHANNELS + 1
        assert all(answer.startswith(b"HTTP/1.1 200 OK") for answer in answers)
        assert counter.most == MAX_CHANNELS and counter.opened == MAX_CHANNELS + 1

    run(main())


def test_a_flood_of_callback_requests_opens_no_more_channels_than_the_limit() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        remote = await Remote("many", gate=gate).start()
        counter = ChannelCounter(remote)
        events: list[ListenerEvent] = []
        port = free_port()
        flood = MAX_CONNECTIONS  # all accepted: only the channel limit is at work here
        async with await CallbackListener.open(
            host="127.0.0.1",
            port=port,
            path="/callback",
            open_channel=counter.open_channel,
            on_event=events.append,
            request_timeout=2.0,  # also how long a request waits for a free channel
        ):
            fetches = [asyncio.create_task(fetch(port, get(port, CALLBACK))) for _ in range(flood)]
            busy: list[bytes] = []
            # The remote holds every answer; requests beyond the channels get a local 503.
            for done in asyncio.as_completed(fetches):
                busy.append(await done)
                if len(busy) == flood - MAX_CHANNELS:
                    break
            gate.set()
            carried = await asyncio.gather(*fetches)
        assert all(answer.startswith(b"HTTP/1.1 503 ") for answer in busy), busy
        assert sum(answer.startswith(b"HTTP/1.1 200 OK") for answer in carried) == MAX_CHANNELS
        assert counter.opened == counter.most == MAX_CHANNELS
        assert len(remote.requests) == MAX_CHANNELS
        assert sum(e.status == 503 for e in events if e.kind == "carry_failed") == len(busy)

    run(main())


def test_a_trickling_request_is_closed_at_the_deadline() -> None:
    async def main() -> None:
        remote = await Remote("once").start()
        port = free_port()
        raw = get(port, CALLBACK)
        async with await CallbackListener.open(
            host="127.0.0.1",
            port=port,
            path="/callback",
            open_channel=opener(remote),
            request_timeout=0.5,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            sent, closed = 0, False
            try:
                for byte in raw:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    sent += 1
                    try:  # one byte at most every 50 ms: the whole request takes seconds
                        await asyncio.wait_for(closed_by_peer(reader), 0.05)
                    except asyncio.TimeoutError:
                        continue
                    closed = True
                    break
            except ConnectionError:
                closed = True
            finally:
                writer.close()
        assert closed and sent < len(raw), "the listener waited for the whole trickle"
        assert remote.connections == 0

    run(main())


def test_an_answer_that_never_ends_is_cut_at_the_exchange_deadline() -> None:
    async def main() -> None:
        remote = await Remote("endless").start()
        counter = ChannelCounter(remote)
        events: list[ListenerEvent] = []
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1",
            port=port,
            path="/callback",
            open_channel=counter.open_channel,
            on_event=events.append,
            response_timeout=1.0,
        ):
            # The browser reads as fast as it can: every single write completes at once, so
            # only a deadline on the whole exchange ends it.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get(port, CALLBACK))
            first = await reader.readexactly(24)
            while await asyncio.wait_for(reader.read(_CHUNK), DEADLINE):
                pass  # read and dropped: memory stays flat however long it streams
            writer.close()
            assert counter.live == 0, "the channel was closed"
        assert first == b"HTTP/1.0 200 OK\r\n\r\nxxxxx"
        assert [e.kind for e in events] == ["bound", "request_carried", "carry_failed"]
        assert events[-1].detail == "timed out"

    run(main())
