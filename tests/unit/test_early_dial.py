"""The first hop's TCP connection, opened on a thread while tunnelauth imports."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fresh_python import THREAD_IMPORTS, run_json

from tunnelauth.settings import SSHTarget
from tunnelauth.transports import early_dial
from tunnelauth.transports.headstart import HeadStart

DEADLINE = 30.0
CLOSED = 1  # 127.0.0.1:1: nothing listens; named only where no connection may go


@pytest.fixture
def dials() -> Iterator[list[early_dial.Dial]]:
    """The dials a test starts; whatever they hold at its end is closed."""
    started: list[early_dial.Dial] = []
    yield started
    for dial in started:
        dial.drop()


def _start(dials: list[early_dial.Dial], target: SSHTarget) -> early_dial.Dial:
    dial = early_dial.start(target)
    assert dial is not None, "no dial without an ssh client"
    dials.append(dial)
    return dial


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(DEADLINE)
        yield server


def _port(server: socket.socket) -> int:
    port: int = server.getsockname()[1]
    return port


def _config(tmp_path: Path, direct: int, jump: int) -> Path:
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host direct\n  HostName 127.0.0.1\n  Port {direct}\n"
        f"Host jumpy\n  HostName 127.0.0.1\n  Port {jump}\n"
        f"Host viajump\n  HostName 127.0.0.1\n  Port {CLOSED}\n  ProxyJump jumpy\n"
        f"Host proxied\n  HostName 127.0.0.1\n  Port {direct}\n  ProxyCommand false\n"
        f"Host deep\n  HostName 127.0.0.1\n  Port {CLOSED}\n  ProxyJump viajump\n"
    )
    return config


@pytest.fixture
def ssh() -> str:
    found = shutil.which("ssh")
    assert found, "the OpenSSH client is needed (the test command installs it)"
    return found


def test_the_first_hop_is_where_ssh_would_connect(ssh: str, tmp_path: Path) -> None:
    config = _config(tmp_path, 2201, 2202)

    def hop(host: str, **kwargs: object) -> tuple[str, int] | None:
        return early_dial.first_hop(ssh, SSHTarget(host=host, ssh_config=config, **kwargs))  # type: ignore[arg-type]

    assert hop("direct") == ("127.0.0.1", 2201)
    assert hop("viajump") == ("127.0.0.1", 2202)  # the config's ProxyJump
    assert hop("direct", jump=("jumpy",)) == ("127.0.0.1", 2202)  # -J
    assert hop("direct", jump=("someone@127.0.0.1:2203",)) == ("127.0.0.1", 2203)
    assert hop("direct", port=2204) == ("127.0.0.1", 2204)  # -p
    assert hop("proxied") is None  # a proxy command: left to the transport
    assert hop("deep") is None  # the first hop needs a jump itself
    assert hop("direct", options=("ProxyCommand=false",)) is None
    # Options that shape the socket are the transport's to apply.
    assert hop("direct", options=("BindAddress=127.0.0.1",)) is None
    assert hop("direct", options=("AddressFamily=inet",)) is None


def test_the_transport_gets_the_connected_socket(
    ssh: str, tmp_path: Path, listener: socket.socket, dials: list[early_dial.Dial]
) -> None:
    config = _config(tmp_path, _port(listener), CLOSED)
    head = HeadStart(dial=_start(dials, SSHTarget(host="direct", ssh_config=config)))
    accepted, _ = listener.accept()  # connected before anyone asked for it
    with accepted:
        sock = head.take_socket("127.0.0.1", _port(listener), DEADLINE)
        assert sock is not None
        with sock:
            assert sock.getpeername() == listener.getsockname()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            sock.sendall(b"SSH-2.0-x\r\n")
            assert accepted.recv(64) == b"SSH-2.0-x\r\n"
        assert head.take_socket("127.0.0.1", _port(listener), DEADLINE) is None  # once only


def test_a_socket_to_another_address_is_closed_unused(
    ssh: str, tmp_path: Path, listener: socket.socket, dials: list[early_dial.Dial]
) -> None:
    config = _config(tmp_path, _port(listener), CLOSED)
    dial = _start(dials, SSHTarget(host="direct", ssh_config=config))
    accepted, _ = listener.accept()
    with accepted:
        accepted.settimeout(DEADLINE)
        assert dial.claim("127.0.0.1", _port(listener) + 1, DEADLINE) is None
        assert accepted.recv(64) == b""  # closed, nothing sent


def test_an_unclaimed_socket_is_closed(
    ssh: str, tmp_path: Path, listener: socket.socket, dials: list[early_dial.Dial]
) -> None:
    config = _config(tmp_path, _port(listener), CLOSED)
    dial = _start(dials, SSHTarget(host="direct", ssh_config=config))
    accepted, _ = listener.accept()
    with accepted:
        accepted.settimeout(DEADLINE)
        dial.drop()
        assert accepted.recv(64) == b""
    assert dial.claim("127.0.0.1", _port(listener), DEADLINE) is None


def test_a_refused_connection_leaves_the_transport_to_connect(
    ssh: str, tmp_path: Path, dials: list[early_dial.Dial]
) -> None:
    config = _config(tmp_path, CLOSED, CLOSED)
    dial = _start(dials, SSHTarget(host="direct", ssh_config=config))
    assert dial.claim("127.0.0.1", CLOSED, DEADLINE) is None


def test_without_an_ssh_client_nothing_is_dialled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ssh there
    assert early_dial.start(SSHTarget(host="direct", ssh_config=_config(tmp_path, 1, 1))) is None


def test_the_thread_imports_nothing(ssh: str, tmp_path: Path, listener: socket.socket) -> None:
    """Two threads importing at once can deadlock: the dial must find everything loaded."""
    config = _config(tmp_path, CLOSED, _port(listener))
    seen = run_json(
        THREAD_IMPORTS + "from tunnelauth.settings import SSHTarget\n"
        "from tunnelauth.transports import early_dial\n"
        f"dial = early_dial.start(SSHTarget(host='viajump', ssh_config={str(config)!r}))\n"
        "assert dial.done.wait(60) and dial.sock is not None\n"
        "print(json.dumps(seen))\n"
    )
    assert seen == []


def test_a_dial_still_connecting_is_a_timeout_not_a_second_attempt(
    ssh: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dials: list[early_dial.Dial]
) -> None:
    """A host that drops packets: the wait is not spent twice; the late socket is closed."""
    dialling, release = threading.Event(), threading.Event()
    ours, theirs = socket.socketpair()
    real = socket.create_connection

    def stalled(address: tuple[str, int], timeout: float) -> socket.socket:
        if address != ("127.0.0.1", 2201):
            return real(address, timeout)
        dialling.set()
        release.wait(DEADLINE)
        return ours

    monkeypatch.setattr(socket, "create_connection", stalled)
    monkeypatch.setattr(socket.socket, "setsockopt", lambda *args: None)  # a socketpair is no TCP
    dial = _start(dials, SSHTarget(host="direct", ssh_config=_config(tmp_path, 2201, CLOSED)))
    assert dialling.wait(DEADLINE)
    with pytest.raises(TimeoutError, match=r"127\.0\.0\.1:2201"):
        HeadStart(dial=dial).take_socket("127.0.0.1", 2201, 0.2)
    release.set()
    assert dial.done.wait(DEADLINE)
    theirs.settimeout(DEADLINE)
    assert theirs.recv(8) == b""  # the connection that came too late was closed
    theirs.close()
