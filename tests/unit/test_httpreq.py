"""The listener's HTTP checks as pure functions: origin, credentials, cookies, paste-back."""

from __future__ import annotations

import asyncio
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnelauth.httpreq import (
    MAX_PASTE_URL,
    LocalAnswer,
    Request,
    check_origin,
    parse_request,
    paste_url,
    read_request,
    set_cookie_names,
)

PORT = 43827


def request(*headers: str, target: str = "/callback?code=c&state=s") -> Request:
    """A request as read_request returns it, with these header lines."""
    head = "\r\n".join([f"GET {target} HTTP/1.1", *headers]) + "\r\n\r\n"
    return Request("GET", target, head.encode(), b"")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]"])
def test_the_loopback_names_of_the_port_pass(host: str) -> None:
    check_origin(request(f"Host: {host}:{PORT}"), PORT)
    check_origin(request(f"Host:  {host}:{PORT} "), PORT)
    absolute = f"http://{host}:{PORT}/callback"
    check_origin(request(f"Host: {host}:{PORT}", target=absolute), PORT)


@pytest.mark.parametrize(
    ("headers", "target", "status"),
    [
        ((f"Host: evil.example:{PORT}",), "/callback", 421),
        ((f"Host: 127.0.0.1:{PORT + 1}",), "/callback", 421),
        (("Host: 127.0.0.1",), "/callback", 421),
        ((f"Host: 127.0.0.2:{PORT}",), "/callback", 421),
        ((f"Host: [::ffff:127.0.0.1]:{PORT}",), "/callback", 421),
        ((f"Host: 127.0.0.1:{PORT}",), f"http://evil.example:{PORT}/callback", 421),
        ((f"Host: 127.0.0.1:{PORT}",), f"http://u@127.0.0.1:{PORT}/callback", 421),
        ((), "/callback", 400),
        ((f"Host: 127.0.0.1:{PORT}", f"Host: 127.0.0.1:{PORT}"), "/callback", 400),
    ],
)
def test_any_other_origin_is_refused(headers: tuple[str, ...], target: str, status: int) -> None:
    with pytest.raises(LocalAnswer) as caught:
        check_origin(request(*headers, target=target), PORT)
    assert caught.value.status == status


