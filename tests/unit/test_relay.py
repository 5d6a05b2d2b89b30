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

from tunnelauth.relay import curl_config, parse_request, relay_command, relay_input

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
    sock: socket.socket = field(default_factory=socket.socket)
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
            conn.sendall(ANSWER)
        self.done.set()

    def close(self) -> None:
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
    shell: str, request: bytes, listener: Listener, program: str, path: str
) -> subprocess.CompletedProcess[bytes]:
    command = relay_command(program, "127.0.0.1", listener.port)
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
        assert set(sent.headers) - {("Host", f"127.0.0.1:{listener.port}")} <= set(got.headers)
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
    assert curl_config(parse_request(b"POST /cb HTTP/1.1\r\n\r\na\0b"), "127.0.0.1", 1) == ""
    assert curl_config(parse_request(b"GET /cb?c=\0 HTTP/1.1\r\n\r\n"), "127.0.0.1", 1) == ""


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
