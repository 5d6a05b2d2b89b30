"""Which paths the listener carries (a CLI's own pages vs the browser's own requests), and
how a later line refines the callback's host and path on the same port."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.unit.test_listener import (
    CALLBACK,
    DEADLINE,
    Remote,
    fetch,
    free_port,
    get,
    ipv6_available,
    opener,
    run,
)
from tunnelauth import httpreq
from tunnelauth.errors import PortUnavailableError, UsageError
from tunnelauth.listener import CallbackListener, ListenerEvent
from tunnelauth.status import ExitStatus

BROWSER_OWN = (
    "/favicon.ico",
    "/apple-touch-icon.png",
    "/apple-touch-icon-precomposed.png",
    "/robots.txt",
    "/browserconfig.xml",
    "/.well-known/change-password",
)


def paths(remote: Remote) -> list[str]:
    """The request targets the stand-in for the remote listener received, in order."""
    return [request.split(b" ", 2)[1].decode() for request in remote.requests]


@pytest.mark.parametrize("path", BROWSER_OWN)
def test_browser_own_paths(path: str) -> None:
    assert httpreq.is_browser_own(path)


@pytest.mark.parametrize(
    "path", ["/", "/auth", "/callback", "/oauth/callback", "/favicon.ico.html", "/well-known/x"]
)
def test_login_paths_are_not_browser_own(path: str) -> None:
    assert not httpreq.is_browser_own(path)


def test_whole_origin_carries_the_clis_pages_but_not_the_browsers_own_requests() -> None:
    """rclone: its /auth start page and the callback on / go to the remote; icons do not."""

    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path="/", open_channel=opener(remote)
        ) as listener:
            listener.carry_whole_origin()
            own = [await fetch(port, get(port, path)) for path in BROWSER_OWN]
            start = await fetch(port, get(port, "/auth?state=abc"))
            callback = await fetch(port, get(port, f"/?code={CALLBACK}"))
            assert listener.answered_locally == len(BROWSER_OWN)
        assert all(answer.startswith(b"HTTP/1.1 404 ") for answer in own), own
        assert start.startswith(b"HTTP/1.1 200 ") and callback.startswith(b"HTTP/1.1 200 ")
        assert paths(remote) == ["/auth?state=abc", f"/?code={CALLBACK}"]

    run(main())


def test_unknown_path_keeps_a_favicon_away_from_a_single_request_remote() -> None:
    """No path known yet (every path carried): the favicon must not use up hermes MCP's answer."""

    async def main() -> None:
        remote = await Remote("once").start()
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path=None, open_channel=opener(remote)
        ) as listener:
            icon = await fetch(port, get(port, "/favicon.ico"))
            answer = await fetch(port, get(port, CALLBACK))
            assert listener.carried == 1
        assert icon.startswith(b"HTTP/1.1 404 ")
        assert b"Authenticated" in answer
        assert remote.connections == 1 and paths(remote) == [CALLBACK]

    run(main())


def test_the_callback_path_is_carried_even_without_the_whole_origin() -> None:
    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path="/callback", open_channel=opener(remote)
        ):
            other = await fetch(port, get(port, "/auth?state=abc"))
            await fetch(port, get(port, CALLBACK))
        assert other.startswith(b"HTTP/1.1 404 ")
        assert paths(remote) == [CALLBACK]

    run(main())


@pytest.mark.skipif(not ipv6_available(), reason="no ::1 on this machine")
def test_refine_to_localhost_adds_ipv6_and_keeps_a_connection_already_made() -> None:
    """``Listening on http://127.0.0.1:P``, then a redirect URI naming localhost and a path."""

    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port(both_families=True)
        events: list[ListenerEvent] = []
        async with await CallbackListener.open(
            host="127.0.0.1",
            port=port,
            path="/",
            open_channel=opener(remote),
            on_event=events.append,
        ) as listener:
            assert listener.bound == (f"127.0.0.1:{port}",)
            # A browser already connecting to the first socket when the refinement comes.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await listener.refine("localhost", "/oauth/callback")
            assert listener.bound == (f"127.0.0.1:{port}", f"[::1]:{port}")
            assert listener.path == "/oauth/callback" and listener.port == port
            writer.write(get(port, "/oauth/callback?code=1", host="localhost"))
            await writer.drain()
            early = await asyncio.wait_for(reader.read(), DEADLINE)
            writer.close()
            v6 = await fetch(port, get(port, "/oauth/callback?code=2", host="[::1]"), host="::1")
            root = await fetch(port, get(port, "/"))
            await listener.refine("localhost", None)  # a line without a path keeps the path
            assert listener.path == "/oauth/callback"
            assert len(listener.bound) == 2, "nothing bound twice"
        assert early.startswith(b"HTTP/1.1 200 ") and v6.startswith(b"HTTP/1.1 200 ")
        assert root.startswith(b"HTTP/1.1 404 ")
        assert paths(remote) == ["/oauth/callback?code=1", "/oauth/callback?code=2"]
        bound = [e.detail for e in events if e.kind == "bound"]
        assert bound == [f"127.0.0.1:{port}", f"[::1]:{port}"]

    run(main())


@pytest.mark.skipif(not ipv6_available(), reason="no ::1 on this machine")
def test_refine_to_an_address_taken_here_fails_clearly() -> None:
    """Another program holds [::1]:P: a browser sent to localhost:P could reach it instead."""

    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port(both_families=True)
        with socket.socket(socket.AF_INET6) as other:
            other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            other.bind(("::1", port))
            other.listen()
            async with await CallbackListener.open(
                host="127.0.0.1", port=port, path="/", open_channel=opener(remote)
            ) as listener:
                with pytest.raises(PortUnavailableError) as caught:
                    await listener.refine("localhost", "/oauth/callback")
                assert f"[::1]:{port}" in caught.value.message
                assert caught.value.status == ExitStatus.PORT_UNAVAILABLE
                assert listener.bound == (f"127.0.0.1:{port}",) and listener.path == "/"
                # The first socket still serves.
                assert (await fetch(port, get(port, "/?code=1"))).startswith(b"HTTP/1.1 200 ")

    run(main())


@pytest.mark.parametrize("host", ["10.0.0.1", "evil.test", "0.0.0.0", "::", "192.168.1.1"])
def test_refine_never_aims_the_listener_beyond_loopback(host: str) -> None:
    async def main() -> None:
        remote = await Remote("many").start()
        port = free_port()
        async with await CallbackListener.open(
            host="127.0.0.1", port=port, path="/callback", open_channel=opener(remote)
        ) as listener:
            with pytest.raises(UsageError):
                await listener.refine(host, "/elsewhere")
            assert listener.bound == (f"127.0.0.1:{port}",)
            assert listener.path == "/callback" and listener.host == "127.0.0.1"

    run(main())