def test_forwarded_requests_keep_only_the_remotes_own_cookies() -> None:
    raw = request(
        f"Host: 127.0.0.1:{PORT}",
        "Cookie: laptop=1; sid=abc;other=2",
        "COOKIE: sid2=x",
        "Authorization: Basic dXNlcjpwdw==",
        "Proxy-Authorization: Basic eA==",
        "Connection: keep-alive",
        "Accept: text/html",
    )
    assert (
        raw.forward_bytes()
        == (
            f"GET /callback?code=c&state=s HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n"
            "Accept: text/html\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    assert (
        raw.forward_bytes({"sid", "sid2"})
        == (
            f"GET /callback?code=c&state=s HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n"
            "Cookie: sid=abc\r\nCOOKIE: sid2=x\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        ).encode()
    )


def test_set_cookie_names_reads_only_the_response_head() -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=1; Path=/\r\nset-cookie:  pref=x\r\n"
        b"Set-Cookie: bad name=1\r\nContent-Length: 30\r\n\r\nSet-Cookie: inbody=1\r\n"
    )
    assert set_cookie_names(response) == {"sid", "pref"}


# A form_post callback as Chromium sends it (response_mode=form_post: MSAL, az).
FORM_POST = (
    b"POST /callback HTTP/1.1\r\n"
    + f"Host: 127.0.0.1:{PORT}\r\n".encode()
    + b"Connection: keep-alive\r\nContent-Length: 33\r\n"
    b"Cache-Control: max-age=0\r\nOrigin: https://idp.test\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nX-Empty:\r\n"
    b"Cookie: sid=1\r\n\r\n"
    b"code=%40a%2Bb&state=s+t&x=@c&y=%0"
)


async def _read(raw: bytes) -> Request | None:
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    return await read_request(reader)


def test_parse_request_reads_a_whole_request_as_the_listener_does() -> None:
    read = asyncio.run(_read(FORM_POST + b"GET /pipelined HTTP/1.1\r\n\r\n"))
    parsed = parse_request(FORM_POST)
    assert read == parsed
    assert (parsed.method, parsed.target, parsed.path) == ("POST", "/callback", "/callback")
    assert parsed.body == b"code=%40a%2Bb&state=s+t&x=@c&y=%0"
    assert parsed.fields()[2:5] == (
        ("Content-Length", "33"),
        ("Cache-Control", "max-age=0"),
        ("Origin", "https://idp.test"),
    )
    assert ("X-Empty", "") in parsed.fields()


def test_a_forwarded_request_parses_back_to_the_same_request() -> None:
    # What the listener forwards (to a channel or the relay) is read back by the same parser.
    original = parse_request(FORM_POST)
    again = parse_request(original.forward_bytes())
    assert (again.method, again.target, again.body) == ("POST", "/callback", original.body)
    dropped = {"Connection", "Cookie"}
    kept = [field for field in original.fields() if field[0] not in dropped]
    assert list(again.fields()) == [*kept, ("Connection", "close")]
    lf_only = parse_request(FORM_POST.replace(b"\r\n", b"\n"))
    assert parse_request(lf_only.forward_bytes()).body == original.body


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /callback HTTP/1.1\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", 431),
        (b"POST /callback HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", 413),
        (b"POST /callback HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"PUT /callback HTTP/1.1\r\n\r\n", 405),
        (b"GET /callback?code=x\0 HTTP/1.1\r\n\r\n", 400),
        (b"GET /callback HTTP/1.1\r\nX-A: b\r\n Cookie: folded\r\n\r\n", 400),
        (b"POST /callback HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort", 400),
        (b"GET /callback HTTP/1.1\r\nHost: x\r\n", 400),
    ],
)
def test_parse_request_refuses_what_the_listener_refuses(raw: bytes, status: int) -> None:
    with pytest.raises(LocalAnswer) as parsed:
        parse_request(raw)
    assert parsed.value.status == status
    if b"short" not in raw and raw.endswith(b"\r\n\r\n"):
        with pytest.raises(LocalAnswer) as read:
            asyncio.run(_read(raw))
        assert read.value.status == status


@pytest.mark.parametrize(
    "target",
    [
        "/callback?code=x\rLINE\x03",
        "/callback?code=x\nsecond line",
        "/callback?code=x\x1b[2J",
        "/callback?code=x y",
        "/callback?code=\u00e9",
        "/callback?code=x#fragment",
        "/callback?code=<x>",
        "/callback?code=%zz",
        "callback?code=x",
        "http://127.0.0.1:1/callback?code=x",
        "/callback?code=" + "a" * MAX_PASTE_URL,
        "",
    ],
)
def test_paste_url_refuses_anything_but_a_callback(target: str) -> None:
    assert paste_url("127.0.0.1", PORT, target) is None


def test_paste_url_builds_the_redirect_url() -> None:
    target = "/callback?code=a-b_c.d~e%2F&state=x:y@z/?w"
    assert paste_url("127.0.0.1", PORT, target) == f"http://127.0.0.1:{PORT}{target}"
    assert paste_url("::1", PORT, "/cb?code=1") == f"http://[::1]:{PORT}/cb?code=1"


@given(st.text(max_size=300) | st.from_regex(r"/[ -~]{0,200}", fullmatch=True))
def test_a_pasted_url_is_one_printable_line_whatever_the_target(target: str) -> None:
    url = paste_url("127.0.0.1", PORT, target)
    if url is not None:
        allowed = set(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/?%[]")
        assert set(url) <= allowed and len(url) < MAX_PASTE_URL
        assert url == f"http://127.0.0.1:{PORT}{target}"
