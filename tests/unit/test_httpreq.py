"""The listener's HTTP checks as pure functions: origin, credentials, cookies, paste-back."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnelauth.httpreq import (
    MAX_PASTE_URL,
    LocalAnswer,
    Request,
    check_origin,
    paste_url,
    request_target,
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


def test_request_target_of_raw_bytes() -> None:
    assert request_target(b"GET /cb?code=1 HTTP/1.1\r\nHost: x\r\n\r\n") == "/cb?code=1"
    assert request_target(b"nonsense") == ""


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
