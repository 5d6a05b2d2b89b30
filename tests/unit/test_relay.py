"""The relay command, run for real by each login shell against a loopback listener.

Every route (the login's python, bash's /dev/tcp, curl) is forced by what is on the PATH. The
listener records the bytes it receives and, while the relay waits for its answer, every
process command line on this machine: none may hold any part of the request.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tunnelauth import listener as callback_listener
from tunnelauth import relay
from tunnelauth.httpreq import parse_request
from tunnelauth.relay import curl_config, relay_command, relay_input, relay_outcome

LOGIN_SHELLS = [s for s in ("bash", "dash", "zsh", "fish") if shutil.which(s)]
DEADLINE = 30.0
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nrelayed answer"


def _cmdlines_holding(needles: list[bytes]) -> list[str]:
    """``pid: argv0`` of every process whose command line holds one of ``needles``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if any(n in argv for n in needles):
            name = argv.split(b"\0")[0].decode(errors="replace")
            found.append(f"{entry.name}: {name}")
    return found


@dataclass
class Listener:
    """A one-request HTTP listener on 127.0.0.1 that records what reached it."""

    needles: list[bytes]
    answer: bytes | None = ANSWER  # None: close without answering (the CLI exited)
    hold: bool = False  # answer only once ``release`` is set (a CLI still exchanging its code)
    sock: socket.socket = field(default_factory=socket.socket)
    release: threading.Event = field(default_factory=threading.Event)
    received: bytes = b""
    leaks: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(DEADLINE)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(DEADLINE)
            data = b""
            while not _complete(data):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            self.received = data
            # The relay is alive and waiting for this answer: its command lines are visible now.
            self.leaks = _cmdlines_holding(self.needles)
            self.done.set()
            if self.hold:
                self.release.wait(DEADLINE)
            if self.answer is not None:
                conn.sendall(self.answer)
        self.done.set()

    def close(self) -> None:
        self.release.set()
        self.sock.close()
        self.thread.join(DEADLINE)


def _complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole request (its head and Content-Length bytes of body)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(body) >= length


def _path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH directory holding only ``tools`` (and sh, env): other routes are absent."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for tool in ("sh", "env", *tools):
        found = shutil.which(tool, path="/usr/bin:/bin")
        assert found, f"{tool} is needed for this test"
        (bindir / tool).symlink_to(found)
    return str(bindir)


def _program(tmp_path: Path, shebang: str) -> str:
    prog = tmp_path / "hermes"
    prog.write_text(f"{shebang}\nprint('fake')\n")
    prog.chmod(0o755)
    return str(prog)


def _relay(
    shell: str,
    request: bytes,
    listener: Listener,
    program: str,
    path: str,
    answer_deadline: float = relay.ANSWER_DEADLINE,
) -> subprocess.CompletedProcess[bytes]:
    command = relay_command(program, "127.0.0.1", listener.port, answer_deadline=answer_deadline)
    login_shell = shutil.which(shell, path="/usr/bin:/bin")
    assert login_shell is not None
    return subprocess.run(
        [login_shell, "-c", command],
        input=relay_input(request, "127.0.0.1", listener.port),
        env={"HOME": str(Path(program).parent), "PATH": path},
        capture_output=True,
        timeout=DEADLINE,
        check=False,
    )


def _request(port: int, code: str, cookie: str, body: bytes = b"") -> bytes:
    method = "POST" if body else "GET"
    head = [
        f"{method} /spotify/callback?code={code}&state=s%20t&x=[1]&q='\\\\' HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "User-Agent: Mozilla/5.0 (X11) Chrome/120",
        "Accept: text/html",
        f'Cookie: session={cookie}; quoted="a\\"b"',
        "X-Empty:",
    ]
    if body:
        head += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


ROUTES = {
    "python": (("python3",), "#!/usr/bin/env python3"),
    "bash": (("bash", "cat"), "#!/bin/sh"),
    "curl": (("curl",), "#!/bin/sh"),
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("shell", LOGIN_SHELLS)
def test_the_request_reaches_the_listener_and_never_a_command_line(
    shell: str, route: str, tmp_path: Path
) -> None:
    code, cookie = secrets.token_hex(16), secrets.token_hex(16)
    listener = Listener(needles=[code.encode(), cookie.encode()])
    try:
        tools, shebang = ROUTES[route]
        request = _request(listener.port, code, cookie)
        result = _relay(
            shell, request, listener, _program(tmp_path, shebang), _path_with(tmp_path, *tools)
        )
        assert listener.done.wait(DEADLINE), result.stderr
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(b"relayed answer")
    assert listener.leaks == [], "a command line held part of the request while it was relayed"
    if route == "curl":
        got = parse_request(listener.received)
        sent = parse_request(request)
        assert (got.method, got.target) == (sent.method, sent.target)
        host = ("Host", f"127.0.0.1:{listener.port}")
        assert set(sent.fields()) - {host} <= set(got.fields())
    else:
        assert listener.received == request, "the raw request reached the listener unchanged"


@pytest.mark.parametrize("shell", LOGIN_SHELLS)
def test_curl_sends_a_body_that_names_a_file_as_literal_bytes(shell: str, tmp_path: Path) -> None:
    secret_file = tmp_path / "remote-secret"
    secret_file.write_text("a file on the remote that must never be sent\n")
    body = f"@{secret_file}&code=x".encode()
    code = secrets.token_hex(16)
    listener = Listener(needles=[code.encode(), str(secret_file).encode()])
    try:
        request = _request(listener.port, code, "c", body)
        result = _relay(
            shell, request, listener, _program(tmp_path, "#!/bin/sh"), _path_with(tmp_path, "curl")
        )
        assert listener.done.wait(DEADLINE), result.stderr
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    got = parse_request(listener.received)
    assert got.method == "POST"
    assert got.body == body, "the remote listener got the body's literal bytes, not a file"
    assert listener.leaks == []


def test_the_command_line_holds_no_part_of_the_request() -> None:
    code, cookie = secrets.token_hex(16), secrets.token_hex(16)
    request = _request(43827, code, cookie, b"@/etc/passwd")
    command = relay_command("hermes", "127.0.0.1", 43827)
    for part in (code, cookie, "/spotify/callback", "@/etc/passwd", "Mozilla"):
        assert part not in command
    assert code.encode() in relay_input(request, "127.0.0.1", 43827)


def test_a_request_curl_cannot_carry_has_no_curl_route() -> None:
    nul_body = b"POST /cb HTTP/1.1\r\nContent-Length: 3\r\n\r\na\0b"
    assert curl_config(parse_request(nul_body), "127.0.0.1", 1) == ""
    # The listener forwards only requests its parser took; any other gets no curl route.
    assert relay_input(b"GET /cb?c=\0 HTTP/1.1\r\n\r\n", "127.0.0.1", 1).startswith(b"\n")


def test_every_tool_missing_is_reported(tmp_path: Path) -> None:
    listener = Listener(needles=[])
    try:
        result = _relay(
            "dash",
            _request(listener.port, "c", "c"),
            listener,
            _program(tmp_path, "#!/bin/sh"),
            _path_with(tmp_path),
        )
    finally:
        listener.close()
    assert result.returncode == 127
    assert b"the relay needs python, bash or curl" in result.stderr


# A form_post callback (response_mode=form_post) as Chromium posts it, its body beyond the
# 1024 bytes above which curl 7 would ask for "100 Continue" first (an id_token rides along).
FORM_BODY = b"code=%40c%2Bd&state=s+t&id_token=" + b"e" * 2000 + b"&x=@/etc/passwd"


def _form_post(port: int, body: bytes = FORM_BODY) -> bytes:
    head = [
        "POST /callback HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Origin: https://idp.test",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_curl_config_posts_the_raw_body_without_expect() -> None:
    config = curl_config(parse_request(_form_post(4711, b'a=@b&c="d"\\')), "127.0.0.1", 4711)
    assert config.splitlines() == [
        "globoff",
        "path-as-is",
        'request = "POST"',
        'url = "http://127.0.0.1:4711/callback"',
        'header = "Origin: https://idp.test"',
        'header = "Content-Type: application/x-www-form-urlencoded"',
        'header = "Expect:"',
        'data-raw = "a=@b&c=\\"d\\"\\\\"',
    ]


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_form_post_callback_reaches_the_listener_whole(route: str, tmp_path: Path) -> None:
    listener = Listener(needles=[b"%40c%2Bd", b"eeeeeeee"])
    try:
        tools, shebang = ROUTES[route]
        request = _form_post(listener.port)
        result = _relay(
            "sh", request, listener, _program(tmp_path, shebang), _path_with(tmp_path, *tools)
        )
        assert listener.done.wait(DEADLINE), result.stderr
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"HTTP/1.0 200 OK"), "no interim 100 Continue before it"
    assert relay_outcome(result.returncode, result.stdout) == "answered"
    got = parse_request(listener.received)
    assert (got.method, got.target, got.body) == ("POST", "/callback", FORM_BODY)
    assert got.header_values(b"expect") == [], "curl asked for 100 Continue"
    assert listener.leaks == []


def test_the_relays_deadlines_sit_inside_the_listeners() -> None:
    # The answer may come after the CLI's token exchange: the relay waits nearly as long as
    # the listener waits for any exchange, and ends first, so the browser gets its outcome.
    assert 100 <= relay.ANSWER_DEADLINE < relay.SESSION_DEADLINE
    assert relay.SESSION_DEADLINE < callback_listener.RESPONSE_DEADLINE
    assert f" {relay.ANSWER_DEADLINE:g} " in relay_command("hermes", "127.0.0.1", 1)


@pytest.mark.parametrize("route", list(ROUTES))
def test_each_route_waits_for_a_late_answer(route: str, tmp_path: Path) -> None:
    listener = Listener(needles=[], hold=True)
    tools, shebang = ROUTES[route]
    command = relay_command(_program(tmp_path, shebang), "127.0.0.1", listener.port)
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"HOME": str(tmp_path), "PATH": _path_with(tmp_path, *tools)},
    )
    outputs: list[tuple[bytes, bytes]] = []
    stdin = relay_input(_form_post(listener.port), "127.0.0.1", listener.port)
    talk = threading.Thread(target=lambda: outputs.append(proc.communicate(stdin, DEADLINE)))
    talk.start()
    try:
        assert listener.done.wait(DEADLINE), "the request never arrived"
        assert proc.poll() is None, "the relay gave up before the CLI answered"
        listener.release.set()  # the CLI has exchanged its code and answers now
        talk.join(DEADLINE)
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
        talk.join(DEADLINE)
    out, err = outputs[0]
    assert proc.returncode == 0, err
    assert out.endswith(b"relayed answer")


@pytest.mark.parametrize("route", list(ROUTES))
def test_each_route_ends_at_its_answer_deadline(route: str, tmp_path: Path) -> None:
    listener = Listener(needles=[], hold=True)  # never released: a CLI that never answers
    try:
        tools, shebang = ROUTES[route]
        path = _path_with(tmp_path, *tools, *(("timeout",) if route == "bash" else ()))
        result = _relay(
            "sh",
            _form_post(listener.port),
            listener,
            _program(tmp_path, shebang),
            path,
            answer_deadline=1,
        )
    finally:
        listener.close()
    assert relay_outcome(result.returncode, result.stdout) == "late", result.stderr


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_listener_that_closes_without_answering_is_told_apart(route: str, tmp_path: Path) -> None:
    listener = Listener(needles=[], answer=None)  # the CLI took the code and exited
    try:
        tools, shebang = ROUTES[route]
        result = _relay(
            "sh",
            _form_post(listener.port),
            listener,
            _program(tmp_path, shebang),
            _path_with(tmp_path, *tools),
        )
        assert listener.done.wait(DEADLINE)
    finally:
        listener.close()
    assert relay_outcome(result.returncode, result.stdout) == "no_answer", result.stderr
